"""Extension points: entry-point groups through which search_spaces and strategies plug into
osep_nas (``osep_nas.commands``: subcommands; ``osep_nas.study_stages``: study stages such as
the search before a retraining study), so that imports only point one way."""
from __future__ import annotations

import configparser
import importlib
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["plugin_table", "load_plugin"]


def plugin_table(group: str) -> Dict[str, str]:
    """name -> ``module`` or ``module:attr`` of the entry points of ``group``: the installed
    metadata, completed from the setup.cfg beside the packages (a checkout never installed, or
    plugins added since the install)."""
    try:
        table = {ep.name: ep.value for ep in metadata.entry_points(group=group)}
    except Exception:  # metadata missing or broken: the source tree's setup.cfg alone
        table = {}
    for name, value in _source_tree_table(group).items():
        table.setdefault(name, value)
    return table


def _source_tree_table(group: str) -> Dict[str, str]:
    setup_cfg = Path(__file__).resolve().parents[1] / "setup.cfg"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(setup_cfg, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}
    table = {}
    for line in parser.get("options.entry_points", group, fallback="").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip():
            table[name.strip()] = value.strip()
    return table


def load_plugin(value: str) -> Optional[Any]:
    """The module (``module``) or object (``module:attr``) an entry point names; None when its
    package is not installed (e.g. osep_nas alone, without strategies)."""
    module_path, _, attr = value.partition(":")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        if exc.name and module_path.startswith(exc.name):
            return None
        raise
    return getattr(module, attr) if attr else module
