"""The search stage of a study (``osep-nas study`` with a ``search:`` section): run or resume the
search in ``OUT/search``, then name the cells to retrain: up to ``front`` members of its Pareto
front spread along #Params, and ``random`` uniformly random cells of the same space. Plugged
into osep_nas through the ``osep_nas.study_stages`` entry point, so imports point one way."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from .search import run_search
from .search_config import SearchConfig, load_search_config

__all__ = ["search_cells", "spread"]


def search_cells(section: Any, base_dir: Path, out_dir: Path, data_sets: Sequence[str], log: Callable = print,
                 check_only: bool = False, read_only: bool = False) -> List[Dict[str, str]]:
    """``[{"name", "genotype", "group"}]`` of the cells to retrain (``section``: the study's
    ``search`` section; ``data_sets``: the study's ``--data`` as overrides, applied before
    ``section.set``). ``check_only``: validate the search config and return []. ``read_only``:
    take the front of the finished search's ``pareto.yaml`` and run or write nothing."""
    path = (Path(base_dir) / section.config).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"search.config: search config not found: {path}")
    try:
        cfg = load_search_config(path, list(data_sets) + list(section.set))
    except ValueError as exc:  # the message names the file or the --set key
        raise ValueError(f"study search: {exc}") from None
    if check_only:
        return []
    if read_only:
        members = _finished_front(Path(out_dir))
    else:
        resume = (Path(out_dir) / "state.json").is_file()
        log(f"search: {'resuming' if resume else 'running'} {cfg.search.strategy}, {cfg.search.trials} trials "
            f"on {cfg.data.dataset} -> {out_dir}")
        members = run_search(cfg, out_dir, resume=resume, print_report=False).front
    front = spread(members, section.front)
    cells = [{"name": f"searched #{r['trial']}", "genotype": r["genotype"], "group": "searched"} for r in front]
    seen = {r["genotype"] for r in members}
    for k, g in enumerate(_random_cells(cfg, section.random, section.random_seed, seen), 1):
        cells.append({"name": f"random {k}", "genotype": g, "group": "random"})
    log(f"search: {len(members)} on the front, retraining {len(front)} of them and {section.random} random "
        f"cells")
    return cells


def _finished_front(out_dir: Path) -> List[Dict[str, Any]]:
    """The front of a finished search as ``run_search`` returns it (trial, params, genotype),
    read from its ``pareto.yaml``."""
    import yaml

    from osep_nas.config import one_line
    from osep_nas.io import read_user_text

    path = out_dir / "pareto.yaml"
    try:
        doc = yaml.safe_load(read_user_text(path, what="search front"))
        return [{"trial": int(e["id"]), "params": int(e["params"]), "genotype": str(e["genotype"])}
                for e in doc["front"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not the front of a finished search ({one_line(exc)})") from None


def spread(front: List[Dict[str, Any]], k: int) -> List[Dict[str, Any]]:
    """``k`` members of a front sorted by #Params, evenly spaced from the smallest to the largest
    (all of them when the front has at most ``k``)."""
    members = sorted(front, key=lambda r: (r["params"], r["trial"]))
    if len(members) <= k:
        return members
    if k <= 1:
        return members[:k]
    return [members[round(i * (len(members) - 1) / (k - 1))] for i in range(k)]


def _random_cells(cfg: SearchConfig, n: int, seed: int, exclude: set) -> List[str]:
    """``n`` distinct uniform samples of the search's space, within ``search.max_params``."""
    from search_spaces.genotype_space import GenotypeSpace
    from search_spaces.target import resolve_target

    sp = cfg.space
    space = GenotypeSpace(sp.op_candidates, sp.num_nodes, sp.exclude_none, sp.distinct_inputs,
                          target=resolve_target(cfg.target))
    rng, cells = random.Random(seed), []
    for _ in range(1000 * max(n, 1)):
        if len(cells) >= n:
            break
        g = space.random_sample(rng)
        text = str(g)
        if text in exclude or text in cells:
            continue
        if cfg.search.max_params is not None and space.cheap_metrics(g)["params"] > cfg.search.max_params:
            continue
        cells.append(text)
    if len(cells) < n:
        raise ValueError(f"search.random: found only {len(cells)} distinct random cells within search.max_params")
    return cells
