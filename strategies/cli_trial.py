"""``osep-nas trial`` (also ``python -m strategies.cli_trial``): the nnictl trial command.

One trial of an nnictl experiment driven by :class:`~strategies.tuner.ParetoTuner` (or any
tuner over the ``osep-nas space`` search space): ``nni.get_next_parameter()`` ->
:func:`search_spaces.hpo.params_to_genotype` -> the proxy network of ``osep-nas search``
(NetworkCIFAR at the proxy width/depth) trained by :func:`strategies.search.proxy_train` on
the proxy data (embedded digits by default) -> ``nni.report_final_result({"default": accuracy,
"params": n, "flops": f, "train_loss": l})``, #Params and FLOPs from the project's counter.

The proxy comes from the ``proxy`` section of a search config (``--config``, ``--set``; the
same schema and defaults as ``osep-nas search``); ``search.seed`` and NNI's trial sequence
number seed the trial. Outside nnictl, ``--params`` (JSON text or file) gives the parameters,
so a trial can be replayed by hand; the result is also printed as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

HELP = "run one nnictl trial: train the proxy network of the tuner's genotype, report accuracy/#Params/FLOPs"
DESCRIPTION = (
    "The trial command of an nnictl experiment over the osep cell space (examples/search.yml): "
    "reads the parameters with nni.get_next_parameter(), builds the genotype's proxy network (the one "
    "osep-nas search trains: NetworkCIFAR at the proxy width and depth), trains it briefly on the proxy "
    "data (embedded digits by default) and reports {'default': accuracy, 'params': n, 'flops': f, "
    "'train_loss': l} with nni.report_final_result. The proxy is the 'proxy' section of a search config "
    "(--config / --set, as for osep-nas search). Outside nnictl, pass --params to replay a trial."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="search config YAML whose 'proxy' section defines the trial "
                                                    "(default: the built-in defaults of osep-nas search)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set proxy.steps=100 (repeatable)")
    p.add_argument("--params", metavar="JSON|FILE",
                   help="parameters as JSON text or a JSON file, instead of nni.get_next_parameter() "
                        "(for running a trial outside nnictl)")


def _under_nni() -> bool:
    from nni.runtime.env_vars import trial_env_vars

    return trial_env_vars.NNI_PLATFORM is not None


def _read_params(text: str) -> Dict[str, Any]:
    path = Path(text)
    if not text.lstrip().startswith("{") and path.is_file():
        text = path.read_text(encoding="utf-8")
    elif not text.lstrip().startswith("{"):
        raise FileNotFoundError(f"--params: neither JSON text nor an existing file: {text}")
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--params: malformed JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError("--params: must be a JSON object of nnictl parameters")
    return params


def run_trial(params: Mapping[str, Any], config: Any = None, overrides: Optional[Sequence[str]] = None,
              index: int = 0) -> Dict[str, Any]:
    """Train the proxy network of the genotype of ``params`` and return the metric dict
    (``default`` = top-1 accuracy in percent, ``params``, ``flops``, ``train_loss``).
    ``index`` (NNI's trial sequence number) and ``search.seed`` seed the trial."""
    from search_spaces.hpo import params_to_genotype

    from .search import TrialContext, prepare_proxy, torch_env, load_search_config, proxy_train, trial_seed

    genotype = params_to_genotype(params)
    cfg = load_search_config(config, overrides)
    setup = prepare_proxy(cfg)
    cheap = setup.space.cheap_metrics(genotype)
    ctx = TrialContext(index, trial_seed(cfg.search.seed, index), setup.space, cfg.proxy, setup.train_loader,
                       setup.test_loader, setup.device)
    with torch_env(cfg.proxy.threads, setup.device):
        result = proxy_train(genotype, ctx)
    return {"default": result["accuracy"], "params": cheap["params"], "flops": cheap["flops"],
            "train_loss": result["train_loss"]}


def run(args: argparse.Namespace) -> int:
    import nni

    if args.params is not None:
        params = _read_params(args.params)
    elif _under_nni():
        params = nni.get_next_parameter()
    else:
        raise ValueError("not running under nnictl: pass --params JSON|FILE (parameters of the osep-nas space)")
    if not params:
        raise ValueError("the tuner sent no parameters")
    index = nni.get_sequence_id() if _under_nni() else 0
    metrics = run_trial(params, args.config, args.overrides, index=int(index or 0))
    if _under_nni():
        nni.report_final_result(metrics)
    print(json.dumps(metrics), flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m strategies.cli_trial ...``: same as ``osep-nas trial ...``."""
    from osep_nas.cli import main as cli_main

    return cli_main(["trial", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
