"""Datasets and loaders: the CIFAR reader on the real subset, safe unpickling, digits,
batched augmentation, sharding, ImageFolder."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from osep_nas.config import load_config
from osep_nas.data import (BatchTransform, TensorBatchLoader, build_loaders, load_cifar, load_digits_tensors,
                           rank_batches, read_cifar_batch, safe_unpickle)

CIFAR_SUBSET = Path(__file__).resolve().parents[2] / "shared/data/cifar-10-batches-py"
needs_subset = pytest.mark.skipif(not CIFAR_SUBSET.is_dir(),
                                  reason=f"real CIFAR-10 subset absent: {CIFAR_SUBSET} (../shared beside the repo)")


def make_cifar(folder: Path, n: int = 12, classes: int = 10, names=None, protocol: int = 2,
               label_key: str = "labels") -> Path:
    """A tiny folder in the official python layout (random pixels, valid labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = names or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        d = {"batch_label": name, label_key: [int(v) for v in rng.integers(0, classes, n)],
             "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{j}.png" for j in range(n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(d, fh, protocol=protocol)
    return folder


# ----------------------------------------------------------------------------- real subset

@needs_subset
def test_real_cifar10_subset_counts():
    manifest = json.loads((CIFAR_SUBSET / "MANIFEST.json").read_text())
    tx, ty, vx, vy, names = load_cifar(CIFAR_SUBSET, "cifar10")
    assert tx.shape == (5085, 3, 32, 32) and tx.dtype == torch.uint8
    assert vx.shape == (1017, 3, 32, 32) and len(vy) == 1017 and len(ty) == 5085
    train_counts = np.sum([manifest[f"data_batch_{i}"]["class_counts"] for i in range(1, 6)], axis=0)
    assert torch.bincount(ty, minlength=10).tolist() == train_counts.tolist()
    assert torch.bincount(vy, minlength=10).tolist() == manifest["test_batch"]["class_counts"]
    assert names[:3] == ["airplane", "automobile", "bird"]
    # the first batch read alone matches its manifest entry
    x, y = read_cifar_batch(CIFAR_SUBSET / "data_batch_1")
    assert len(y) == manifest["data_batch_1"]["images"]
    assert np.bincount(y, minlength=10).tolist() == manifest["data_batch_1"]["class_counts"]


@needs_subset
def test_real_subset_loaders_from_parent_or_folder():
    for root in (CIFAR_SUBSET, CIFAR_SUBSET.parent):
        cfg = load_config({"data": {"dataset": "cifar10", "root": str(root), "batch_size": 256, "cutout": 16}})
        train, test, info = build_loaders(cfg)
        assert (info["num_classes"], info["train_size"], info["test_size"]) == (10, 5085, 1017)
        assert info["input_size"] == (3, 32, 32)
        assert len(train) == 20 and len(test) == 4  # ceil(5085/256), ceil(1017/256)
        x, y = next(iter(test))
        assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32
        # normalized with the CIFAR statistics: roughly zero mean, unit std
        assert abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3


# ----------------------------------------------------------------------------- safe unpickling

class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    folder = make_cifar(tmp_path / "c10")
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({"data": _Evil(marker), "labels": [0]}, fh, protocol=2)
    with pytest.raises(ValueError) as e:
        safe_unpickle(folder / "data_batch_3")
    assert "data_batch_3" in str(e.value) and "system is not allowed" in str(e.value)
    with pytest.raises(ValueError, match="data_batch_3.*refused"):
        load_cifar(folder, "cifar10")
    assert not marker.exists()
    # builtins are refused too, whatever the protocol
    for proto in (0, 2, 4, 5):
        p = tmp_path / f"eval{proto}"
        p.write_bytes(pickle.dumps({"x": _Evil(marker)}, protocol=proto))
        with pytest.raises(ValueError, match="not allowed"):
            safe_unpickle(p)
    assert not marker.exists()


def test_numpy_pickles_of_any_protocol_load(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 12)
    for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
        p = tmp_path / f"a{proto}"
        p.write_bytes(pickle.dumps({"data": arr, "labels": [1, 2]}, protocol=proto))
        got = safe_unpickle(p)
        assert np.array_equal(got["data"], arr) and got["labels"] == [1, 2]


@pytest.mark.parametrize("problem,text", [
    ("truncated", "corrupt or truncated"),
    ("random", "corrupt or truncated"),
    ("shape", "expected uint8 rows of 3072"),
    ("dtype", "expected uint8 rows of 3072"),
    ("labels_range", "label 10 out of range 0..9"),
    ("labels_len", "12 images but 11 labels"),
    ("keys", "needs keys 'data' and 'labels'"),
    ("not_dict", "expected a dict"),
])
def test_corrupt_batches_name_file_and_problem(tmp_path, problem, text):
    folder = make_cifar(tmp_path / "c10")
    target = folder / "data_batch_2"
    good = pickle.loads(target.read_bytes())
    if problem == "truncated":
        target.write_bytes(target.read_bytes()[:500])
    elif problem == "random":
        target.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    else:
        d = dict(good)
        if problem == "shape":
            d["data"] = np.zeros((12, 3000), np.uint8)
        elif problem == "dtype":
            d["data"] = np.zeros((12, 3072), np.float32)
        elif problem == "labels_range":
            d["labels"] = [10] + d["labels"][1:]
        elif problem == "labels_len":
            d["labels"] = d["labels"][:-1]
        elif problem == "keys":
            d.pop("labels")
        elif problem == "not_dict":
            d = [1, 2, 3]
        target.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(ValueError) as e:
        load_cifar(folder, "cifar10")
    assert "data_batch_2" in str(e.value) and text in str(e.value), str(e.value)


def test_cifar_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10 data folder not found: .*nowhere"):
        load_cifar(tmp_path / "nowhere", "cifar10")
    with pytest.raises(FileNotFoundError, match="data.root is not set"):
        load_cifar(None, "cifar10")
    folder = make_cifar(tmp_path / "c10")
    (folder / "data_batch_4").unlink()
    with pytest.raises(ValueError, match="not a CIFAR-10 python-batches folder, missing data_batch_4"):
        load_cifar(folder, "cifar10")
    with pytest.raises(FileNotFoundError):
        build_loaders(load_config({"data": {"dataset": "cifar10", "root": str(tmp_path / "nowhere")}}))


def test_cifar_official_py2_style_and_cifar100(tmp_path):
    # a synthetic CIFAR-100 folder in its official sub-folder name, found from the parent
    make_cifar(tmp_path / "cifar-100-python", n=30, classes=100, names=["train", "test"], label_key="fine_labels")
    tx, ty, vx, vy, names = load_cifar(tmp_path, "cifar100")
    assert tx.shape == (30, 3, 32, 32) and len(names) == 100 and int(ty.max()) < 100
    # bytes keys (what encoding="bytes" readers of the py2 files see) are accepted
    folder = make_cifar(tmp_path / "c10b")
    d = pickle.loads((folder / "test_batch").read_bytes())
    (folder / "test_batch").write_bytes(pickle.dumps({k.encode(): v for k, v in d.items()}, protocol=2))
    x, y = read_cifar_batch(folder / "test_batch")
    assert x.shape == (12, 3, 32, 32) and y.tolist() == d["labels"]
    # pixel layout: row = R plane, G plane, B plane, each 32x32 row-major
    assert np.array_equal(x[0, 1, 2, 3], d["data"][0][1024 + 2 * 32 + 3])


# ----------------------------------------------------------------------------- digits

def test_digits_shapes_and_split():
    tx, ty, vx, vy = load_digits_tensors(32, 0.2)
    assert tx.shape == (1437, 3, 32, 32) and vx.shape == (360, 3, 32, 32)
    assert len(ty) + len(vy) == 1797
    assert float(tx.min()) >= 0.0 and float(tx.max()) <= 1.0
    assert torch.equal(tx[:, 0], tx[:, 2])  # gray digits as RGB
    assert torch.bincount(vy, minlength=10).min() >= 35  # stratified: about 36 per class
    tx8, ty8, vx8, vy8 = load_digits_tensors(8, 0.2)
    assert tx8.shape == (1437, 3, 8, 8) and torch.equal(ty8, ty) and torch.equal(vy8, vy)
    # the split does not depend on the training seed
    _, _, a = build_loaders(load_config({"data": {"image_size": 8}, "training": {"seed": 1}}))
    tr2, te2, b = build_loaders(load_config({"data": {"image_size": 8}, "training": {"seed": 7}}))
    assert (a["train_size"], a["test_size"]) == (b["train_size"], b["test_size"]) == (1437, 360)
    assert torch.equal(te2.labels, vy8)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_tensors(8, 0.001)


# ----------------------------------------------------------------------------- augmentation

def _batch(n: int = 16, size: int = 12) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))


def test_augmentation_is_seeded():
    x = _batch()
    tf = BatchTransform(crop="resized", size=12, flip=True, color_jitter=0.4, mean=(0.5,) * 3, std=(0.25,) * 3,
                        cutout=4)
    a = tf(x, torch.Generator().manual_seed(3))
    b = tf(x, torch.Generator().manual_seed(3))
    c = tf(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pad_crop_flip_cutout_values():
    x = _batch()
    out = BatchTransform(crop="pad", padding=2)(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    oy = torch.randint(0, 5, (16,), generator=g)
    ox = torch.randint(0, 5, (16,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    ref = torch.stack([padded[i, :, oy[i]:oy[i] + 12, ox[i]:ox[i] + 12] for i in range(16)])
    assert torch.equal(out, ref)
    flipped = BatchTransform(flip=True)(x, torch.Generator().manual_seed(0))
    for i in range(16):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    assert any(not torch.equal(flipped[i], x[i]) for i in range(16))
    cut = BatchTransform(cutout=4)(x + 1.0, torch.Generator().manual_seed(0))  # +1: no natural zeros
    zeros = (cut == 0).all(dim=1).sum(dim=(1, 2))
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the border


def test_resized_crop_and_jitter_ranges():
    x = _batch(32, 16)
    out = BatchTransform(crop="resized", size=8)(x, torch.Generator().manual_seed(0))
    assert out.shape == (32, 3, 8, 8)
    assert float(out.min()) >= float(x.min()) - 1e-6 and float(out.max()) <= float(x.max()) + 1e-6
    j = BatchTransform(color_jitter=0.8)(x, torch.Generator().manual_seed(0))
    assert j.shape == x.shape and float(j.min()) >= 0.0 and float(j.max()) <= 1.0 and not torch.equal(j, x)
    norm = BatchTransform(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(x)
    assert torch.allclose(norm, x * 2 - 1)


def test_loader_epochs_are_seeded_and_cover_the_data():
    images = torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1).expand(50, 3, 2, 2).contiguous()
    labels = torch.arange(50)

    def epoch_batches(loader, epoch):
        loader.set_epoch(epoch)
        return [y.tolist() for _, y in loader]

    a = TensorBatchLoader(images, labels, 8, shuffle=True, seed=1)
    b = TensorBatchLoader(images, labels, 8, shuffle=True, seed=1)
    e0, e1 = epoch_batches(a, 0), epoch_batches(a, 1)
    assert e0 == epoch_batches(b, 0) and e1 == epoch_batches(b, 1) and e0 != e1
    assert sorted(sum(e0, [])) == list(range(50)) and len(e0) == len(a) == 7
    assert epoch_batches(TensorBatchLoader(images, labels, 8, shuffle=True, seed=2), 0) != e0
    # state is just (seed, epoch): a fresh loader given the state replays the epoch
    a.set_epoch(1)
    c = TensorBatchLoader(images, labels, 8, shuffle=True, seed=9)
    c.load_state_dict(a.state_dict())
    assert [y.tolist() for _, y in c] == e1
    # images and labels stay paired through the shuffle
    for x, y in TensorBatchLoader(images, labels, 8, shuffle=True, seed=1):
        assert torch.equal(x[:, 0, 0, 0].long(), y)
    # evaluation order is the dataset order
    assert sum(epoch_batches(TensorBatchLoader(images, labels, 8), 0), []) == list(range(50))


def test_distributed_shards_split_each_global_batch():
    n, bs = 103, 16
    single = rank_batches(n, bs, shuffle=True, seed=3, epoch=2)
    ranks = [rank_batches(n, bs, shuffle=True, seed=3, epoch=2, rank=r, world_size=3) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1  # every rank runs the same number of steps
    for k, glob in enumerate(single):
        parts = [r[k] for r in ranks]
        assert torch.equal(torch.cat(parts), glob)  # same global batch, split across ranks
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    # evaluation: contiguous disjoint shards covering the test set once
    ev = [torch.cat(rank_batches(n, bs, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert torch.equal(torch.cat(ev), torch.arange(n))
    # a last global batch smaller than the number of ranks is dropped
    assert len(rank_batches(17, 16, shuffle=True, rank=0, world_size=2)) == 1
    with pytest.raises(ValueError, match="smaller than the 4 ranks"):
        rank_batches(10, 2, shuffle=True, world_size=4)
    with pytest.raises(ValueError, match="global batch 2 is smaller than the 4 ranks"):
        build_loaders(load_config({"data": {"batch_size": 2, "image_size": 8}}), rank=0, world_size=4)
    train, test, info = build_loaders(load_config({"data": {"batch_size": 64, "image_size": 8}}), rank=1,
                                      world_size=2)
    x, y = next(iter(train))
    assert x.shape[0] == 32


def test_digits_loader_end_to_end():
    cfg = load_config({"data": {"batch_size": 100, "image_size": 8, "padding": 1, "cutout": 2},
                       "training": {"seed": 4}})
    train, test, info = build_loaders(cfg)
    assert info["num_classes"] == 10 and info["input_size"] == (3, 8, 8)
    assert len(train) == 15 and len(test) == 4
    train.set_epoch(0)
    first = [(x.clone(), y.clone()) for x, y in train]
    train2, _, _ = build_loaders(cfg)
    train2.set_epoch(0)
    again = list(train2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))


# ----------------------------------------------------------------------------- ImageNet folders

def test_imagefolder_loaders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            d = tmp_path / "imnet" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.png")
    cfg = load_config({"data": {"dataset": "imagenet", "root": str(tmp_path / "imnet"), "batch_size": 4,
                                "image_size": 32, "workers": 0, "color_jitter": 0.4, "cutout": 8}})
    train, test, info = build_loaders(cfg)
    assert (info["num_classes"], info["train_size"], info["test_size"]) == (2, 6, 6)
    assert info["classes"] == ["n01", "n02"]
    train.set_epoch(0)
    batches = list(train)
    assert [len(y) for _, y in batches] == [4, 2] and batches[0][0].shape == (4, 3, 32, 32)
    x, y = next(iter(test))
    assert x.shape == (4, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="ImageNet data folder not found"):
        build_loaders(load_config({"data": {"dataset": "imagenet", "root": str(tmp_path / "none")}}))
    (tmp_path / "bad" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="missing val/"):
        build_loaders(load_config({"data": {"dataset": "imagenet", "root": str(tmp_path / "bad")}}))
    (tmp_path / "bad" / "val").mkdir()
    with pytest.raises(ValueError, match="not an ImageNet folder tree"):
        build_loaders(load_config({"data": {"dataset": "imagenet", "root": str(tmp_path / "bad")}}))


def test_download_only_when_asked_and_needed(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeCIFAR10:  # stands in for torchvision's downloader (no network in tests)
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            make_cifar(Path(root) / "cifar-10-batches-py")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    with pytest.raises(FileNotFoundError):
        load_cifar(tmp_path / "dl", "cifar10", download=False)
    assert calls == []
    tx, *_ = load_cifar(tmp_path / "dl", "cifar10", download=True)
    assert calls == [(str(tmp_path / "dl"), True)] and tx.shape == (60, 3, 32, 32)
    load_cifar(tmp_path / "dl", "cifar10", download=True)  # already there: no second download
    assert len(calls) == 1
