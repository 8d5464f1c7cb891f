"""Issue 20: every reader of a user's file goes through the one bounded reader of
``osep_nas.io``: regular files only, at most a limit, one clear line, never a hang."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from osep_nas.io import check_user_file, open_user_file, read_user_bytes, read_user_text, refuse_special_file

ROOT = Path(__file__).resolve().parents[1]
OSEP = [str(Path(sys.executable).parent / "osep-nas")]


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    return path


def _returns_within(fn, seconds: float, unblock: Path = None):
    """Run ``fn`` in a thread; (finished, result or exception).  A reader stuck opening a
    FIFO is released by opening its write end, so a failing test never hangs the suite."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["value"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    finished = not t.is_alive()
    if not finished and unblock is not None:
        fd = os.open(unblock, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
    return finished, box.get("value")


def test_reads_a_regular_file_exactly(tmp_path):
    p = tmp_path / "g.yaml"
    data = "normal: []\n\u00e9\n".encode("utf-8")
    p.write_bytes(b"\xef\xbb\xbf" + data)  # a BOM is dropped by the text reader
    assert read_user_bytes(p, 100) == b"\xef\xbb\xbf" + data
    assert read_user_text(p, 100) == data.decode("utf-8")
    assert read_user_bytes(p, len(data) + 3) == b"\xef\xbb\xbf" + data  # exactly at the limit
    with open_user_file(p, 100) as fh:
        assert fh.read() == b"\xef\xbb\xbf" + data
    assert check_user_file(str(p), 100) == p


@pytest.mark.parametrize("path, kind", [("/dev/zero", "a device"), ("/dev/urandom", "a device"),
                                        ("/dev/null", "a device"), ("FOLDER", "a folder"), ("FIFO", "a pipe")])
def test_refuses_what_is_not_a_regular_file(tmp_path, path, kind):
    path = {"FOLDER": str(tmp_path), "FIFO": str(_fifo(tmp_path))}.get(path, path)
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    for reader in (read_user_bytes, read_user_text, check_user_file):
        done, result = _returns_within(lambda: reader(path, 1 << 20, "genotype file"), 5, unblock=path)
        assert done, f"{reader.__name__} blocked on {path}"
        assert isinstance(result, ValueError)
        assert str(result) == f"genotype file {path} is {kind}, not a regular file"
    if kind == "a folder":
        refuse_special_file(path)  # folders are the command's business
    else:
        with pytest.raises(ValueError, match=f"is {kind}"):
            refuse_special_file(path, "--check")


def test_size_limits(tmp_path):
    p = tmp_path / "big.json"
    p.write_bytes(b"x" * 1001)
    with pytest.raises(ValueError, match=r"^space file .*big.json is too large \(1,001 bytes; at most 1,000"):
        read_user_bytes(p, 1000, "space file")
    # a file whose size lies (procfs reports 0 bytes): the read itself is bounded
    status = Path("/proc/self/status")
    if status.is_file() and status.stat().st_size == 0:
        with pytest.raises(ValueError, match="too large \\(more than 10 bytes\\)"):
            read_user_bytes(status, 10)
        assert read_user_text(status, 1 << 20).startswith("Name:")
    with pytest.raises(FileNotFoundError, match="^checkpoint not found: "):
        read_user_bytes(tmp_path / "nope.pt", 10, "checkpoint")
    with pytest.raises(FileNotFoundError, match="a part of the path is not a folder"):
        read_user_bytes(p / "below", 10)
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8 text \\(byte 0\\)"):
        read_user_text(p, 10, "config")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_bytes"):
            read_user_bytes(p, bad)


def _library_readers():
    from osep_nas.checkpoint import load_checkpoint
    from osep_nas.config import load_config
    from osep_nas.genotypes import genotype_from_arg, load_genotype
    from search_spaces.hpo import check_search_space
    from strategies.cli_export import read_experiment

    return {"load_genotype": load_genotype, "genotype_from_arg": lambda p: genotype_from_arg(str(p)),
            "check_search_space": check_search_space, "load_checkpoint": load_checkpoint,
            "load_config": load_config, "read_experiment": read_experiment}


@pytest.mark.parametrize("reader", sorted(_library_readers()))
def test_library_readers_refuse_a_pipe_and_a_device_at_once(tmp_path, reader):
    fn = _library_readers()[reader]
    fifo = _fifo(tmp_path)
    for path in (fifo, Path("/dev/zero")):
        start = time.perf_counter()
        done, result = _returns_within(lambda: fn(path), 5, unblock=fifo)
        assert done, f"{reader} blocked on {path}"
        assert isinstance(result, ValueError), result
        assert "not a regular file" in str(result) or "not a file" in str(result), result
        assert str(path) in str(result) and "\n" not in str(result)
        assert time.perf_counter() - start < 2


@pytest.mark.parametrize("argv, line", [
    (["space", "--check", "/dev/urandom"], "osep-nas space: error: --check /dev/urandom is a device, not a regular file"),
    (["eval", "--genotype", "/dev/zero"], "osep-nas eval: error: --genotype /dev/zero is a device, not a regular file"),
    (["train", "--genotype=/dev/zero", "--out", "OUT"],
     "osep-nas train: error: --genotype /dev/zero is a device, not a regular file"),
    (["study", "/dev/zero"], "osep-nas study: error: input file /dev/zero is a device, not a regular file"),
    (["eval", "--checkpoint", "FIFO"], "osep-nas eval: error: --checkpoint FIFO is a pipe, not a regular file"),
])
def test_cli_refuses_special_files_in_one_line_fast(tmp_path, argv, line):
    fifo = str(_fifo(tmp_path))
    argv = [a.replace("FIFO", fifo).replace("OUT", str(tmp_path / "out")) for a in argv]
    start = time.perf_counter()
    proc = subprocess.run(OSEP + argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [line.replace("FIFO", fifo)]
    assert elapsed < 2.0, f"{argv} took {elapsed:.2f} s"
    assert not (tmp_path / "out").exists()


# Modules that read a user's file directly (not through osep_nas.io): the files of issue 15,
# whose owner is rewriting them (strategies/search.py state, the tuner's state, trials.jsonl
# in report.py, --params files in cli_trial.py, config files in config.py, CIFAR batches in
# data/unpickle.py).  kernels/ reads its own C++ source and /proc/cpuinfo, never a user's file.
PENDING = {"osep_nas/config.py", "osep_nas/data/unpickle.py"}
# Files that read no user's file: the kernel's own C++ source and /proc/cpuinfo, /proc/meminfo,
# and the output-folder lock of issue 21 (its own lock file, reviewed there).
NOT_USER_FILES = {"osep_nas/kernels/__init__.py", "osep_nas/limits.py", "osep_nas/outlock.py"}


def _direct_reads(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = set()  # lines inside `with open_user_file(...) as fh:` (streaming readers such as torch.load)
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
                isinstance(i.context_expr, ast.Call) and getattr(i.context_expr.func, "id", "") == "open_user_file"
                for i in node.items):
            guarded.update(range(node.lineno, node.end_lineno + 1))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or node.lineno in guarded:
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in ("read_text", "read_bytes"):
            yield node.lineno, name
        elif name == "open" and isinstance(f, ast.Name):
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                  None)
            if mode is None or (isinstance(mode, ast.Constant) and "r" in str(mode.value)):
                yield node.lineno, "open"
        elif name == "load" and isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "torch":
            yield node.lineno, "torch.load"


def test_every_reader_goes_through_the_bounded_reader():
    found = []
    for package in ("osep_nas", "search_spaces", "strategies"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in PENDING or rel in NOT_USER_FILES or rel == "osep_nas/io.py":
                continue
            found += [f"{rel}:{line} {what}" for line, what in _direct_reads(path)]
    assert found == []
