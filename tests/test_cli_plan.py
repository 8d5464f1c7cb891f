"""`osep-nas plan`: the printed figures and one-line errors with exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from osep_nas.cli import main


def test_plan_64_prints_plan_within_10_percent(capsys):
    assert main(["plan", "64", "64", "3"]) == 0
    out = capsys.readouterr().out
    assert "groups=32" in out and "groups=2" in out
    assert "N*t = 3,072" in out
    assert "osep         3,200" in out and "dsep         4,672" in out


def test_plan_json_paper_rounding(capsys):
    assert main(["plan", "58", "58", "3", "--json", "--rounding", "paper"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["algorithm_groups"] == [23, 3] and data["groups"] == [20, 3] and data["params"] == 2820


def test_plan_json_values(capsys):
    assert main(["plan", "58", "58", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"] == [29, 2] and data["params"] == 2726 and data["fully_connected"] is True
    assert {r["kind"]: r["params"] for r in data["comparison"]} == {"conv": 30276, "dsep": 3886, "osep": 2726}


@pytest.mark.parametrize("argv, needle", [
    (["plan", "0", "64", "3"], "in_channels"),
    (["plan", "64", "64", "3", "--gamma", "0"], "gamma"),
    (["plan", "64", "64", "3", "--n-convs", "1"], "n_convs"),
    (["plan", "64", "64", "3", "--n-convs", "x"], "--n-convs"),
    (["plan", "64", "64", "3", "--policy", "wide"], "--policy"),
    (["plan", "64", "64", "3", "--size", "0"], "--size"),
    (["plan", "64", "64"], "required"),
])
def test_plan_bad_input_one_line_exit_2(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "osep_nas.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
