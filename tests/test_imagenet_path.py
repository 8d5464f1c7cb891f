"""The ImageNet path end to end: an ImageFolder tree (digits images, 3 classes) trains
NetworkImageNet for a few steps with the ImageNet recipe's transforms."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from osep_nas.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "configs" / "darts_imagenet.yaml"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("imagenet")
    digits = load_digits()
    for split, indices in (("train", range(0, 48)), ("val", range(48, 72))):
        for i in indices:
            folder = root / split / f"class{digits.target[i] % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            img = (digits.images[i] / 16 * 255).astype(np.uint8)
            Image.fromarray(img).convert("RGB").resize((32, 32)).save(folder / f"{i}.png")
    return root


def test_imagenet_recipe_trains_network_imagenet(image_folder, tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--config", str(RECIPE), "--genotype", "O_DARTS", "--data", str(image_folder),
                 "--set", "model.init_channels=8", "--set", "model.layers=5", "--set", "epochs=1",
                 "--set", "training.max_steps_per_epoch=2", "--set", "data.batch_size=4", "--set", "data.workers=0",
                 "--set", "training.tensorboard=false", "--out", str(out), "--quiet"])
    assert code == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and np.isfinite(record["train_loss"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"] > 0 and summary["completed"]
    config = (out / "config.yaml").read_text()
    # the recipe's ImageNet transforms were in force: random resized crop 224, color jitter, smoothing
    assert "crop: resized" in config or "crop: auto" in config
    assert "label_smoothing: 0.1" in config
