"""Issue 20: one data vocabulary, ``--data digits|DIR``, in train, eval, study and search;
``--dataset`` only where a folder's kind is ambiguous; a wrong flag names the right one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from osep_nas.cli import main
from osep_nas.data_arg import folder_kinds, resolve_data

ROOT = Path(__file__).resolve().parents[1]


def _folder(tmp_path: Path, *kinds: str) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for kind in kinds:
        if kind == "cifar10":
            sub = root / "cifar-10-batches-py"
            sub.mkdir()
            for name in ("data_batch_1", "test_batch"):
                (sub / name).write_bytes(b"")
        elif kind == "cifar100":
            for name in ("train", "test"):
                (root / name).write_bytes(b"")
        elif kind == "imagenet":
            (root / "train").mkdir()
            (root / "val").mkdir()
    return root


@pytest.mark.parametrize("kinds", [("cifar10",), ("cifar100",), ("imagenet",), ("cifar10", "cifar100"), ()])
def test_folder_kind_is_read_from_the_folder(tmp_path, kinds):
    root = _folder(tmp_path, *kinds)
    assert folder_kinds(root) == list(kinds)
    if len(kinds) == 1:  # whatever the config says, the folder decides
        for configured in ("digits", "cifar10", "cifar100", "imagenet", None):
            assert resolve_data(str(root), None, configured) == {"dataset": kinds[0], "root": str(root)}
    elif len(kinds) == 2:
        assert resolve_data(str(root), None, "cifar100") == {"dataset": "cifar100", "root": str(root)}
        with pytest.raises(ValueError, match="holds cifar10 and cifar100; choose one with --dataset cifar10|cifar100"):
            resolve_data(str(root), None, "digits")
        assert resolve_data(str(root), "cifar10", "digits") == {"dataset": "cifar10", "root": str(root)}
    else:
        assert resolve_data(str(root), None, "cifar10") == {"dataset": "cifar10", "root": str(root)}
        with pytest.raises(ValueError, match="cannot tell what .* holds.*--dataset cifar10|cifar100|imagenet"):
            resolve_data(str(root), None, "digits")


def test_digits_and_errors(tmp_path):
    assert resolve_data("digits", None, "cifar10") == {"dataset": "digits", "root": None}
    assert resolve_data("digits", "digits", "cifar10") == {"dataset": "digits", "root": None}
    assert resolve_data(None, "digits", "cifar10") == {"dataset": "digits"}
    assert resolve_data(None, None, "cifar10") == {}
    with pytest.raises(ValueError, match="--dataset cifar10 needs a folder"):
        resolve_data("digits", "cifar10")
    with pytest.raises(ValueError, match="give --data digits"):
        resolve_data(str(tmp_path), "digits")
    with pytest.raises(FileNotFoundError, match="--data: folder not found: .*nope"):
        resolve_data(str(tmp_path / "nope"), None, "digits")
    # a folder still to be filled (data.download) keeps the config's kind; the loader judges it
    assert resolve_data(str(tmp_path / "nope"), None, "cifar100") == {"dataset": "cifar100",
                                                                       "root": str(tmp_path / "nope")}
    assert resolve_data(str(tmp_path / "nope"), "imagenet", "digits") == {"dataset": "imagenet",
                                                                           "root": str(tmp_path / "nope")}
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        resolve_data(str(tmp_path / "f"))


TINY = ["--set", "data.image_size=8", "--set", "data.padding=1", "--set", "data.batch_size=64", "--epochs", "1",
        "--set", "max_steps_per_epoch=2", "--set", "training.tensorboard=false", "--set", "model.width_mult=0.25",
        "--quiet"]


def test_train_and_eval_take_data_digits(tmp_path, capsys, one_thread):
    """The README's command: a CIFAR recipe with --data digits trains on the digits, and
    eval --checkpoint --data digits reads the same test split."""
    out = tmp_path / "run"
    argv = ["train", "--config", str(ROOT / "examples/configs/resnet_cifar10.yaml"), "--model", "resnet20",
            "--data", "digits", *TINY, "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["dataset"] == "digits" and cfg["data"]["root"] is None
    assert cfg["model"]["name"] == "resnet20" and cfg["optim"]["milestones"] == [0.5, 0.75]  # the recipe's
    assert summary["epochs_done"] == 1
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--data", "digits", "--json",
                 str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["dataset"] == "digits" and result["test_images"] == 360  # 20% of the 1,797 digits
    assert result["test_top1"] == pytest.approx(summary["final_test_top1"], abs=1e-3)
    # the old spelling still works, with a note
    capsys.readouterr()
    assert main(["train", "--model", "resnet20", "--dataset", "digits", *TINY, "--out", str(tmp_path / "old")]) == 0
    assert "--dataset digits is deprecated, use --data digits" in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())["data"]["dataset"] == "digits"


def test_study_data_digits_overrides(tmp_path):
    from osep_nas.study import data_overrides

    recipe = ROOT / "examples/configs/resnet_cifar10.yaml"
    assert data_overrides(recipe, "digits") == ["data.dataset=\"digits\"", "data.root=null"]
    root = _folder(tmp_path, "cifar100")
    assert data_overrides(recipe, str(root)) == ["data.dataset=\"cifar100\"", f"data.root={json.dumps(str(root))}"]
    assert data_overrides(recipe, None) == []


@pytest.mark.parametrize("argv, line", [
    (["search", "--dataset", "digits"],
     "osep-nas search: error: unrecognized arguments: --dataset digits; did you mean --data digits|DIR? (see --help)"),
    (["train", "--data-dir", "x"],
     "osep-nas train: error: unrecognized arguments: --data-dir x; did you mean --data digits|DIR? (see --help)"),
    (["study", "f.yaml", "--output", "x"],
     "osep-nas study: error: unrecognized arguments: --output x; did you mean --out DIR? (see --help)"),
    (["train", "--dataset", "../data"],
     "osep-nas train: error: argument --dataset: invalid choice: '../data' (choose from 'cifar10', 'cifar100', "
     "'imagenet', 'digits'); the data itself (digits or a folder) goes to --data digits|DIR (see --help)"),
    (["eval", "--genotype", "O_DARTS", "--data", "digits"],
     "osep-nas eval: error: --data goes with --checkpoint (with --genotype, --dataset chooses the network layout)"),
])
def test_a_wrong_flag_names_the_right_one(argv, line, capsys):
    with pytest.raises(SystemExit) as exc:
        rc = main(argv)
        raise SystemExit(rc)
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [line]
