"""The trainer on the embedded digits with a small stand-in model (no dependency on the
networks): learning, logs, checkpoints, exact resume, input errors, the CLI."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from osep_nas.checkpoint import load_checkpoint
from osep_nas.cli import main
from osep_nas.config import load_config
from osep_nas.train import LRSchedule, train

METRIC_KEYS = {"epoch", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr", "images_per_s",
               "data_time_share", "epoch_time_s", "drop_path_prob"}
TIMING_KEYS = {"images_per_s", "data_time_share", "epoch_time_s"}


class Tiny(nn.Module):
    """A stand-in with the DARTS conventions: (logits, logits_aux) in training mode,
    ``drop_path_prob`` set by the trainer, dropout so RNG state matters."""

    def __init__(self, num_classes: int = 10, aux: bool = True):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(0.1)
        self.classifier = nn.Linear(32, num_classes)
        self.auxiliary_head = nn.Linear(32, num_classes) if aux else None
        self.drop_path_prob = 0.0
        self.seen_drop_path = []

    def forward(self, x):
        if self.training and (not self.seen_drop_path or self.seen_drop_path[-1] != self.drop_path_prob):
            self.seen_drop_path.append(self.drop_path_prob)
        h = self.features(x)
        logits = self.classifier(self.drop(h))
        if self.training and self.auxiliary_head is not None:
            return logits, self.auxiliary_head(h)
        return logits


def tiny_builder(cfg, info):
    return Tiny(info["num_classes"])


def digits_config(out: Path, **training) -> dict:
    return {
        "data": {"dataset": "digits", "image_size": 8, "padding": 1, "batch_size": 32, "cutout": 2,
                 "color_jitter": 0.2},
        "optim": {"lr": 0.05, "weight_decay": 1e-4, "grad_clip": 5.0, "label_smoothing": 0.1},
        "model": {"drop_path_prob": 0.3},
        "training": {"epochs": 2, "out": str(out), "tensorboard": False, "seed": 1, **training},
    }


pytestmark = pytest.mark.usefixtures("one_thread")


def read_metrics(out: Path):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_trains_on_digits_and_logs(tmp_path):
    out = tmp_path / "run"
    summary = train(digits_config(out, tensorboard=True), model_builder=tiny_builder)
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(set(r) == METRIC_KEYS for r in rows)
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert rows[1]["test_top1"] > 25.0  # chance is 10 %
    assert 0 <= rows[0]["data_time_share"] <= 1 and rows[0]["images_per_s"] > 0
    assert rows[0]["lr"] == 0.05 and math.isclose(rows[1]["lr"], 0.025)  # cosine over 2 epochs
    assert summary["completed"] and summary["epochs_done"] == 2 and summary["final"]["epoch"] == 2
    assert summary["best_top1"] == max(r["test_top1"] for r in rows)
    assert summary["params"] == sum(p.numel() for n, p in Tiny().named_parameters() if "auxiliary" not in n)
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == summary["best_epoch"]
    assert load_config(out / "config.yaml").training.epochs == 2
    assert list((out / "tb").glob("events.out.tfevents.*"))
    ck = load_checkpoint(out / "last.pt", required=("model", "optimizer", "scheduler", "rng", "epoch"))
    assert ck["epoch"] == 2 and ck["config"]["training"]["epochs"] == 2 and ck["loader"] == {"seed": 1, "epoch": 1}
    assert load_checkpoint(out / "best.pt")["best_epoch"] == summary["best_epoch"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_drop_path_ramp_and_aux_output(tmp_path):
    model = Tiny()
    train(digits_config(tmp_path / "r", epochs=3, max_steps_per_epoch=2), model_builder=lambda c, i: model)
    # 0.3 * (epoch + step / steps) / epochs: DARTS' per-epoch line, sampled per step
    assert model.seen_drop_path == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert read_metrics(tmp_path / "r")[-1]["drop_path_prob"] == pytest.approx(0.25)
    one = Tiny()  # a one-epoch run uses drop path too
    train(digits_config(tmp_path / "one", epochs=1, max_steps_per_epoch=3), model_builder=lambda c, i: one)
    assert one.seen_drop_path == pytest.approx([0.0, 0.1, 0.2])
    # a plain-tensor model (no aux, no drop_path_prob) trains too
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    s = train(digits_config(tmp_path / "p", epochs=1, max_steps_per_epoch=3), model_builder=lambda c, i: plain)
    assert s["completed"] and s["final"]["train_top1"] is not None


def _weights(path: Path):
    ck = load_checkpoint(path, required=("model", "optimizer", "rng"))
    return ck


def test_resume_is_bit_exact(tmp_path):
    base = digits_config(tmp_path / "x", epochs=3)
    base["optim"].update(schedule="exponential", gamma=0.7, step_epochs=0.5)  # lr changes inside epochs
    full = dict(base, training=dict(base["training"], out=str(tmp_path / "full")))
    parted = dict(base, training=dict(base["training"], out=str(tmp_path / "parted")))
    train(full, model_builder=tiny_builder)
    s = train(parted, model_builder=tiny_builder, stop_after=2)
    assert s["epochs_done"] == 2 and not s["completed"]
    wall_at_checkpoint = load_checkpoint(tmp_path / "parted" / "last.pt")["wall_s"]
    assert 0 < wall_at_checkpoint <= s["wall_s"] == s["session_wall_s"]
    # what a kill between the metrics line and the checkpoint of epoch 3 leaves behind
    with open(tmp_path / "parted" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 3, "train_loss": 9.9}) + "\n" + '{"epoch": 4, "trai')
    resumed = dict(parted, training=dict(parted["training"], resume=True))
    s = train(resumed, model_builder=tiny_builder)
    assert s["resumed_from"] == 2 and s["completed"]
    # the summary's time covers both runs: the first up to its checkpoint, then this one
    assert s["wall_s"] == pytest.approx(wall_at_checkpoint + s["session_wall_s"], abs=2e-3)
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "parted" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid, st in a["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    ra, rb = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "parted")
    assert [r["epoch"] for r in rb] == [1, 2, 3]
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMING_KEYS}  # noqa: E731
    assert [strip(r) for r in ra] == [strip(r) for r in rb]
    # resuming a finished run does nothing and says so
    again = train(resumed, model_builder=tiny_builder)
    assert again["epochs_done"] == 3 and again["resumed_from"] == 3 and len(read_metrics(tmp_path / "parted")) == 3
    # a checkpoint from before the time was kept: the whole time is unknown, not this run's alone
    ck = load_checkpoint(tmp_path / "parted" / "last.pt")
    del ck["wall_s"]
    torch.save(ck, tmp_path / "parted" / "last.pt")
    old = train(resumed, model_builder=tiny_builder)
    assert old["wall_s"] is None and old["session_wall_s"] > 0


def _snapshot(folder: Path):
    if not folder.exists():
        return None
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "negative_epochs", "missing_data", "out_is_file",
                                  "out_exists", "resume_missing", "corrupt_checkpoint", "other_model",
                                  "bad_builder"])
def test_bad_input_fails_before_out_is_touched(tmp_path, case):
    out = tmp_path / "out"
    cfg = digits_config(out, epochs=1, max_steps_per_epoch=1)
    builder = tiny_builder
    expect = ValueError
    if case == "unknown_key":
        cfg["training"]["epoch"] = 3
    elif case == "wrong_type":
        cfg["optim"]["lr"] = "fast"
    elif case == "negative_epochs":
        cfg["training"]["epochs"] = -1
    elif case == "missing_data":
        cfg["data"] = {"dataset": "cifar10", "root": str(tmp_path / "no_cifar")}
        expect = FileNotFoundError
    elif case == "out_is_file":
        out.write_text("x")
    elif case == "out_exists":
        train(digits_config(out, epochs=1, max_steps_per_epoch=1), model_builder=tiny_builder)
    elif case == "resume_missing":
        cfg["training"]["resume"] = True
        expect = FileNotFoundError
    elif case == "corrupt_checkpoint":
        train(digits_config(out, epochs=1, max_steps_per_epoch=1), model_builder=tiny_builder)
        data = (out / "last.pt").read_bytes()
        (out / "last.pt").write_bytes(data[: len(data) // 3])
        cfg["training"].update(resume=True, epochs=2)
    elif case == "other_model":
        train(digits_config(out, epochs=1, max_steps_per_epoch=1), model_builder=tiny_builder)
        cfg["training"].update(resume=True, epochs=2)
        builder = lambda c, i: Tiny(i["num_classes"], aux=False)  # noqa: E731
    elif case == "bad_builder":
        builder = lambda c, i: "not a model"  # noqa: E731
    before = _snapshot(out) if out.is_dir() else None
    with pytest.raises(expect) as e:
        train(cfg, model_builder=builder)
    msg = str(e.value)
    assert "\n" not in msg
    if case == "other_model":
        assert "unexpected key 'auxiliary_head.weight'" in msg
    if case == "corrupt_checkpoint":
        assert "last.pt" in msg and "truncated or corrupt" in msg
    if case == "out_exists":
        assert "already holds a training run" in msg
    if case == "out_is_file":
        assert out.read_text() == "x"
    else:
        assert _snapshot(out) == before  # nothing created or changed


def test_lr_schedules():
    def sched(**optim):
        return LRSchedule(load_config({"optim": optim}).optim, 10)

    cos = sched(lr=0.1, schedule="cosine")
    assert cos.lr_at(0) == 0.1 and cos.lr_at(0.99) == 0.1 and math.isclose(cos.lr_at(5), 0.05)
    lin = sched(lr=0.5, schedule="linear")
    assert math.isclose(lin.lr_at(1.5), 0.45) and math.isclose(lin.lr_at(9), 0.05)
    step = sched(lr=0.1, schedule="step", milestones=[0.5, 0.8])  # epochs 5 and 8 of 10
    assert [round(step.lr_at(e), 6) for e in (0, 4.99, 5, 7, 8, 9.5)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    # the ResNet recipe's milestones land on epochs 100 / 150 of 200 and scale with the run's length
    recipe = load_config({"optim": {"lr": 0.1, "schedule": "step", "milestones": [0.5, 0.75]}}).optim
    for epochs, first, second in ((200, 100, 150), (3, 1.5, 2.25)):
        s = LRSchedule(recipe, epochs)
        lrs = [round(s.lr_at(t), 6) for t in (first - 0.01, first, second - 0.01, second)]
        assert lrs == [0.1, 0.01, 0.01, 0.001]
    exp = sched(lr=0.064, schedule="exponential", gamma=0.973, step_epochs=0.8)
    assert exp.lr_at(0.79) == 0.064 and math.isclose(exp.lr_at(0.8), 0.064 * 0.973)
    assert math.isclose(exp.lr_at(4.0), 0.064 * 0.973 ** 5)


def test_cli_train(tmp_path, monkeypatch, capsys):
    import osep_nas.train as T

    monkeypatch.setattr(T, "build_model", tiny_builder)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  image_size: 8\n  padding: 1\n  batch_size: 64\ntraining:\n  tensorboard: false\n")
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--set", "max_steps_per_epoch=2", "--epochs", "1", "--out", str(out),
               "--quiet"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["epochs_done"] == 1 and printed["out"] == str(out)
    # --resume without --config reuses OUT/config.yaml
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2]
    for argv, text in [
        (["train", "--set", "optim.lr=fast"], "optim.lr: expected a number, got 'fast'"),
        (["train", "--config", str(tmp_path / "none.yaml")], "config file not found"),
        (["train", "--epochs", "-2", "--out", str(tmp_path / "o2")], "training.epochs: must be > 0, got -2"),
        (["train", "--set", "trainig.epochs=3"], "did you mean"),
        (["train", "--dataset", "cifar10", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "o3")],
         "CIFAR-10 data folder not found"),
        (["train", "--out", str(out), "--quiet"], "already holds a training run"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("osep-nas train: error:") and text in err[0], err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


SCRIPT = r"""
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_train import Tiny, digits_config
from osep_nas.train import train
cfg = digits_config(sys.argv[1], epochs=4)
cfg["training"]["resume"] = sys.argv[2] == "resume"
train(cfg, model_builder=lambda c, i: Tiny(i["num_classes"]))
"""


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    py = sys.executable
    subprocess.run([py, str(script), str(tmp_path / "full"), "fresh"], check=True, env=env, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([py, str(script), str(killed), "fresh"], env=env)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            m = killed / "metrics.jsonl"
            if m.exists() and len(m.read_text().splitlines()) >= 2:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = load_checkpoint(killed / "last.pt")["epoch"]
    assert done in (1, 2, 3)
    subprocess.run([py, str(script), str(killed), "resume"], check=True, env=env, timeout=300)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["epoch"] for r in read_metrics(killed)] == [1, 2, 3, 4]


DDP_SCRIPT = r"""
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_train import Tiny, digits_config
from osep_nas.train import train
out, mode, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = digits_config(out, epochs=3)
cfg["training"]["resume"] = mode == "resume"
train(cfg, model_builder=lambda c, i: Tiny(i["num_classes"]), stop_after=stop or None)
"""


@pytest.mark.slow
def test_ddp_gloo_two_ranks_resume_exact(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"

    def torchrun(*args):
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), *args], check=True, env=env, timeout=300, capture_output=True)

    torchrun(str(tmp_path / "full"), "fresh", "0")
    torchrun(str(tmp_path / "parted"), "fresh", "2")
    torchrun(str(tmp_path / "parted"), "resume", "0")
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "parted" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and len(a["rng_per_rank"]) == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    rows = read_metrics(tmp_path / "full")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["test_top1"] > 25.0
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["completed"]
