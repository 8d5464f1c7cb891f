"""`osep-nas eval --checkpoint`: the accuracy it measures is the trainer's, the counts are ours."""
from __future__ import annotations

import json

import pytest

from osep_nas import count_flops, count_params, create_model
from osep_nas.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    code = main(["train", "--model", "resnet20", "--dataset", "digits", "--set", "epochs=1",
                 "--set", "training.max_steps_per_epoch=3", "--set", "data.batch_size=32", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_eval_checkpoint_matches_training_summary(trained, tmp_path, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    result_file = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(trained / "last.pt"), "--json", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert result["test_top1"] == pytest.approx(summary["final"]["test_top1"], abs=1e-3)
    assert result["test_images"] == 360  # 20% of the 1797 digits
    model = create_model("resnet20")
    assert result["params"] == count_params(model) == 269722
    assert result["flops"] == count_flops(model, (3, 32, 32))
    assert "top-1" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["eval", "--checkpoint", "/nonexistent/last.pt"], "not found"),
    (["eval"], "--genotype"),
    (["eval", "--genotype", "O_DARTS", "--data", "/tmp"], "--data goes with --checkpoint"),
])
def test_eval_bad_input_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
