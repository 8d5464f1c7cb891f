"""SyncBatchNorm on CPU (osep_nas.sync_batchnorm): plain BatchNorm2d without a process
group, unchanged state_dicts after conversion, and a 2-rank torchrun of the CLI trainer
whose step losses match one process stepping on the same global batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from osep_nas.cli import main
from osep_nas.models import create_model
from osep_nas.sync_batchnorm import SyncBatchNorm2d, convert_sync_batchnorm


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(**kw):
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(6, **kw)
    if ref.affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
    sync = SyncBatchNorm2d(6, **kw)
    sync.load_state_dict(ref.state_dict())
    return ref, sync


@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
                                {"eps": 1e-3, "momentum": 0.3}])
def test_equals_batchnorm2d_without_process_group(kw):
    assert not dist.is_initialized()
    ref, sync = _pair(**kw)
    for step in range(3):
        for m in (ref, sync):
            m.train(step < 2)
        x = torch.randn(5, 6, 4, 3) * 2 + 1
        g = torch.randn(5, 6, 4, 3)
        xr, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, ys = ref(xr), sync(xs)
        assert torch.equal(yr, ys)
        (yr * g).sum().backward()
        (ys * g).sum().backward()
        assert torch.equal(xr.grad, xs.grad)
        for (name, a), b in zip(ref.named_parameters(), sync.parameters()):
            assert torch.equal(a.grad, b.grad), name
        for (name, a), b in zip(ref.named_buffers(), sync.buffers()):
            assert torch.equal(a, b), name


def test_sync_math_in_a_one_rank_group(tmp_path):
    """The synchronized path itself (normally taken with >1 rank) against BatchNorm2d."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        for momentum in (0.1, None):
            ref, sync = _pair(momentum=momentum)
            for _ in range(3):
                x = torch.randn(7, 6, 5, 5) * 3 + 2
                xr, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
                yr, ys = ref(xr), sync._sync_forward(xs)
                torch.testing.assert_close(ys, yr, rtol=1e-5, atol=1e-5)
                yr.square().sum().backward()
                ys.square().sum().backward()
                torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(sync.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(sync.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(sync.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(sync.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
            assert int(sync.num_batches_tracked) == int(ref.num_batches_tracked) == 3
        assert sync(x).shape == x.shape  # world size 1: the plain path
    finally:
        dist.destroy_process_group()


def test_convert_keeps_state_dict_and_parameters():
    torch.manual_seed(0)
    model = create_model("resnet20", width_mult=0.25)
    model.train()
    model(torch.randn(4, 3, 8, 8))  # non-default running stats
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 8, 8)
    y = model(x)
    converted = convert_sync_batchnorm(model)
    assert converted is model
    assert sum(type(m) is SyncBatchNorm2d for m in model.modules()) == n_bn > 0
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert all(a is b for a, b in zip(model.parameters(), params))  # an optimizer built before still works
    assert not model.training and torch.equal(model(x), y)
    plain = create_model("resnet20", width_mult=0.25)
    plain.load_state_dict(after)  # checkpoints load either way (strict)
    model.load_state_dict(plain.state_dict())

    bn = nn.BatchNorm2d(3, eps=1e-3, momentum=None, affine=False, track_running_stats=False)
    single = convert_sync_batchnorm(bn)
    assert type(single) is SyncBatchNorm2d and single is not bn
    assert (single.eps, single.momentum, single.affine, single.track_running_stats) == (1e-3, None, False, False)
    assert single.running_mean is None and list(single.state_dict()) == list(bn.state_dict()) == []


def test_log_steps_lines_and_resume(tmp_path):
    """training.log_steps: one line per log_every steps (and each epoch's last step); their
    mean is the epoch's train_loss; a resume keeps exactly the checkpointed epochs' lines."""
    from osep_nas.train import train

    out = tmp_path / "run"
    cfg = {"model": {"name": "resnet20", "width_mult": 0.25},
           "data": {"dataset": "digits", "image_size": 8, "batch_size": 16},
           "training": {"epochs": 2, "out": str(out), "tensorboard": False, "device": "cpu",
                        "max_steps_per_epoch": 3, "log_steps": True, "log_every": 2}}
    train(cfg, stop_after=1)
    with open(out / "steps.jsonl", "a") as fh:  # as if killed in epoch 2 after its first line
        fh.write(json.dumps({"epoch": 2, "step": 2, "loss": 9.0, "lr": 0.0}) + "\n")
    train({**cfg, "training": {**cfg["training"], "resume": True}})
    steps = _steps(out)
    assert [(r["epoch"], r["step"]) for r in steps] == [(1, 2), (1, 3), (2, 2), (2, 3)]
    assert steps[2]["loss"] != 9.0 and all(set(r) == {"epoch", "step", "loss", "lr"} for r in steps)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["lr"] == steps[0]["lr"]
    # log_every 1 gives every step; the steps' mean loss is the epoch's train_loss
    every = tmp_path / "every"
    train({**cfg, "training": {**cfg["training"], "out": str(every), "epochs": 1, "log_every": 1}})
    losses = [r["loss"] for r in _steps(every)]
    first = json.loads((every / "metrics.jsonl").read_text().splitlines()[0])
    assert len(losses) == 3 and abs(sum(losses) / 3 - first["train_loss"]) < 1e-5


# ----------------------------------------------------------------------------- torchrun

BATCH = 32
TRAIN_ARGS = ["train", "--model", "resnet20", "--dataset", "digits", "--device", "cpu", "--quiet",
              "--set", "model.width_mult=0.5", "--set", "data.image_size=8", "--set", f"data.batch_size={BATCH}",
              # no random augmentation (crop/flip/cutout/jitter), no drop path, no dropout in resnet20
              "--set", "data.crop=none", "--set", "data.flip=false", "--set", "data.cutout=0",
              "--set", "data.color_jitter=0", "--set", "model.drop_path_prob=0",
              # every BN scale at 1, so the batch statistics shape the loss from the first step
              "--set", "model.extra={zero_init_residual: false}",
              "--set", "training.max_steps_per_epoch=3", "--set", "training.log_steps=true",
              "--set", "training.log_every=1", "--set", "training.tensorboard=false", "--set", "training.seed=3"]


def _torchrun(out: Path, *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "osep_nas.cli", *TRAIN_ARGS, "--out", str(out), *extra],
                          env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _steps(out: Path):
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_gloo_sync_bn_matches_one_process(tmp_path):
    """2 ranks x 16 images with SyncBatchNorm == 1 process x 32 images: every rank takes its
    half of the same global batch (osep_nas.data.rank_batches), DDP averages the halves'
    gradients, and the synchronized statistics are those of the whole batch."""
    ddp = tmp_path / "ddp"
    _torchrun(ddp, "--epochs", "2", "--set", "training.sync_bn=true")
    metrics = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1, 2]
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["completed"]
    steps = _steps(ddp)
    assert [(r["epoch"], r["step"]) for r in steps] == [(e, s) for e in (1, 2) for s in (1, 2, 3)]

    single = tmp_path / "single"
    assert main([*TRAIN_ARGS, "--epochs", "2", "--set", "training.sync_bn=true", "--out", str(single)]) == 0
    ddp_loss = [r["loss"] for r in steps[:3]]
    one_loss = [r["loss"] for r in _steps(single)[:3]]
    print("2 ranks, SyncBN:", ddp_loss, "\n1 process:      ", one_loss)
    assert max(abs(a - b) for a, b in zip(ddp_loss, one_loss)) < 1e-4

    # the comparison has teeth: per-rank BatchNorm statistics give other losses
    plain = tmp_path / "plain"
    _torchrun(plain, "--epochs", "1", "--set", "training.max_steps_per_epoch=1")
    plain_loss = _steps(plain)[0]["loss"]
    print("2 ranks, no SyncBN, step 1:", plain_loss)
    assert abs(plain_loss - one_loss[0]) > 1e-3
