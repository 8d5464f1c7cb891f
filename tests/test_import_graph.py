"""The import graph of osep_nas, search_spaces and strategies, read statically (ast).

No import cycle (imports deferred into functions count too; only ``if TYPE_CHECKING:``
blocks are skipped), arrows one way (osep_nas <- search_spaces <- strategies), no module
over 450 lines, and no library module that only the tests reach. ``pytest -s`` prints the graph.
"""
from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("osep_nas", "search_spaces", "strategies")
MAX_LINES = 450
LAYER = {"osep_nas": 0, "search_spaces": 1, "strategies": 2}


def _modules() -> Dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _owner(name: str, mods: Dict[str, Path]) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def _type_checking_nodes(tree: ast.AST) -> Set[int]:
    skipped: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skipped.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return skipped


def import_graph() -> Dict[str, Set[str]]:
    """module -> the modules of the three packages it imports (anywhere in its body)."""
    mods = _modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        is_package = path.name == "__init__.py"
        targets: Set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(_owner(a.name, mods) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for a in node.names:
                    full = f"{module}.{a.name}"
                    targets.add(full if full in mods else _owner(module, mods))
        targets.discard("")
        targets.discard(name)
        graph[name] = targets
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_import_graph_has_no_cycle():
    graph = import_graph()
    for module in sorted(graph):
        print(f"{module} -> {', '.join(sorted(graph[module])) or '-'}")
    assert _cycles(graph) == []


def test_modules_have_at_most_450_lines():
    too_long = [f"{name}: {n} lines" for name, path in _modules().items()
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert too_long == []


def test_imports_point_one_way():
    """osep_nas imports neither search_spaces nor strategies; search_spaces not strategies
    (strategies reach osep_nas only through entry points: commands, study stages)."""
    upward = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
              if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert upward == []


def _outside_roots(mods: Dict[str, Path]) -> Set[str]:
    """Modules users reach without the tests: the packages, setup.cfg's entry points, and the
    modules named in examples/, README.md, docs/ and the library's own lazy-import tables."""
    roots = set(PACKAGES)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    for group in cfg["options.entry_points"]:
        for line in cfg["options.entry_points"][group].splitlines():
            if "=" in line:
                roots.add(line.partition("=")[2].strip().partition(":")[0])
    roots.update(m for m in mods if m.endswith(".__main__"))  # python -m PACKAGE
    texts = {p: "" for p in (ROOT / "examples").rglob("*") if p.is_file()}
    texts.update({ROOT / "README.md": "", **{p: "" for p in sorted((ROOT / "docs").glob("*.md"))}})
    texts.update({path: name for name, path in mods.items()})  # a module naming itself does not count
    pattern = re.compile(r"\b((?:osep_nas|search_spaces|strategies)(?:\.\w+)+)")
    for path, itself in texts.items():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        roots.update(o for o in (_owner(m, mods) for m in pattern.findall(text)) if o != itself)
    return {r for r in roots if r in mods}


def test_no_library_module_is_reached_only_from_tests():
    mods, graph = _modules(), import_graph()
    seen: Set[str] = set()
    todo = list(_outside_roots(mods))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
            if m.rpartition(".")[0] in mods:
                todo.append(m.rpartition(".")[0])  # importing a module runs its package
    assert sorted(set(mods) - seen) == []
