"""Checkpoints: atomic saves, weights_only loads, RNG capture, clear errors."""
from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from osep_nas.checkpoint import (capture_rng_state, check_state_dict, load_checkpoint, load_model_state,
                                 restore_rng_state, save_checkpoint)


def net(width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.Flatten(), nn.Linear(width * 4, 2))


def full_state(model: nn.Module) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 4, 4)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": {"schedule": "cosine"},
            "rng": capture_rng_state(), "epoch": 3, "best_top1": 91.5, "config": {"optim": {"lr": 0.1}},
            "genotype": "Genotype(...)", "loader": {"seed": 0, "epoch": 3}, "scaler": {}}


def test_round_trip(tmp_path):
    model = net()
    state = full_state(model)
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left
    got = load_checkpoint(path, required=("model", "optimizer", "rng", "epoch"))
    assert got["epoch"] == 3 and got["best_top1"] == 91.5 and got["format"] == "osep-nas-checkpoint"
    assert got["config"] == {"optim": {"lr": 0.1}} and got["genotype"] == "Genotype(...)"
    other = net()
    load_model_state(other, got["model"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    opt.load_state_dict(got["optimizer"])
    assert torch.equal(opt.state_dict()["state"][0]["momentum_buffer"],
                       state["optimizer"]["state"][0]["momentum_buffer"])


def test_rng_states_restore_exactly(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1), np.random.randn()  # numpy's cached gaussian too
    saved = capture_rng_state()
    expect = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    save_checkpoint(tmp_path / "r.pt", {"model": {}, "rng": saved})
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == expect
    with pytest.raises(ValueError, match="rng state is malformed"):
        restore_rng_state({"python": {}})


def test_unloadable_state_is_refused_before_writing(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "epoch": 1})
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"state\.extra: a object cannot be loaded with weights_only"):
        save_checkpoint(path, {"model": {}, "extra": object()})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_and_hostile_files(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, full_state(net()))
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "random.pt": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "text.pt": b"hello, I am not a checkpoint\n",
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError) as e:
            load_checkpoint(tmp_path / name)
        assert name in str(e.value) and ("truncated or corrupt" in str(e.value) or "corrupt" in str(e.value))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt: empty checkpoint file"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    # a pickle carrying code: refused, and the code does not run
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "x": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt: refused"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(ValueError, match="raw.pkl"):
        load_checkpoint(tmp_path / "raw.pkl")
    assert not marker.exists()
    # valid torch files that are not our checkpoints
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt: not an osep-nas checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="partial.pt: checkpoint lacks optimizer, rng"):
        load_checkpoint(tmp_path / "partial.pt", required=("model", "optimizer", "rng"))


def test_state_dict_of_another_model(tmp_path):
    save_checkpoint(tmp_path / "a.pt", {"model": net(4).state_dict()})
    sd = load_checkpoint(tmp_path / "a.pt")["model"]
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 3, 3, 3\), the model expects \(8, 3, 3, 3\)"):
        load_model_state(net(8), sd, "a.pt")
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="a.pt: does not fit this model: missing key '2.weight'"):
        load_model_state(other, sd, "a.pt")
    bigger = dict(sd, extra_head=torch.zeros(1))
    with pytest.raises(ValueError, match="unexpected key 'extra_head'"):
        check_state_dict(net(4), bigger)
    # DDP-saved keys ("module.") load into the bare model
    m = net(4)
    load_model_state(m, {f"module.{k}": v for k, v in sd.items()})
    assert torch.equal(m.state_dict()["0.weight"], sd["0.weight"])
