"""Issue 21: one writer per output folder (osep_nas.outlock).

A second ``train`` / ``study`` on an ``--out`` that a live process is writing is refused
at once with one line and exit status 2; a lock left by a process killed with SIGKILL is
stale and does not block ``--resume``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osep_nas.outlock import LOCK_NAME, hold_out_dir, out_entries, read_owner
from tests.test_faults import STEPS_PER_EPOCH, TRAIN, Driver, metrics

REPO = Path(__file__).resolve().parents[1]

HOLDER = r"""
import sys, time
from pathlib import Path
from osep_nas.outlock import hold_out_dir
with hold_out_dir(sys.argv[1]):
    Path(sys.argv[2]).write_text("held")
    time.sleep(600)
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert path.exists(), f"the holder never got the lock (exit {proc.poll()})"


class Holder:
    """A small live process that holds OUT's lock (no torch import: starts in ~0.1 s)."""

    def __init__(self, out: Path, tmp: Path):
        marker = tmp / f"held-{time.monotonic_ns()}"
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(marker)], env=_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for(marker, self.proc)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stderr.close()


def test_outlock_basics(tmp_path):
    out = tmp_path / "a" / "b"
    with hold_out_dir(out) as held:
        assert held == out and out.is_dir()
        owner = read_owner(out / LOCK_NAME)
        assert owner["pid"] == os.getpid() and owner["host"] and owner["started"]
        assert out_entries(out) == []  # the lock is not part of the output
        (out / "x.txt").write_text("x")
        assert out_entries(out) == [out / "x.txt"]
        with hold_out_dir(out):  # re-entrant in one process
            assert (out / LOCK_NAME).exists()
        assert (out / LOCK_NAME).exists()  # still held by the outer block
    assert not (out / LOCK_NAME).exists() and (out / "x.txt").exists()
    # a folder the lock created is removed again when nothing was written into it
    other = tmp_path / "c" / "d"
    with pytest.raises(RuntimeError):
        with hold_out_dir(other):
            raise RuntimeError("bad input found inside")
    assert not (tmp_path / "c").exists()
    # OUT is a file: one line
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        with hold_out_dir(tmp_path / "file"):
            pass


def test_outlock_live_owner_refused_stale_taken_over(tmp_path):
    out = tmp_path / "out\nsecond line"  # a path with a newline still gives one line
    holder = Holder(out, tmp_path)
    try:
        t0 = time.time()
        with pytest.raises(ValueError) as e:
            with hold_out_dir(out):
                pass
        msg = str(e.value)
        assert "\n" not in msg and time.time() - t0 < 1.0
        assert f"is in use by pid {holder.proc.pid} (started " in msg
        assert msg.endswith("; wait for it or choose another --out")
        assert "out\\nsecond line" in msg
    finally:
        holder.kill()
    # SIGKILL left the lock file behind: stale, taken over
    assert read_owner(out / LOCK_NAME)["pid"] == holder.proc.pid
    with hold_out_dir(out):
        assert read_owner(out / LOCK_NAME)["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


def test_outlock_torn_or_foreign_lock_files(tmp_path):
    """A lock file with garbage, an empty one, or a dead pid: stale, taken over."""
    out = tmp_path / "out"
    out.mkdir()
    for content in (b"", b"\x00\xff garbage", b'{"pid": 999999999, "host": "x"}', b"[1, 2]"):
        (out / LOCK_NAME).write_bytes(content)
        os.utime(out / LOCK_NAME, (0, 0))  # not "being written right now"
        with hold_out_dir(out):
            assert read_owner(out / LOCK_NAME)["pid"] == os.getpid()


def test_outlock_study_refused_while_held(tmp_path, capsys):
    """`osep-nas study` on a folder another process holds: exit 2, one line, nothing trained."""
    from osep_nas.cli import main

    (tmp_path / "recipe.yaml").write_text("data: {dataset: digits}\ntraining: {epochs: 1}\n")
    study = tmp_path / "study.yaml"
    study.write_text("study:\n  name: s\n  recipe: recipe.yaml\n  seeds: [0]\n  runs:\n    r: {model: resnet20}\n")
    out = tmp_path / "sout"
    holder = Holder(out, tmp_path)
    try:
        assert main(["study", str(study), "--out", str(out)]) == 2
    finally:
        holder.kill()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("osep-nas study: error: output folder"), err
    assert f"in use by pid {holder.proc.pid}" in err[0]
    assert out_entries(out) == []  # nothing was trained into it


@pytest.mark.slow
def test_outlock_second_train_exits_2_and_stale_lock_resumes(tmp_path):
    """Must show: a second `osep-nas train` on the --out a live `osep-nas train` is writing
    exits 2 within seconds with one line; after SIGKILL of the first, `--resume` finishes
    the run (the stale lock does not block it) and it ends as an uninterrupted run does."""
    driver = Driver(tmp_path)
    out = tmp_path / "run"
    marker = tmp_path / "parked"
    # the first train parks inside epoch 2 (after epoch 1's checkpoint), alive and holding OUT
    first = subprocess.Popen([sys.executable, str(driver.script), *TRAIN, "--out", str(out)],
                             env=driver.env(f"step:{STEPS_PER_EPOCH + 2}", marker), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, first, timeout=300)
        for extra in ([], ["--resume"]):
            t0 = time.time()
            second = subprocess.run([sys.executable, "-m", "osep_nas.cli", *TRAIN, "--out", str(out), *extra],
                                    env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
            took = time.time() - t0
            err = second.stderr.strip().splitlines()
            print(f"second train {' '.join(extra) or '(fresh)'}: exit {second.returncode} in {took:.1f} s: {err}")
            assert second.returncode == 2 and len(err) == 1, second.stderr[-2000:]
            assert err[0].startswith("osep-nas train: error: output folder") and \
                f"in use by pid {first.pid}" in err[0] and "choose another --out" in err[0]
            assert took < 30
        assert first.poll() is None  # the first one was never disturbed
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stderr.close()
    assert read_owner(out / LOCK_NAME)["pid"] == first.pid  # left behind by the kill
    assert [m["epoch"] for m in metrics(out)] == [1]
    driver.run([*TRAIN, "--out", str(out), "--resume"])
    assert not (out / LOCK_NAME).exists()
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3]  # bit-exactness of such resumes: test_faults.py
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 1
