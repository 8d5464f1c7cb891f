"""The search-to-retrain study (examples/studies/search_to_retrain.yaml), shrunk through --set:
the search stage runs on the training images only, its spread front and random cells join the
hand-designed runs, every row is measured, and a second run resumes to the same results."""
from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from osep_nas.cli import main
from osep_nas.complexity import count_params
from osep_nas.genotypes import parse_genotype
from osep_nas.models import create_model

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "examples" / "studies" / "search_to_retrain.yaml"
#: the recipe's network and schedule stay; only the budget shrinks (1 epoch, 1 seed, 4 trials)
SHRINK = ["--set", "epochs=1", "--set", "seeds=[0]", "--set", "search.front=2", "--set", "search.random=1",
          "--set", "search.set=[search.trials=4, proxy.steps=3, search.rungs=2, search.workers=1, "
                   "output.plots=false]"]


def _fake_cifar(folder: Path) -> Path:
    """A CIFAR-10 folder in the official layout: 5 x 40 training images, 40 test images."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8), b"labels": [k % 10 for k in range(40)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def _rows(out: Path):
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_search_to_retrain_study_shrunk(tmp_path, monkeypatch, capsys):
    import osep_nas.data.datasets as D
    import strategies.study_stage as S

    data = _fake_cifar(tmp_path / "cifar-10-batches-py")
    reads = {"search": [], "retrain": []}
    phase = {"now": "retrain"}
    real_read, real_search = D.read_cifar_batch, S.run_search

    def read(path, *a, **kw):
        reads[phase["now"]].append(Path(path).name)
        return real_read(path, *a, **kw)

    def search(*a, **kw):
        phase["now"] = "search"
        try:
            return real_search(*a, **kw)
        finally:
            phase["now"] = "retrain"

    monkeypatch.setattr(D, "read_cifar_batch", read)
    monkeypatch.setattr(S, "run_search", search)
    out = tmp_path / "study"
    assert main(["study", str(STUDY), "--data", str(data), "--out", str(out), *SHRINK]) == 0
    printed = capsys.readouterr().out
    # the search read the training batches and never the test batch; the retraining read it
    assert reads["search"] and "test_batch" not in reads["search"]
    assert "test_batch" in reads["retrain"]
    # the runs: the spread front (2), then the random cell, after the hand-designed cells
    front = yaml.safe_load((out / "search" / "pareto.yaml").read_text())["front"]
    by_params = sorted(front, key=lambda r: (r["params"], r["id"]))
    want = by_params if len(by_params) <= 2 else [by_params[0], by_params[-1]]
    rows = _rows(out)
    assert [r["run"] for r in rows] == ["DARTS_V2", "o-DARTS"] + [f"searched #{r['id']}" for r in want] + ["random 1"]
    assert [r["group"] for r in rows] == ["hand-designed"] * 2 + ["searched"] * len(want) + ["random"]
    # #Params: the retrained network's, and the 36 x 20 evaluation network's, counted on the module
    assert int(rows[0]["eval_params"]) == count_params(create_model("darts_v2_cifar"))
    for r, f in zip(rows[2:], want):
        assert int(r["eval_params"]) == f["params"]  # the search's objective is the same network
        net = create_model("darts_cifar", genotype=parse_genotype(f["genotype"]), init_channels=8, layers=5,
                           auxiliary=True, num_classes=10)
        assert int(r["params"]) == count_params(net)
    assert all(r["epochs"] == "1" and 0.0 <= float(r["final_top1"]) <= 100.0 for r in rows)
    assert (out / "accuracy_vs_params.png").stat().st_size > 0
    assert "| run | group | model | #Params (M) | #Params 36x20 (M) |" in (out / "results.md").read_text()
    assert "searched" in printed
    # a second invocation resumes: nothing searched or trained again, the same table
    before = [{k: v for k, v in r.items()} for r in rows]
    reads["search"].clear()
    assert main(["study", str(STUDY), "--data", str(data), "--out", str(out), *SHRINK]) == 0
    assert "done earlier" in capsys.readouterr().out
    assert _rows(out) == before
    # --report trains nothing and tables the runs finished so far, titled partial
    next(out.glob("random*/seed0/summary.json")).unlink()
    monkeypatch.setattr("osep_nas.train.train", lambda *a, **kw: pytest.fail("--report trained a run"))
    monkeypatch.setattr(S, "run_search", lambda *a, **kw: pytest.fail("--report ran the search"))
    search_files = {f: f.read_bytes() for f in (out / "search").iterdir() if f.is_file()}
    assert main(["study", str(STUDY), "--data", str(data), "--out", str(out), *SHRINK, "--report"]) == 0
    assert {f: f.read_bytes() for f in (out / "search").iterdir() if f.is_file()} == search_files
    assert _rows(out) == before[:-1]
    assert f"(partial: {len(before) - 1} of {len(before)} runs)" in (out / "results.md").read_text()


def test_study_report_needs_finished_runs(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    assert main(["study", str(STUDY), "--out", str(missing), "--report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no study output to report on" in err and len(err.splitlines()) == 1 and not missing.exists()
    (tmp_path / "empty").mkdir()
    assert main(["study", str(STUDY), "--out", str(tmp_path / "empty"), "--set", "search.config=null",
                 "--report"]) == 2
    assert "no finished run to report yet" in capsys.readouterr().err


def test_study_search_section_errors(tmp_path, capsys):
    """A missing search config and a bad search override: one line, exit 2, nothing written."""
    out = tmp_path / "o"
    assert main(["study", str(STUDY), "--data", "digits", "--out", str(out),
                 "--set", "search.config=nowhere.yaml"]) == 2
    assert "search.config: search config not found" in capsys.readouterr().err
    assert main(["study", str(STUDY), "--data", "digits", "--out", str(out),
                 "--set", "search.set=[search.strategy=best]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study search: --set search.strategy=best" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("runs", [{"x": {"genotype": 3}}, {"x": {"genotype": "DARTS_V2", "model": "resnet20"}},
                                  {"x": {"genotype": "DARTS_V2", "group": ["a"]}}])
def test_study_genotype_runs_are_checked(tmp_path, runs):
    from osep_nas.config import ConfigError
    from osep_nas.study import parse_runs

    with pytest.raises(ConfigError, match=r"study\.runs\.x\.(genotype|model|group)"):
        parse_runs(runs)
