"""Issue 9: security review as tests (see docs/security.md).

* a static scan of the three packages for code-running loaders and shells;
* a checkpoint carrying a pickled ``os.system`` call is refused by our loader, by
  ``osep-nas train --resume`` and by ``osep-nas eval --checkpoint``, and never runs;
* no network access without ``--download`` (``data.download``);
* output paths never escape ``--out``.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import socket
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest
import torch

from osep_nas.checkpoint import load_checkpoint, save_checkpoint
from osep_nas.cli import main

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("osep_nas", "search_spaces", "strategies")


# ----------------------------------------------------------------------------- static scan

SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader"}
#: (file, class) pairs allowed by name, each checked for what makes it safe
ALLOWED_SAFE_LOADER_SUBCLASS = {("osep_nas/config.py", "_StrictSafeLoader")}
ALLOWED_RESTRICTED_UNPICKLER = {("osep_nas/data/unpickle.py", "_NumpyOnlyUnpickler")}
ALWAYS_BAD_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads", "_pickle.load",
    "_pickle.loads", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "marshal.load",
    "marshal.loads", "shelve.open", "joblib.load", "nni.load", "torch.jit.load", "jsonpickle.decode",
    "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
    "os.system", "os.popen", "os.execl", "os.execle", "os.execlp", "os.execv", "os.execve", "os.execvp",
    "os.spawnl", "os.spawnv", "os.spawnvp", "commands.getoutput", "pty.spawn",
}
BAD_FROM_IMPORTS = {
    "pickle": {"load", "loads", "Unpickler"}, "yaml": {"load", "load_all", "unsafe_load", "full_load", "Loader",
                                                       "UnsafeLoader", "FullLoader"},
    "os": {"system", "popen"}, "marshal": {"load", "loads"}, "dill": {"load", "loads"},
}
SUBPROCESS_CALLS = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
                    "subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan_source(text: str, rel: str) -> List[str]:
    """Findings ``file:line: what`` for one module's source."""
    tree = ast.parse(text, filename=rel)
    aliases: Dict[str, str] = {}  # import x as y -> y: x
    classes: Dict[str, ast.ClassDef] = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    found: List[str] = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{rel}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if a.name in BAD_FROM_IMPORTS.get(node.module, ()):
                    bad(node, f"from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [dotted(b) for b in node.bases]
            if any(b in ("pickle.Unpickler", "_pickle.Unpickler") for b in bases):
                defines = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if (rel, node.name) not in ALLOWED_RESTRICTED_UNPICKLER or "find_class" not in defines:
                    bad(node, f"unpickler class {node.name} (only the restricted one in data/unpickle.py is allowed)")
            if any(b.startswith("yaml.") and b not in SAFE_YAML_LOADERS and b.endswith("Loader") for b in bases):
                bad(node, f"YAML loader {node.name} derives from {bases} (not SafeLoader)")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        head, _, rest = name.partition(".")
        if head in aliases:
            name = aliases[head] + ("." + rest if rest else "")
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            bad(node, f"{name}()")
        elif name in ALWAYS_BAD_CALLS:
            bad(node, f"{name}()")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = dotted(_kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else ast.Constant(None)))
            if loader in SAFE_YAML_LOADERS:
                continue
            cls = classes.get(loader)
            ok = ((rel, loader) in ALLOWED_SAFE_LOADER_SUBCLASS and cls is not None
                  and any(dotted(b) in SAFE_YAML_LOADERS for b in cls.bases))
            if not ok:
                bad(node, f"{name}() with Loader={loader or 'none'} (use a SafeLoader)")
        elif name == "torch.load":
            if not _is_true(_kw(node, "weights_only")):
                bad(node, "torch.load() without weights_only=True")
        elif name in ("numpy.load", "np.load"):
            if _kw(node, "allow_pickle") is not None and not (
                    isinstance(_kw(node, "allow_pickle"), ast.Constant) and _kw(node, "allow_pickle").value is False):
                bad(node, f"{name}(allow_pickle=...)")
        elif name in SUBPROCESS_CALLS:
            shell = _kw(node, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                bad(node, f"{name}(shell=...)")
            if name in ("subprocess.getoutput", "subprocess.getstatusoutput"):
                bad(node, f"{name}() runs a shell")
    return found


def package_files() -> Iterator[Tuple[Path, str]]:
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            yield path, str(path.relative_to(REPO))


def test_security_scan_finds_no_code_running_loader_or_shell():
    files = list(package_files())
    assert len(files) > 20  # the scan really looks at the packages
    findings = [f for path, rel in files for f in scan_source(path.read_text(encoding="utf-8"), rel)]
    assert not findings, "unsafe calls:\n" + "\n".join(findings)


def test_security_scan_allows_exactly_the_named_safe_loaders():
    """The two allowed-by-name loaders exist and are what the scan assumes they are."""
    config = (REPO / "osep_nas/config.py").read_text()
    assert "class _StrictSafeLoader(yaml.SafeLoader)" in config
    assert "yaml.load(text, Loader=_StrictSafeLoader)" in config
    data = (REPO / "osep_nas/data/unpickle.py").read_text()
    assert "class _NumpyOnlyUnpickler(pickle.Unpickler)" in data and "def find_class" in data


@pytest.mark.parametrize("snippet", [
    "eval(text)", "exec(code)", "import builtins\nbuiltins.eval('1')",
    "import yaml\nyaml.load(s)", "import yaml\nyaml.load(s, Loader=yaml.Loader)", "import yaml\nyaml.unsafe_load(s)",
    "import yaml\nyaml.load(s, yaml.FullLoader)", "from yaml import load",
    "import pickle\npickle.load(f)", "import pickle as p\np.loads(b)", "import pickle\npickle.Unpickler(f).load()",
    "import pickle\nclass U(pickle.Unpickler):\n    pass",
    "import torch\ntorch.load(f)", "import torch\ntorch.load(f, weights_only=False)", "import torch as t\nt.load(f)",
    "import numpy as np\nnp.load(f, allow_pickle=True)",
    "import os\nos.system('ls')", "import os\nos.popen('ls')", "from os import system",
    "import subprocess\nsubprocess.run('ls', shell=True)", "import subprocess as sp\nsp.Popen(c, shell=flag)",
    "import nni\nnni.load(s)",
], ids=lambda s: s.splitlines()[-1][:40])
def test_security_scan_catches(snippet):
    assert scan_source(snippet, "snippet.py"), snippet


@pytest.mark.parametrize("snippet", [
    "model.eval()", "import yaml\nyaml.safe_load(s)", "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
    "import torch\ntorch.load(f, map_location='cpu', weights_only=True)", "import subprocess\nsubprocess.run(['ls'])",
    "import numpy as np\nnp.load(f)", "evaluate(x)",
], ids=lambda s: s.splitlines()[-1][:40])
def test_security_scan_passes(snippet):
    assert not scan_source(snippet, "snippet.py"), snippet


# ----------------------------------------------------------------------------- pickled code

class _Payload:
    """Unpickles to ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile_checkpoint(tmp_path) -> Tuple[Path, Path]:
    """OUT/last.pt in torch's zip format whose 'model' unpickles to os.system(...); the
    payload is live: an unsafe load runs it (checked here, then the marker is removed)."""
    marker = tmp_path / "PWNED"
    out = tmp_path / "run"
    out.mkdir()
    path = out / "last.pt"
    torch.save({"model": _Payload(marker), "optimizer": {}, "scheduler": {}, "rng": {}, "epoch": 1,
                "config": {"data": {"dataset": "digits"}}}, path)
    torch.load(path, weights_only=False)  # the unsafe way runs it...
    assert marker.exists()
    marker.unlink()  # ...ours must not
    return path, marker


def test_security_pickled_os_system_is_refused_by_our_loader(hostile_checkpoint):
    path, marker = hostile_checkpoint
    with pytest.raises(ValueError, match=r"refused.*system"):
        load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["train_resume", "eval_checkpoint"])
def test_security_pickled_os_system_is_refused_by_the_cli(hostile_checkpoint, command, capsys):
    path, marker = hostile_checkpoint
    if command == "train_resume":
        argv = ["train", "--model", "resnet20", "--epochs", "2", "--resume", "--out", str(path.parent)]
    else:
        argv = ["eval", "--checkpoint", str(path)]
    before = path.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "system" in err[0], err
    assert not marker.exists(), "the pickled command ran"
    assert path.read_bytes() == before


def test_security_pickled_os_system_in_a_cifar_batch_is_refused(tmp_path):
    from osep_nas.data import read_cifar_batch

    marker = tmp_path / "PWNED"
    batch = tmp_path / "data_batch_1"
    with open(batch, "wb") as fh:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(ValueError, match="refused"):
        read_cifar_batch(batch)
    assert not marker.exists()


# ----------------------------------------------------------------------------- network

@pytest.fixture
def no_network(monkeypatch) -> List[object]:
    """Every connect / DNS lookup raises and is recorded."""
    attempts: List[object] = []

    def refuse(what):
        attempts.append(what)
        raise OSError(f"network access refused by the test: {what!r}")

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: refuse(address))
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(host))
    return attempts


def _fake_cifar10(folder: Path, n: int = 20) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": [i % 10 for i in range(n)]}, fh, protocol=2)
    return folder


TINY = ["--model", "resnet20", "--set", "model.width_mult=0.25", "--set", "data.image_size=8", "--set",
        "data.padding=1", "--set", "data.batch_size=16", "--epochs", "1", "--set", "max_steps_per_epoch=1",
        "--set", "training.tensorboard=false", "--device", "cpu", "--quiet"]


def test_security_network_guard_works(no_network):
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    with pytest.raises(OSError):
        socket.socket().connect(("192.0.2.1", 80))
    assert len(no_network) == 2


def test_security_no_network_training_on_digits(no_network, tmp_path, one_thread, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    assert no_network == []


def test_security_no_network_reading_a_local_cifar_folder(no_network, tmp_path, one_thread, capsys):
    from osep_nas.config import load_config
    from osep_nas.data import build_loaders

    root = _fake_cifar10(tmp_path / "cifar-10-batches-py")
    train_loader, _, info = build_loaders(load_config({"data": {"dataset": "cifar10", "root": str(tmp_path)}}))
    assert info["train_size"] == 100 and len(next(iter(train_loader))[0]) > 0
    assert main(["train", *TINY, "--dataset", "cifar10", "--data", str(root), "--out", str(tmp_path / "run")]) == 0, \
        capsys.readouterr().err
    # a folder without the batches and no --download: an error, still no network
    assert main(["train", *TINY, "--dataset", "cifar10", "--data", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "run2")]) == 2
    assert no_network == []


def test_security_checkpoint_config_cannot_turn_on_download(no_network, tmp_path, capsys):
    """``eval --checkpoint`` rebuilds the data from the config stored IN the checkpoint: a
    downloaded checkpoint must not be able to make us fetch from the network or create
    folders elsewhere (data.download/data.root are the user's decision, not the file's)."""
    target = tmp_path / "elsewhere" / "cifar"
    ckpt = tmp_path / "ckpt" / "last.pt"
    ckpt.parent.mkdir()
    save_checkpoint(ckpt, {"model": {}, "epoch": 1, "config": {
        "model": {"name": "resnet20"}, "data": {"dataset": "cifar10", "root": str(target), "download": True}}})
    try:
        rc = main(["eval", "--checkpoint", str(ckpt)])
    except Exception as exc:  # noqa: BLE001 - reported below, after the network check
        rc = f"{type(exc).__name__}: {exc}"
    err = capsys.readouterr().err
    assert no_network == [], "a checkpoint's stored config made eval go to the network"
    assert not (tmp_path / "elsewhere").exists(), "a checkpoint's stored config made eval create a folder"
    assert rc == 2 and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------- output paths

def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


HOSTILE_NAMES = ["..", "../../escaped", "/tmp/absolute", "a/../../b", "~/home", ".", "..\\..\\win"]


def test_security_study_run_names_cannot_escape_out(tmp_path, monkeypatch, capsys):
    """Run names become folder names: none may resolve outside OUT (the trainer is faked,
    recording where each run would write)."""
    import yaml

    import osep_nas.train as T
    from osep_nas.study import run_study

    written: List[Path] = []

    def fake_train(cfg, progress=None):
        out = Path(cfg.training.out)
        written.append(out)
        return {"params": 1000, "flops": 2000, "epochs_done": 1, "final": {"test_top1": 50.0},
                "best_top1": 50.0, "wall_s": 0.1, "completed": True}

    monkeypatch.setattr(T, "train", fake_train)
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipe.yaml").write_text("data: {dataset: digits}\ntraining: {epochs: 1}\n")
    study = work / "study.yaml"
    runs = {name: {"model": "resnet20"} for name in HOSTILE_NAMES}
    study.write_text(yaml.safe_dump({"study": {"name": "s", "recipe": "recipe.yaml", "seeds": [0], "runs": runs}}))
    out = work / "deep" / "out"
    sentinel = sorted(p.name for p in tmp_path.rglob("*"))
    try:
        run_study(study, out=str(out), log=lambda *a: None)
    except ValueError:
        pass  # refusing a hostile name is fine; writing outside OUT is not
    escaped = [str(p) for p in written if not _inside(p, out) or p.resolve() == out.resolve()]
    assert not escaped, f"run folders outside {out}: {escaped}"
    outside = sorted(p.name for p in tmp_path.rglob("*") if not _inside(p, out)
                     and p.name not in sentinel and p != out.parent)
    assert not outside, f"files written outside OUT: {outside}"


def test_security_search_writes_only_inside_out(tmp_path, capsys):
    """The search's file names are fixed; a whole tiny search (fake trainer) writes
    nothing beside its --out."""
    from strategies.search import run_search

    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    cfg = {"search": {"trials": 3, "population_size": 2, "sample_size": 1},
           "space": {"op_candidates": "osep_3x3,skip_connect", "num_nodes": 2},
           "proxy": {"init_channels": 2, "layers": 3, "steps": 1}, "output": {"plots": False}}
    out = work / "search"
    run_search(cfg, out, progress=False, print_report=False, trainer=lambda g, ctx: {"accuracy": 10.0 + ctx.index})
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt", "search"]
    assert all(_inside(p, out) for p in out.rglob("*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 3
