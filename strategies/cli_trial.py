"""``osep-nas trial`` (also ``python -m strategies.cli_trial``): the nnictl trial command.

One trial of an nnictl experiment: ``nni.get_next_parameter()`` -> a genotype -> the trial
protocol of ``osep-nas search`` (:func:`strategies.proxy.proxy_train`, validation split only)
-> ``nni.report_final_result({"default": accuracy, "params": n, "flops": f, ...})``, #Params
and FLOPs counted on the target network.  ``--params`` replays a trial outside nnictl.
Details: docs/strategies.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

HELP = ("run one nnictl trial: train the proxy network of the tuner's genotype, report validation accuracy and "
        "the target network's #Params/FLOPs")
DESCRIPTION = (
    "The trial command of an nnictl experiment over the osep cell space (examples/search.yml): "
    "reads the parameters with nni.get_next_parameter(), trains the genotype's proxy network (the one "
    "osep-nas search trains) on the training part of the proxy data (embedded digits by default), scores it "
    "on the validation part held out of the training split (the test split is never read) and reports "
    "{'default': validation accuracy, 'params': n, 'flops': f, 'proxy_params': p, 'train_loss': l} with "
    "nni.report_final_result; params and flops are counted on the target network (default the 36-channel "
    "20-cell CIFAR-10 network). The proxy and target are the 'proxy' and 'target' sections of a search config "
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
    if not text.lstrip().startswith("{") and path.exists():
        from osep_nas.io import read_user_text

        text = read_user_text(path, 1 << 20, "--params file")
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
    (``default`` = validation top-1 in percent, ``params``/``flops`` of the target network,
    ``proxy_params``, ``train_loss``). ``index`` (NNI's trial sequence number) and
    ``search.seed`` seed the trial."""
    from search_spaces.hpo import params_to_genotype

    from .proxy import TrialContext, prepare_proxy, proxy_train, torch_env, trial_seed
    from .search_config import load_search_config

    genotype = params_to_genotype(params)
    cfg = load_search_config(config, overrides)
    setup = prepare_proxy(cfg)
    cheap = setup.space.cheap_metrics(genotype)
    ctx = TrialContext(index, trial_seed(cfg.search.seed, index), setup.space, cfg, setup.train_loader,
                       setup.val_loader, setup.device)
    with torch_env(cfg.proxy.threads, setup.device):
        result = proxy_train(genotype, ctx)
    return {"default": result["accuracy"], "params": cheap["params"], "flops": cheap["flops"],
            "proxy_params": cheap["proxy_params"], "train_loss": result["train_loss"]}


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
