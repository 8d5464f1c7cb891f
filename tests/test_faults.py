"""Issue 9: fault injection - SIGKILL the real ``osep-nas`` processes at chosen moments
and check that nothing is lost, nothing is half-written and the resumed run ends exactly
where an uninterrupted one does.

The processes are the real command line run by a small driver (``DRIVER`` below) that
can install one fault hook before calling ``osep_nas.cli.main``:

* ``step:N``            park (sleep) right before the N-th optimizer step: a kill mid-epoch;
* ``save:NAME:N``       the N-th ``torch.save`` into a temp file of NAME writes half its
  bytes, fsyncs them, then parks: a kill in the middle of writing a checkpoint;
* ``trial:K``           park at the start of search trial K: a kill mid-trial;
* ``replace:NAME:N``    park right before the N-th rename onto NAME (the new content is
  complete in its temp file): a kill in the middle of an atomic write.

A parked process writes a marker file; the test then SIGKILLs it, so every kill lands
exactly where intended (no timing luck).  ``test_fault_kill_anywhere_*`` (issue 21) go
further: a fork server (torch imported once) runs ``train`` / ``study`` and SIGKILLs the
child at its k-th write event (every rename before and after, torn appends, torn lock and
checkpoint writes, mid-epoch steps), for 22 + 9 kill points, each resumed and compared
with the uninterrupted result.  ``test_fault_sigkill_at_random_moments`` adds
kills at random times.  Covered elsewhere, not repeated here: a kill between epochs
(tests/test_train.py::test_sigkill_then_resume_matches_uninterrupted), a kill after a few
search trials, a simulated out-of-memory trial recorded as failed while the search goes on
(tests/test_search.py::test_sigkill_then_resume_equals_uninterrupted,
::test_failing_trial_is_recorded_and_the_search_goes_on).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch

from osep_nas.checkpoint import load_checkpoint

DRIVER = r'''
import io, os, sys, time
from pathlib import Path

hook, marker = os.environ.get("FAULT_HOOK", ""), os.environ.get("FAULT_MARKER", "")


def park(note):
    Path(marker).write_text(note)
    time.sleep(3600)


def install(spec):
    kind, _, rest = spec.partition(":")
    if kind == "step":
        import torch
        target, orig, seen = int(rest), torch.optim.SGD.step, [0]

        def step(self, *a, **k):
            seen[0] += 1
            if seen[0] == target:
                park(f"before step {target}")
            return orig(self, *a, **k)

        torch.optim.SGD.step = step
    elif kind == "save":
        import torch
        name, n = rest.rsplit(":", 1)
        target, orig, seen = int(n), torch.save, [0]

        def save(obj, f, *a, **k):
            path = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else str(f)
            if f".{name}." in os.path.basename(path):  # atomic_open's temp file of NAME
                seen[0] += 1
                if seen[0] == target:
                    buf = io.BytesIO()
                    orig(obj, buf, *a, **k)
                    data = buf.getvalue()
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    park(f"half of {len(data)} bytes of {name} written")
            return orig(obj, f, *a, **k)

        torch.save = save
    elif kind == "trial":
        import strategies.search as S
        target, orig = int(rest), S.proxy_train

        def trainer(candidate, ctx):
            if ctx.index == target:
                park(f"in trial {target}")
            return orig(candidate, ctx)

        S.proxy_train = trainer
    elif kind == "replace":
        name, n = rest.rsplit(":", 1)
        target, orig, seen = int(n), os.replace, [0]

        def replace(src, dst, *a, **k):
            if os.path.basename(str(dst)) == name:
                seen[0] += 1
                if seen[0] == target:
                    park(f"before rename {target} onto {name}")
            return orig(src, dst, *a, **k)

        os.replace = replace
    elif spec:
        raise SystemExit(f"unknown FAULT_HOOK {spec!r}")


install(hook)
from osep_nas.cli import main
sys.exit(main(sys.argv[1:]))
'''

TRAIN = ["train", "--model", "resnet20", "--set", "model.width_mult=0.25", "--set", "data.image_size=8",
         "--set", "data.padding=1", "--set", "data.batch_size=32", "--set", "data.cutout=2",
         "--set", "data.color_jitter=0.2", "--set", "max_steps_per_epoch=4", "--set", "training.tensorboard=false",
         "--set", "optim.schedule=exponential", "--set", "optim.gamma=0.7", "--set", "optim.step_epochs=0.5",
         "--set", "training.seed=5", "--epochs", "3", "--device", "cpu", "--quiet"]
STEPS_PER_EPOCH = 4
SEARCH = ["search", "--seed", "3", "--trials", "6", "--set", "search.strategy=evolution", "--set",
          "search.population_size=3", "--set",
          "search.sample_size=2", "--set", "space.op_candidates=osep_3x3,max_pool_3x3,skip_connect",
          "--set", "space.num_nodes=2", "--set", "proxy.init_channels=2", "--set", "proxy.steps=8",
          "--set", "data.batch_size=16", "--set", "output.plots=false", "--set", "search.workers=1",
          "--set", "search.round_size=2", "--set", "target.init_channels=8", "--set", "target.layers=5", "--quiet"]
TIMING_KEYS = {"images_per_s", "data_time_share", "epoch_time_s", "train_s", "wall_s", "search_wall_s",
               "session_wall_s"}


class Driver:
    """Runs the command line in a child process, optionally with a fault hook."""

    def __init__(self, folder: Path):
        self.script = folder / "fault_driver.py"
        self.script.write_text(DRIVER)
        self.folder = folder

    def env(self, hook: str = "", marker: Optional[Path] = None) -> Dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", FAULT_HOOK=hook,
                   FAULT_MARKER=str(marker or ""))
        repo = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def run(self, argv: List[str], timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, str(self.script), *argv], env=self.env(), cwd=self.folder,
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        return proc

    def kill_at(self, argv: List[str], hook: str, timeout: float = 300) -> str:
        """Run with ``hook``, wait until it parks, SIGKILL it; returns the park note."""
        marker = self.folder / f"parked-{time.monotonic_ns()}"
        proc = subprocess.Popen([sys.executable, str(self.script), *argv], env=self.env(hook, marker),
                                cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + timeout
        try:
            while not marker.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            assert marker.exists(), (f"never reached {hook} (exit {proc.poll()}):\n"
                                     f"{proc.stderr.read()[-3000:] if proc.poll() is not None else ''}")
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        return marker.read_text()

    def kill_in_window(self, argv: List[str], out: Path, delay: float) -> bool:
        """Start, wait until OUT/config.yaml is (re)written - the trainer writes it right
        before its first epoch - then SIGKILL ``delay`` seconds later unless it ends first.
        True when it was killed."""
        start = time.time()
        proc = subprocess.Popen([sys.executable, str(self.script), *argv], env=self.env(), cwd=self.folder,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cfg = out / "config.yaml"
        try:
            while proc.poll() is None and not (cfg.exists() and cfg.stat().st_mtime >= start - 1.0):
                time.sleep(0.005)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
        return proc.returncode == -signal.SIGKILL


def metrics(out: Path) -> List[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(ref: Path, out: Path) -> None:
    """Bit-identical weights, optimizer state and RNG; the same metrics, each epoch once."""
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(out / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid, st in a["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"]), pid
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert metrics(out) == metrics(ref)
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3]


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Driver:
    return Driver(tmp_path_factory.mktemp("driver"))


@pytest.fixture(scope="module")
def reference(driver) -> Tuple[Path, float]:
    """The uninterrupted run and how long its training took (config.yaml to summary.json)."""
    out = driver.folder / "reference"
    driver.run([*TRAIN, "--out", str(out)])
    return out, (out / "summary.json").stat().st_mtime - (out / "config.yaml").stat().st_mtime


@pytest.fixture
def reference_run(reference) -> Path:
    return reference[0]


@pytest.mark.slow
def test_fault_sigkill_mid_epoch_then_resume_is_bit_exact(driver, reference_run, tmp_path):
    out = tmp_path / "run"
    note = driver.kill_at([*TRAIN, "--out", str(out)], f"step:{STEPS_PER_EPOCH + 2}")  # inside epoch 2
    assert note == f"before step {STEPS_PER_EPOCH + 2}"
    ckpt = load_checkpoint(out / "last.pt", required=("model", "optimizer", "scheduler", "rng", "epoch"))
    assert ckpt["epoch"] == 1  # epoch 2 was lost in flight, epoch 1 is whole
    assert [m["epoch"] for m in metrics(out)] == [1]
    driver.run([*TRAIN, "--out", str(out), "--resume"])
    assert_same_training(reference_run, out)


@pytest.mark.slow
def test_fault_sigkill_mid_checkpoint_write_then_resume_is_bit_exact(driver, reference_run, tmp_path):
    out = tmp_path / "run"
    note = driver.kill_at([*TRAIN, "--out", str(out)], "save:last.pt:2")  # while writing epoch 2's last.pt
    assert note.startswith("half of") and "last.pt" in note
    torn = list(out.glob(".last.pt.*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0  # the half-written bytes went to a temp file...
    ckpt = load_checkpoint(out / "last.pt")  # ...never to last.pt, which still loads: epoch 1
    assert ckpt["epoch"] == 1
    assert [m["epoch"] for m in metrics(out)] == [1, 2]  # epoch 2's line was written before its checkpoint
    driver.run([*TRAIN, "--out", str(out), "--resume"])  # drops the line of the lost epoch, redoes it
    assert_same_training(reference_run, out)


@pytest.mark.slow
def test_fault_sigkill_mid_first_checkpoint_write_then_resume(driver, reference_run, tmp_path):
    """Killed while writing the FIRST last.pt: the folder holds config.yaml and epoch 1's
    metrics line but no checkpoint; --resume must start over (nothing was lost that a
    checkpoint held) rather than refuse the folder forever."""
    out = tmp_path / "run"
    driver.kill_at([*TRAIN, "--out", str(out)], "save:last.pt:1")
    assert not (out / "last.pt").exists() and (out / "metrics.jsonl").exists()
    driver.run([*TRAIN, "--out", str(out), "--resume"])
    assert_same_training(reference_run, out)


@pytest.mark.slow
def test_fault_sigkill_at_random_moments(driver, reference, tmp_path):
    """Kill the same run again and again at random moments of its training (the fresh
    start, then the resumes), then let it finish: the end state is the uninterrupted one."""
    ref, window = reference
    out = tmp_path / "run"
    rng = random.Random(int(os.environ.get("FAULT_SEED", "1")))

    def finished() -> bool:
        return (out / "last.pt").exists() and load_checkpoint(out / "last.pt")["epoch"] == 3

    def argv() -> List[str]:
        return [*TRAIN, "--out", str(out)] + (["--resume"] if (out / "last.pt").exists() else [])

    kills = 0
    for _ in range(3):
        if finished():
            break
        if driver.kill_in_window(argv(), out, rng.uniform(0.0, 1.0) * window):
            kills += 1
            if (out / "last.pt").exists():
                assert load_checkpoint(out / "last.pt")["epoch"] in (1, 2, 3)  # whole, whenever the kill came
    assert kills >= 1, "every run completed before its kill"
    if not finished():
        driver.run(argv())
    assert_same_training(ref, out)


def _records(out: Path) -> List[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in (out / "trials.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_fault_search_sigkill_mid_trial_and_mid_state_write(driver, tmp_path):
    """A search killed inside trial 2, resumed and killed again while renaming state.json
    into place, then resumed to the end: every job once, the uninterrupted front."""
    ref = tmp_path / "ref"
    driver.run([*SEARCH, "--out", str(ref)])
    out = tmp_path / "killed"
    assert driver.kill_at([*SEARCH, "--out", str(out)], "trial:2") == "in trial 2"
    state = json.loads((out / "state.json").read_text())
    assert [r["job"] for r in state["jobs"]] == [0, 1]  # round 1 done and told
    assert [j["trial"] for j in state["round"]] == [2, 3]  # round 2 planned: trial 2 not lost
    assert [r["trial"] for r in _records(out)] == [0, 1]
    # resume, and kill while the state after job 3 is renamed into place: rename 1 is the
    # start-up save, 2 the state after job 2, 3 the state after job 3
    note = driver.kill_at([*SEARCH, "--out", str(out), "--resume"], "replace:state.json:3")
    assert note == "before rename 3 onto state.json"
    state = json.loads((out / "state.json").read_text())
    assert [r["job"] for r in state["jobs"]] == [0, 1, 2]  # the old state, whole
    driver.run([*SEARCH, "--out", str(out), "--resume"])
    done, want = _records(out), _records(ref)
    assert [r["job"] for r in done] == list(range(len(want)))  # none lost, none counted twice
    assert done == want and sorted({r["trial"] for r in done}) == list(range(6))
    front = lambda d: json.loads((d / "summary.json").read_text())["front"]  # noqa: E731
    assert front(out) == front(ref)
    assert (out / "pareto.yaml").read_text() == (ref / "pareto.yaml").read_text()


# ----------------------------------------------------------------------------- kill -9 anywhere (issue 21)

FORK_SERVER = r'''
import io, json, os, signal, sys
sys.path.insert(0, os.environ["REPO"])
import torch
torch.set_num_threads(1)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401  (the study's plots; preloaded, not per child)
import osep_nas.io as oio
import osep_nas.train, osep_nas.study, osep_nas.models, osep_nas.complexity, osep_nas.cli.train_cmd  # noqa: F401
import strategies.search, strategies.cli_search  # noqa: F401  (the search kill test)
import osep_nas.cli.study_cmd, sklearn.model_selection  # noqa: F401
from osep_nas import kernels
from osep_nas.cli import main
from osep_nas.data.datasets import _raw_digits
kernels.available()
_raw_digits()  # the digits, read once
if os.environ.get("WARMUP"):  # one run here, so that torch's first-call set-up is not paid by every child
    import contextlib, tempfile
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        assert main(json.loads(os.environ["WARMUP"]) + ["--out", tmp + "/w", "--quiet"]) == 0
        fig = matplotlib.pyplot.figure()
        fig.savefig(io.BytesIO(), format="png")
        matplotlib.pyplot.close(fig)
real = {"replace": os.replace, "write": os.write, "save": torch.save, "step": torch.optim.SGD.step}


def child(job):
    """Run one command; SIGKILL ourselves at the job's kill_at-th event under job's root."""
    root, kill_at, events = os.path.realpath(job["root"]) + os.sep, job.get("kill_at"), []
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)

    def event(name, torn=None):
        events.append(name)
        with open(job["events"], "a") as fh:
            fh.write(name + "\n")
        if len(events) == kill_at:
            if torn:
                torn()
            os.kill(os.getpid(), signal.SIGKILL)

    def inside(path):
        return os.path.realpath(str(path)).startswith(root)

    def fd_inside(fd):
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(root)
        except OSError:
            return False

    def replace(src, dst, *a, **k):
        if not inside(dst):
            return real["replace"](src, dst, *a, **k)
        name = os.path.basename(str(dst))
        event(f"before rename onto {name}")
        out = real["replace"](src, dst, *a, **k)
        event(f"after rename onto {name}")
        return out

    def write(fd, data):
        if not fd_inside(fd):
            return real["write"](fd, data)
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        event(f"torn write to {name}", lambda: real["write"](fd, bytes(data)[: max(1, len(data) // 2)]))
        return real["write"](fd, data)

    def save(obj, f, *a, **k):
        if hasattr(f, "fileno") and fd_inside(f.fileno()):
            def torn():
                buf = io.BytesIO()
                real["save"](obj, buf, *a, **k)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
            tmp = os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}"))  # .NAME.XXXX.tmp
            event(f"torn checkpoint {tmp[1:].rsplit('.', 2)[0]}", torn)
        return real["save"](obj, f, *a, **k)

    steps = [0]

    def step(self, *a, **k):
        steps[0] += 1
        if steps[0] % 4 == 2:  # mid-epoch (4 steps an epoch)
            event(f"mid-epoch step {steps[0]}")
        return real["step"](self, *a, **k)

    os.replace, os.write, torch.save, torch.optim.SGD.step = replace, write, save, step
    os.chdir(job["cwd"])
    return main(job["argv"])


for line in sys.stdin:
    job = json.loads(line)
    open(job["events"], "w").close()
    pid = os.fork()
    if pid == 0:
        try:
            rc = child(job)
        except BaseException as exc:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            rc = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(rc or 0))
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    rc = None if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    events = open(job["events"]).read().splitlines()
    print(json.dumps({"killed": killed, "rc": rc, "events": events}), flush=True)
'''


class ForkServer:
    """One process that imports torch and osep-nas once, then forks a child per command
    (no 3-second start per run): ``run(argv, root, kill_at=k)`` SIGKILLs the child at its
    k-th event under ``root`` (a rename, a torn append or write, a torn checkpoint, a
    mid-epoch step)."""

    def __init__(self, folder: Path):
        script = folder / "fork_server.py"
        script.write_text(FORK_SERVER)
        self.folder = folder
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", REPO=str(Path(__file__).resolve().parents[1]),
                   WARMUP=json.dumps(TRAIN_K))
        self.proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=folder, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.n = 0

    def run(self, argv: List[str], root: Path, kill_at: Optional[int] = None) -> dict:
        self.n += 1
        job = {"argv": argv, "root": str(root), "kill_at": kill_at, "cwd": str(self.folder),
               "log": str(self.folder / f"job{self.n}.log"), "events": str(self.folder / f"job{self.n}.events")}
        t0 = time.time()
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if os.environ.get("OSEP_NAS_KILL_DEBUG"):
            print(f"job {self.n} kill_at={kill_at}: {time.time() - t0:.1f} s", flush=True)
        assert line, f"the fork server died (exit {self.proc.poll()})"
        res = json.loads(line)
        res["log"] = Path(job["log"]).read_text()[-3000:]
        if kill_at is None:
            assert res["rc"] == 0, f"{argv[0]} failed ({res['rc']}):\n{res['log']}"
        return res

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("forkserver"))
    yield server
    server.close()


# TRAIN with 2 steps an epoch and 90 test images: the same kinds of events, half the cost
TRAIN_K = [*TRAIN, "--set", "max_steps_per_epoch=2", "--set", "data.test_fraction=0.05"]


def _train_argv(out: Path) -> List[str]:
    resume = any((out / n).exists() for n in ("last.pt", "config.yaml", "metrics.jsonl"))
    return [*TRAIN_K, "--out", str(out)] + (["--resume"] if resume else [])


def _spread(n: int, want: int) -> List[int]:
    """``want`` kill points spread evenly over events 1..n (all of them when n <= want)."""
    if n <= want:
        return list(range(1, n + 1))
    return sorted({1 + round(i * (n - 1) / (want - 1)) for i in range(want)})


def _kill_anywhere(fork_server, tmp_path: Path, what: str, argv: List[str], resume_argv, check) -> None:
    """Run ``argv`` once uninterrupted, then once per spread kill point (SIGKILL at that
    event), resume each with ``resume_argv(out)`` and ``check(ref, out, event)``."""
    t0 = time.time()
    ref = tmp_path / "ref"
    events = fork_server.run([*argv, "--out", str(ref)], ref)["events"]
    points = _spread(len(events), int(os.environ.get("OSEP_NAS_KILL_POINTS", "22")))
    for k in points:
        out = tmp_path / f"k{k}"
        res = fork_server.run([*argv, "--out", str(out)], out, kill_at=k)
        assert res["killed"], f"kill point {k} ({events[k - 1]}) was never reached:\n{res['log']}"
        if (out / "last.pt").exists():
            assert load_checkpoint(out / "last.pt")["epoch"] in (1, 2, 3)  # whole, whatever the moment
        fork_server.run(resume_argv(out), out)
        check(ref, out, f"kill point {k} ({events[k - 1]})")
        assert not list(out.glob(".osep-nas.lock"))  # the resumed run took over and released the lock
    hit = [events[k - 1] for k in points]
    print(f"\nkill -9 anywhere ({what}): {len(points)} kill points of {len(events)} events, each resumed to the "
          f"uninterrupted run, in {time.time() - t0:.0f} s: {'; '.join(hit)}")
    assert len(points) >= 20


@pytest.mark.slow
def test_fault_kill_anywhere_train_resumes_to_the_uninterrupted_run(fork_server, tmp_path):
    """SIGKILL `osep-nas train` at EVERY event of its run (each rename before and after,
    each torn metrics line and lock write, each half-written checkpoint, mid-epoch steps),
    one fresh run per kill point; each then resumes (taking over the stale lock) and ends
    bit-identical to the uninterrupted run."""
    _kill_anywhere(fork_server, tmp_path, "train", TRAIN_K, _train_argv,
                   lambda ref, out, _point: assert_same_training(ref, out))


@pytest.mark.slow
def test_fault_kill_anywhere_search_resumes_to_the_uninterrupted_search(fork_server, tmp_path):
    """SIGKILL `osep-nas search` at 20+ spread events (config and state renames, torn
    trials.jsonl lines, report files), one fresh run per kill point; each then resumes (or,
    killed before its first state, starts over) and ends with the uninterrupted jobs and front."""
    def resume(out: Path) -> List[str]:
        return [*SEARCH, "--out", str(out), *(["--resume"] if (out / "state.json").exists() else [])]

    def check(ref: Path, out: Path, point: str) -> None:
        assert _records(out) == _records(ref), point
        assert (out / "pareto.yaml").read_text() == (ref / "pareto.yaml").read_text()
        assert not list(out.glob(".*.tmp"))

    _kill_anywhere(fork_server, tmp_path, "search", SEARCH, resume, check)


STUDY_RECIPE = """\
model: {name: resnet20, width_mult: 0.25}
data: {dataset: digits, image_size: 8, padding: 1, batch_size: 32, test_fraction: 0.05}
optim: {lr: 0.05, schedule: exponential, gamma: 0.7}
training: {epochs: 2, tensorboard: false, device: cpu, max_steps_per_epoch: 2}
"""
STUDY = """\
study:
  name: tiny
  recipe: recipe.yaml
  seeds: [0]
  runs:
    a: {model: resnet20}
    b: {model: resnet20, gamma: 2, set: ["model.width_mult=0.125"]}
"""


def _study_rows(out: Path) -> List[dict]:
    import csv

    with open(out / "results.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_fault_kill_anywhere_study_resumes_to_the_uninterrupted_study(fork_server, tmp_path):
    """SIGKILL `osep-nas study` at spread events of its two training runs and of its results
    (CSV, table, plots); re-running the study then ends with the uninterrupted study's
    results and checkpoints."""
    t0 = time.time()
    (tmp_path / "recipe.yaml").write_text(STUDY_RECIPE)
    (tmp_path / "study.yaml").write_text(STUDY)
    argv = ["study", str(tmp_path / "study.yaml"), "--out"]
    ref = tmp_path / "ref"
    events = fork_server.run([*argv, str(ref)], ref)["events"]
    n = len(events)
    # spread over the two runs, plus the results files at the end
    points = sorted(set(_spread(n - 6, 17)) | {n - 5, n - 3, n - 1})
    for k in points:
        out = tmp_path / f"k{k}"
        assert fork_server.run([*argv, str(out)], out, kill_at=k)["killed"], events[k - 1]
        fork_server.run([*argv, str(out)], out)
        assert _study_rows(out) == _study_rows(ref)
        for run in ("a", "b"):
            a, b = load_checkpoint(ref / run / "seed0" / "last.pt"), load_checkpoint(out / run / "seed0" / "last.pt")
            assert a["epoch"] == b["epoch"] == 2
            for key in a["model"]:
                assert torch.equal(a["model"][key], b["model"][key]), (k, run, key)
    print(f"\nkill -9 anywhere (study): {len(points)} kill points of {n} events, each resumed to the uninterrupted "
          f"study, in {time.time() - t0:.0f} s")
    assert len(points) >= 20
