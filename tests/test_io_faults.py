"""Issue 21: I/O faults - a full disk (ENOSPC) and I/O errors (EIO) while writing.

The faults are injected under the writers of ``osep_nas.io`` (``atomic_open`` with its
``atomic_write_text/json/bytes``, and ``append_jsonl``), which every output of
osep-nas goes through: checkpoints (``save_checkpoint``), a training run's
``metrics.jsonl``/``summary.json``, a study's ``results.csv``/``results.md``/plots, and
the search's ``state.json``, ``trials.jsonl`` and ``pareto.yaml``.  Each fault hits one
step: the temporary file's creation, a write (half the bytes reach the disk first), the
fsync, or the rename.  The expected outcome every time: ``WriteFailed`` (an OSError and
a ValueError) with one line naming the file, the command exits 2 with one line, no
temporary file is left, and the previous file is intact and loadable (a run resumes
from it)."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import yaml

import osep_nas.io as oio
from osep_nas.checkpoint import load_checkpoint, save_checkpoint
from osep_nas.io import WriteFailed, append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text

pytestmark = pytest.mark.usefixtures("one_thread")

ERRORS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}
STEPS = ("mkstemp", "write", "fsync", "replace")


class _FailingFile:
    """A file object whose n-th write puts half its bytes on disk, then fails."""

    def __init__(self, fh: Any, code: int, nth: int) -> None:
        self._fh, self._code, self._nth, self._seen = fh, code, nth, 0

    def write(self, data):
        self._seen += 1
        if self._seen >= self._nth:
            self._fh.write(data[: len(data) // 2])
            self._fh.flush()
            raise OSError(self._code, os.strerror(self._code))
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


class Faults:
    """install(step, code, name=None, nth=1, occurrence=1): make ``step`` fail with errno
    ``code`` for files whose name contains ``name`` (every file when None): from the
    ``occurrence``-th such file on, at its ``nth`` write.  undo() removes every fault."""

    def __init__(self) -> None:
        self.mp = pytest.MonkeyPatch()

    def undo(self) -> None:
        self.mp.undo()

    def install(self, step: str, code: int, name: Optional[str] = None, nth: int = 1, occurrence: int = 1) -> None:
        seen = [0]

        def hits(path: Any) -> bool:
            if name is not None and name not in os.path.basename(str(path)):
                return False
            seen[0] += 1
            return seen[0] >= occurrence

        def fd_path(fd: int) -> str:
            return os.readlink(f"/proc/self/fd/{fd}")

        if step == "mkstemp":
            orig_mkstemp = tempfile.mkstemp

            def mkstemp(*a, **k):
                if hits(k.get("prefix", "")):
                    raise OSError(code, os.strerror(code))
                return orig_mkstemp(*a, **k)

            self.mp.setattr(oio.tempfile, "mkstemp", mkstemp)
        elif step == "write":
            orig_fdopen, orig_write = os.fdopen, os.write

            def fdopen(fd, *a, **k):
                fh = orig_fdopen(fd, *a, **k)
                return _FailingFile(fh, code, nth) if hits(fd_path(fd)) else fh

            def write(fd, data):  # append_jsonl writes with os.write
                if hits(fd_path(fd)):
                    orig_write(fd, bytes(data)[: len(data) // 2])
                    raise OSError(code, os.strerror(code))
                return orig_write(fd, data)

            self.mp.setattr(oio.os, "fdopen", fdopen)
            self.mp.setattr(oio.os, "write", write)
        elif step == "fsync":
            orig_fsync = os.fsync

            def fsync(fd):
                if hits(fd_path(fd)):
                    raise OSError(code, os.strerror(code))
                return orig_fsync(fd)

            self.mp.setattr(oio.os, "fsync", fsync)
        elif step == "replace":
            orig_replace = os.replace

            def replace(src, dst, *a, **k):
                if hits(dst):
                    raise OSError(code, os.strerror(code))
                return orig_replace(src, dst, *a, **k)

            self.mp.setattr(oio.os, "replace", replace)
        else:
            raise AssertionError(step)


@pytest.fixture
def faults():
    f = Faults()
    yield f
    f.undo()


def _one_line_write_error(exc: BaseException, path: Path, code: int) -> None:
    assert isinstance(exc, WriteFailed) and isinstance(exc, OSError) and isinstance(exc, ValueError)
    assert exc.errno == code
    msg = str(exc)
    assert "\n" not in msg and msg.startswith(f"cannot write {path}: {os.strerror(code)}"), msg


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- the generic writers

WRITERS: dict = {
    "atomic_write_text": (lambda p, v: atomic_write_text(p, v), lambda p: p.read_text(), "text {}\n"),
    "atomic_write_json": (lambda p, v: atomic_write_json(p, {"v": v}), lambda p: json.loads(p.read_text())["v"],
                          "{}"),
    "atomic_write_bytes": (lambda p, v: atomic_write_bytes(p, v.encode()), lambda p: p.read_bytes().decode(),
                           "bytes {}"),
}


@pytest.mark.parametrize("code_name", sorted(ERRORS))
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_io_fault_atomic_writers_keep_the_previous_file(tmp_path, faults, writer, step, code_name):
    write, read, template = WRITERS[writer]
    code = ERRORS[code_name]
    path = tmp_path / "out.dat"
    old, new = template.format("old" * 100), template.format("new" * 5000)
    write(path, old)
    faults.install(step, code, "out.dat")
    with pytest.raises(WriteFailed) as e:
        write(path, new)
    _one_line_write_error(e.value, path, code)
    assert "the previous file is unchanged" in str(e.value)
    assert read(path) == old
    _no_temp_files(tmp_path)


@pytest.mark.parametrize("code_name", sorted(ERRORS))
@pytest.mark.parametrize("step", ("write", "fsync"))
def test_io_fault_append_jsonl_leaves_no_torn_line(tmp_path, faults, step, code_name):
    code = ERRORS[code_name]
    path = tmp_path / "log.jsonl"
    for i in range(3):
        append_jsonl(path, {"i": i, "pad": "x" * 50})
    before = path.read_bytes()
    faults.install(step, code, "log.jsonl")
    with pytest.raises(WriteFailed) as e:
        append_jsonl(path, {"i": 3, "pad": "y" * 5000})
    _one_line_write_error(e.value, path, code)
    assert path.read_bytes() == before  # cut back: no half line for the next reader
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == [0, 1, 2]


# ---------------------------------------------------------------- the search's files

def _search_like(folder: Path, n: int) -> None:
    """state.json, trials.jsonl and pareto.yaml as the search writes them (the same writers)."""
    atomic_write_json(folder / "state.json", {"format": "osep-nas-search", "version": 1,
                                              "evolution": {"history": list(range(n))}})
    atomic_write_text(folder / "trials.jsonl", "".join(json.dumps({"trial": i, "status": "ok"}) + "\n"
                                                       for i in range(n)))
    atomic_write_text(folder / "pareto.yaml", yaml.safe_dump({"front": [{"trial": i} for i in range(n)]}))


@pytest.mark.parametrize("code_name", sorted(ERRORS))
@pytest.mark.parametrize("name", ["state.json", "trials.jsonl", "pareto.yaml"])
def test_io_fault_search_files_stay_loadable(tmp_path, faults, name, code_name):
    from strategies.report import load_trials

    code = ERRORS[code_name]
    _search_like(tmp_path, 3)
    for step in STEPS:
        faults.install(step, code, name)
        with pytest.raises(WriteFailed) as e:
            _search_like(tmp_path, 5)
        _one_line_write_error(e.value, tmp_path / name, code)
        faults.undo()
        _search_like(tmp_path, 3)  # the files before the hit one were rewritten: back to 3 everywhere
    # a trial's record appended onto trials.jsonl fails whole too
    faults.install("write", code, "trials.jsonl")
    with pytest.raises(WriteFailed):
        append_jsonl(tmp_path / "trials.jsonl", {"trial": 99})
    state = json.loads((tmp_path / "state.json").read_text())
    trials = load_trials(tmp_path)
    front = yaml.safe_load((tmp_path / "pareto.yaml").read_text())["front"]
    n = {"state.json": len(state["evolution"]["history"]), "trials.jsonl": len(trials),
         "pareto.yaml": len(front)}
    assert n[name] == 3  # the file hit keeps its previous content, whole
    _no_temp_files(tmp_path)


# ---------------------------------------------------------------- checkpoints and commands

@pytest.mark.parametrize("code_name", sorted(ERRORS))
@pytest.mark.parametrize("step", STEPS)
def test_io_fault_checkpoint_previous_one_loads(tmp_path, faults, step, code_name):
    code = ERRORS[code_name]
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "model": {"w": torch.arange(10.0)}})
    faults.install(step, code, "last.pt", nth=2)
    with pytest.raises(WriteFailed) as e:
        save_checkpoint(path, {"epoch": 2, "model": {"w": torch.zeros(50_000)}})
    _one_line_write_error(e.value, path, code)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["w"], torch.arange(10.0))
    _no_temp_files(tmp_path)


TRAIN = ["train", "--model", "resnet20", "--set", "model.width_mult=0.25", "--set", "data.image_size=8",
         "--set", "data.batch_size=32", "--set", "max_steps_per_epoch=2", "--set", "training.tensorboard=false",
         "--set", "training.seed=5", "--epochs", "2", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize("code_name", sorted(ERRORS))
def test_io_fault_train_command_exits_2_and_resumes(tmp_path, faults, capsys, code_name):
    """`osep-nas train` hit by a full disk / an I/O error while writing epoch 2's last.pt:
    exit 2 with one line; last.pt still holds epoch 1 and --resume finishes the run."""
    from osep_nas.cli import main

    code = ERRORS[code_name]
    out = tmp_path / "run"
    faults.install("write", code, ".last.pt.", occurrence=2)
    assert main([*TRAIN, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"osep-nas train: error: cannot write {out / 'last.pt'}: {os.strerror(code)}"), err
    faults.undo()
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    _no_temp_files(out)
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("code_name", sorted(ERRORS))
@pytest.mark.parametrize("name", ["results.csv", "results.md", "accuracy_vs_params.png"])
def test_io_fault_study_results_exit_2_previous_results_kept(tmp_path, faults, monkeypatch, capsys, name,
                                                              code_name):
    """`osep-nas study` (trainer faked) hit while writing its results: exit 2 with one line,
    the previous results file intact; the next run of the study writes them again."""
    import osep_nas.train as T
    from osep_nas.cli import main

    top1 = {"value": 50.0}

    def fake_train(cfg, progress=None):
        return {"params": 1000, "flops": 2000, "epochs_done": 1, "final": {"test_top1": top1["value"]},
                "best_top1": top1["value"], "wall_s": 0.1, "completed": False}

    monkeypatch.setattr(T, "train", fake_train)
    (tmp_path / "recipe.yaml").write_text("data: {dataset: digits}\ntraining: {epochs: 1}\n")
    study = tmp_path / "study.yaml"
    study.write_text("study:\n  name: s\n  recipe: recipe.yaml\n  seeds: [0]\n  runs:\n    r: {model: resnet20}\n")
    out = tmp_path / "sout"
    assert main(["study", str(study), "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / name).read_bytes()
    top1["value"] = 75.0  # a second run would change every results file
    code = ERRORS[code_name]
    faults.install("replace", code, name)
    assert main(["study", str(study), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"osep-nas study: error: cannot write {out / name}: "), err
    assert (out / name).read_bytes() == before  # the previous results, whole
    if name == "results.csv":
        assert "50.0" in before.decode() and "75.0" not in before.decode()
    _no_temp_files(out)
    faults.undo()
    assert main(["study", str(study), "--out", str(out)]) == 0
    assert "75.0" in (out / "results.csv").read_text()
