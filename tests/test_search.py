"""strategies: the genotype space adapter, the target objectives, successive halving, the
in-process search (`osep-nas search`), its resume contract, failure handling, budgets, report
and command-line errors."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
import yaml

from osep_nas import count_flops, count_params
from osep_nas.cli import main
from osep_nas.genotypes import DARTS_V2, O_DARTS, Genotype, parse_genotype, validate_genotype
from osep_nas.networks import NetworkCIFAR, NetworkImageNet, check_genotype
from strategies.fidelity import final_records, promotions, rung_steps
from search_spaces.genotype_space import GenotypeSpace, edge_differences, resolve_op_candidates
from search_spaces.target import resolve_target
from strategies.pareto import pareto_front
from strategies.report import load_trials, pareto_of, write_report
from strategies.search import load_search_config, proxy_train, run_search

REPO = Path(__file__).resolve().parents[1]
OPS3 = "osep_3x3,max_pool_3x3,skip_connect"
SMALL_TARGET = {"model": "cifar10", "init_channels": 8, "layers": 5}

# a tiny but real search: 2-channel proxy, 3 SGD steps per rung-0 trial (~0.1 s a trial),
# 2 rungs (3/9 steps), rounds of 2 jobs, one process, a small target network (fast to count)
TINY: Dict[str, Any] = {
    "search": {"strategy": "evolution", "trials": 6, "population_size": 3, "sample_size": 2, "seed": 3,
               "round_size": 2, "workers": 1},
    "space": {"op_candidates": OPS3, "num_nodes": 2},
    "proxy": {"init_channels": 2, "layers": 3, "steps": 3}, "data": {"batch_size": 16},
    "target": dict(SMALL_TARGET),
    "output": {"plots": False},
}


def tiny(**sections: Dict[str, Any]) -> Dict[str, Any]:
    cfg = {k: dict(v) for k, v in TINY.items()}
    for sec, values in sections.items():
        cfg[sec].update(values)
    return cfg


def without_timings(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "train_s"} for r in records]


def quiet_search(cfg, out, **kw):
    return run_search(cfg, out, progress=False, print_report=False, **kw)


# --------------------------------------------------------------------------- genotype space

@pytest.mark.parametrize("distinct", [False, True])
def test_random_samples_are_valid_genotypes_of_the_space(distinct):
    space = GenotypeSpace("osep", num_nodes=4, distinct_inputs=distinct)
    rng = random.Random(0)
    for _ in range(200):
        g = space.random_sample(rng)
        assert validate_genotype(g) == g  # canonical form
        check_genotype(g)  # buildable by NetworkCIFAR
        assert space.contains(g)
        assert len(g.normal) == len(g.reduce) == 8 and g.normal_concat == g.reduce_concat == [2, 3, 4, 5]
        assert all(op in space.ops and op != "none" for op, _ in g.normal + g.reduce)
        if distinct:
            assert all(g.normal[k][1] != g.normal[k + 1][1] for k in (0, 2, 4, 6))
    assert parse_genotype(repr(g)) == g


@pytest.mark.parametrize("distinct", [False, True])
def test_mutation_changes_exactly_one_op_or_one_input(distinct):
    space = GenotypeSpace(OPS3, num_nodes=4, distinct_inputs=distinct)
    rng = random.Random(1)
    kinds = set()
    g = space.random_sample(rng)
    for _ in range(300):
        child = space.mutate(g, rng)
        diffs = edge_differences(g, child)
        assert len(diffs) == 1, diffs
        kinds.add(diffs[0][2])
        assert space.contains(child)
        g = child
    assert kinds == {"op", "input"}


def test_key_ignores_edge_order_inside_a_node_and_encode_round_trips():
    space = GenotypeSpace("darts")
    g = DARTS_V2
    swapped = g._replace(normal=[g.normal[1], g.normal[0]] + list(g.normal[2:]))
    assert swapped != g and space.key(swapped) == space.key(g)
    assert space.key(O_DARTS) != space.key(g)
    assert space.decode(json.loads(json.dumps(space.encode(O_DARTS)))) == O_DARTS


def test_cheap_metrics_count_the_target_network_and_the_proxy_as_diagnostic(monkeypatch):
    space = GenotypeSpace("osep", init_channels=4, layers=3)
    target = NetworkCIFAR(36, 10, 20, False, O_DARTS)  # the default target: DARTS' CIFAR-10 network
    cheap = space.cheap_metrics(O_DARTS)
    assert cheap["params"] == count_params(target) and cheap["flops"] == count_flops(target, (3, 32, 32))
    assert cheap["proxy_params"] == count_params(NetworkCIFAR(4, 10, 3, False, O_DARTS))
    assert cheap["params"] > 100 * cheap["proxy_params"]
    calls = []
    monkeypatch.setattr(space, "build", lambda g: calls.append(g))
    assert space.cheap_metrics(O_DARTS) == cheap and calls == []


def test_target_presets_overrides_and_errors():
    t = resolve_target("imagenet")
    assert t.model == "darts_imagenet" and t.input_size == (3, 224, 224)
    assert dict(t.kwargs) == {"init_channels": 48, "layers": 14, "num_classes": 1000}
    assert t.counts(DARTS_V2)["params"] == count_params(NetworkImageNet(48, 1000, 14, False, DARTS_V2))
    small = resolve_target({"model": "cifar10", "init_channels": 16, "layers": 8, "num_classes": 100})
    assert small.counts(DARTS_V2)["params"] == count_params(NetworkCIFAR(16, 100, 8, False, DARTS_V2))
    assert resolve_target(None) == resolve_target("cifar10") == resolve_target("darts_cifar")
    with pytest.raises(ValueError, match="not built from a genotype"):
        resolve_target("resnet20")
    with pytest.raises(ValueError, match="target.model"):
        resolve_target("cifar11")
    with pytest.raises(ValueError, match="target.layers"):
        resolve_target({"layers": 2})
    with pytest.raises(ValueError, match="target: unknown"):
        resolve_target({"width": 3})


def test_op_candidates_presets_lists_and_errors():
    assert "none" not in resolve_op_candidates("osep") and "osep_3x3" in resolve_op_candidates("osep")
    assert "none" in resolve_op_candidates("darts", exclude_none=False)
    assert resolve_op_candidates("osep_3x3, skip_connect") == ["osep_3x3", "skip_connect"]
    with pytest.raises(ValueError, match="conv_9x9"):
        resolve_op_candidates("osep_3x3,conv_9x9")
    with pytest.raises(ValueError, match="none"):
        resolve_op_candidates("none")


# --------------------------------------------------------------------------- successive halving

def _rec(trial, rung, acc, params, status="ok"):
    return {"trial": trial, "job": 100 * rung + trial, "rung": rung, "status": status, "accuracy": acc,
            "params": params}


def test_rung_steps_grow_by_eta():
    assert rung_steps(80, 3, 3) == [80, 240, 720] and rung_steps(10, 1, 3) == [10]


def test_promotions_follow_the_asha_rule_with_pareto_rank():
    objs = ["accuracy:max", "params:min"]
    # 6 results at rung 0: floor(6/3) = 2 promotions, the two of Pareto rank 0 with the largest crowding
    recs = [_rec(0, 0, 90, 100), _rec(1, 0, 95, 300), _rec(2, 0, 80, 50), _rec(3, 0, 85, 400),
            _rec(4, 0, 91, 200), _rec(5, 0, 70, 500), _rec(6, 0, None, 10, status="failed")]
    # rank 0: #2 (80, 50), #0 (90, 100), #4 (91, 200), #1 (95, 300); the extremes have infinite crowding
    assert promotions(recs, objs, rungs=2, eta=3) == [(1, 1), (2, 1)]  # ties of crowding: earlier trial
    # a promotion already run is not proposed again; the next best is not promoted (still 2 of 6)
    assert promotions(recs + [_rec(2, 1, 85, 50)], objs, rungs=2, eta=3) == [(1, 1)]
    # fewer than eta results: nothing to promote; the top rung never promotes
    assert promotions(recs[:2], objs, rungs=2, eta=3) == []
    assert promotions(recs, objs, rungs=1, eta=3) == []
    # a third rung: 3 results at rung 1 promote their best to rung 2, listed first
    up = recs + [_rec(2, 1, 85, 50), _rec(1, 1, 97, 300), _rec(0, 1, 96, 100)]
    assert promotions(up, objs, rungs=3, eta=3) == [(1, 2)]  # rung 0's two are promoted already


def test_final_records_take_each_trials_highest_successful_rung():
    recs = [_rec(0, 0, 90, 100), _rec(1, 0, 95, 300), _rec(0, 1, 93, 100), _rec(1, 1, None, 300, "failed")]
    final = final_records(recs)
    assert [(r["trial"], r["rung"], r["accuracy"]) for r in final] == [(0, 1, 93), (1, 0, 95)]


# --------------------------------------------------------------------------- search

def test_tiny_seeded_search_is_reproducible_with_promotions(tmp_path):
    a = quiet_search(tiny(), tmp_path / "a")
    b = quiet_search(tiny(), tmp_path / "b")
    assert without_timings(a.records) == without_timings(b.records)
    assert [r["trial"] for r in a.front] == [r["trial"] for r in b.front] and a.knee["genotype"] == b.knee["genotype"]
    # 6 new trials at rung 0 (3 steps), the best third promoted to rung 1 (9 steps)
    rung0 = [r for r in a.records if r["rung"] == 0]
    rung1 = [r for r in a.records if r["rung"] == 1]
    assert [r["trial"] for r in rung0] == list(range(6)) and {r["steps"] for r in rung0} == {3}
    assert len(rung1) == 2 and {r["steps"] for r in rung1} == {9}
    assert all(r["origin"] == "promotion" and r["parent"] == r["trial"] for r in rung1)
    assert [r["job"] for r in a.records] == list(range(8))
    # each promoted trial's final record is its rung-1 result
    assert {r["trial"]: r["rung"] for r in a.final} == {t: int(t in {r["trial"] for r in rung1}) for t in range(6)}
    # the proxy really trained: accuracies are measured, not constant
    assert len({r["accuracy"] for r in a.records}) > 1
    origins = [r["origin"] for r in rung0]
    assert origins[:3] == ["random"] * 3 and "mutation" in origins
    assert without_timings(load_trials(tmp_path / "a" / "trials.jsonl")) == without_timings(a.records)
    c = quiet_search(tiny(search={"seed": 4}), tmp_path / "c")
    assert [r["genotype"] for r in c.records] != [r["genotype"] for r in a.records]


def test_front_is_non_dominated_in_validation_accuracy_and_target_params(tmp_path):
    res = quiet_search(tiny(search={"trials": 9}), tmp_path / "s")
    target = resolve_target(SMALL_TARGET)
    for rec in res.records:  # every record's #Params/FLOPs are the target network's, counted
        counts = target.counts(parse_genotype(rec["genotype"]))
        assert (rec["params"], rec["flops"]) == (counts["params"], counts["flops"])
        assert rec["proxy_params"] == count_params(NetworkCIFAR(2, 10, 3, False, parse_genotype(rec["genotype"])))
    ok = [r for r in res.final if r["status"] == "ok"]
    expected = {ok[i]["trial"] for i in pareto_front(ok, ["accuracy:max", "params:min"])}
    ties = {t for r in res.front for t in r.get("ties", [])}
    assert {r["trial"] for r in res.front} | ties == expected
    doc = yaml.safe_load((tmp_path / "s" / "pareto.yaml").read_text())
    assert [m["id"] for m in doc["front"]] == [r["trial"] for r in res.front]
    assert all(m["params"] == r["params"] and m["rung"] == r["rung"] for m, r in zip(doc["front"], res.front))
    assert doc["meta"]["target"] == target.describe()


class _TrapTensor(torch.Tensor):
    """A tensor whose every use raises: the test split of a search must never be read."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"the test split was read ({getattr(func, '__name__', func)})")


def _trap_digits_test_split(monkeypatch):
    import osep_nas.data as D

    real = D.load_digits_tensors

    def trapped(*args, **kwargs):
        tx, ty, vx, vy = real(*args, **kwargs)
        return tx, ty, torch.Tensor._make_subclass(_TrapTensor, vx), torch.Tensor._make_subclass(_TrapTensor, vy)

    monkeypatch.setattr(D, "load_digits_tensors", trapped)
    # the trap has teeth: anything that evaluates on the test split fails
    from osep_nas.config import load_config

    with pytest.raises(AssertionError, match="test split was read"):
        _, test, _ = D.build_loaders(load_config({"data": {"image_size": 8}}))
        next(iter(test))


def test_no_search_path_reads_the_test_split(tmp_path, monkeypatch):
    """In-process search, the nnictl trial and the NNI strategy's evaluator: validation only."""
    _trap_digits_test_split(monkeypatch)
    res = quiet_search(tiny(search={"trials": 3}), tmp_path / "s")
    assert res.n_ok == len(res.records) == 4
    from strategies.cli_trial import run_trial
    from search_spaces.hpo import genotype_to_params

    metrics = run_trial(genotype_to_params(parse_genotype(res.records[0]["genotype"])), tiny())
    assert metrics["default"] == res.records[0]["accuracy"]  # the same protocol, the same seed (trial 0)
    from strategies.nni_strategy import proxy_evaluator

    evaluator = proxy_evaluator(tiny())
    assert evaluator is not None  # exercised end to end in tests/test_nni_strategy.py


def test_cifar_search_never_opens_the_test_batch(tmp_path, monkeypatch):
    """A CIFAR folder whose test batch cannot be read: the search runs, a plain loader fails."""
    import pickle

    import numpy as np

    from osep_nas.config import load_config
    from osep_nas.data import build_loaders

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (60, 3072), dtype=np.uint8), b"labels": [k % 10 for k in range(60)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (folder / "test_batch").write_bytes(b"not a pickle: reading this file is an error")
    with pytest.raises(ValueError, match="test_batch"):
        build_loaders(load_config({"data": {"dataset": "cifar10", "root": str(folder)}}))
    res = quiet_search(tiny(search={"trials": 2}, data={"dataset": "cifar10", "root": str(folder), "image_size": 8}),
                       tmp_path / "s")
    assert res.n_ok == 2
    state = json.loads((tmp_path / "s" / "state.json").read_text())
    assert state["config"]["data"]["val_fraction"] == 0.2


def test_resume_after_stop_equals_uninterrupted_run(tmp_path):
    full = quiet_search(tiny(), tmp_path / "full")
    first = quiet_search(tiny(), tmp_path / "cut", stop_after=3)  # mid-round (rounds of 2 jobs)
    assert first.stop_reason == "stopped" and len(first.records) == 3
    assert not (tmp_path / "cut" / "pareto.yaml").exists()
    wall_at_stop = json.loads((tmp_path / "cut" / "state.json").read_text())["wall_s"]
    assert 0 < wall_at_stop <= first.wall_s
    resumed = quiet_search(tiny(), tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 3
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    # the search's time covers both invocations, the first up to its last saved state
    assert summary["search_wall_s"] == pytest.approx(wall_at_stop + summary["session_wall_s"], abs=0.05)
    assert summary["search_wall_s"] > summary["session_wall_s"]
    assert without_timings(resumed.records) == without_timings(full.records)
    assert [r["trial"] for r in resumed.front] == [r["trial"] for r in full.front]
    on_disk = load_trials(tmp_path / "cut")
    assert [r["job"] for r in on_disk] == list(range(len(full.records)))  # none lost, none twice
    assert without_timings(on_disk) == without_timings(full.records)
    assert [r["train_s"] for r in on_disk[:3]] == [r["train_s"] for r in first.records]


def test_resume_after_kill_mid_trial_with_torn_log(tmp_path):
    """A kill during job 3 (its round is planned in state.json) and a log that lost its last
    line: the resume re-runs job 3 with the same seed and rebuilds the log."""
    full = quiet_search(tiny(), tmp_path / "full")

    def killed_at_3(genotype, ctx):
        if ctx.index == 3 and ctx.rung == 0:
            raise KeyboardInterrupt  # escapes the trial handler, like a kill
        return proxy_train(genotype, ctx)

    with pytest.raises(KeyboardInterrupt):
        quiet_search(tiny(), tmp_path / "cut", trainer=killed_at_3)
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert [j["trial"] for j in state["round"]] == [2, 3] and len(state["jobs"]) == 3
    log = tmp_path / "cut" / "trials.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + lines[2][:17])  # torn last line
    resumed = quiet_search(tiny(), tmp_path / "cut", resume=True)
    assert without_timings(resumed.records) == without_timings(full.records)
    assert without_timings(load_trials(log)) == without_timings(full.records)


def test_failing_trial_is_recorded_and_the_search_goes_on(tmp_path):
    def oom_at_2(genotype, ctx):
        if ctx.index == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return proxy_train(genotype, ctx)

    res = quiet_search(tiny(), tmp_path / "s", trainer=oom_at_2)
    bad = [r for r in res.records if r["trial"] == 2]
    assert len(bad) == 1 and bad[0]["status"] == "failed" and bad[0]["accuracy"] is None
    assert bad[0]["reason"].startswith("RuntimeError: CUDA out of memory")
    assert bad[0]["params"] > 0  # counted before training
    assert 2 not in [r["trial"] for r in res.front]
    assert res.n_failed == 1 and len({r["trial"] for r in res.records}) == 6
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["failed"] == 1


def test_max_params_refuses_on_the_target_network_before_training(tmp_path):
    space = GenotypeSpace(OPS3, num_nodes=2, init_channels=2, layers=3, target=resolve_target(SMALL_TARGET))
    rng = random.Random(0)
    sizes = sorted(space.cheap_metrics(space.random_sample(rng))["params"] for _ in range(20))
    limit = sizes[len(sizes) // 2]
    trained: List[int] = []

    def spy(genotype, ctx):
        trained.append(ctx.space.cheap_metrics(genotype)["params"])
        return {"accuracy": 50.0 + ctx.index + ctx.rung}

    res = quiet_search(tiny(search={"max_params": limit}), tmp_path / "s", trainer=spy)
    assert len(trained) == len(res.records) and len(res.final) == 6
    assert max(trained) <= limit and res.n_refused > 0
    assert all(r["params"] <= limit for r in res.records)


def test_budget_stops_cleanly_and_resume_completes(tmp_path):
    def slow(genotype, ctx):
        time.sleep(0.3)
        return {"accuracy": float(ctx.index + ctx.rung)}

    cfg = tiny(search={"budget_minutes": 0.005})  # 0.3 s: one round
    res = quiet_search(cfg, tmp_path / "s", trainer=slow)
    assert res.stop_reason == "budget" and len(res.final) < 6
    assert (tmp_path / "s" / "pareto.yaml").exists()
    more = quiet_search(tiny(), tmp_path / "s", resume=True, trainer=slow)  # budget may change on resume
    assert more.stop_reason == "trials" and [r["trial"] for r in more.final] == list(range(6))


def test_random_strategy_never_mutates(tmp_path):
    res = quiet_search(tiny(search={"strategy": "random"}), tmp_path / "s",
                       trainer=lambda g, ctx: {"accuracy": 1.0 * ctx.index + ctx.rung})
    assert {r["origin"] for r in res.records if r["rung"] == 0} == {"random"}


def test_single_rung_runs_no_promotion(tmp_path):
    res = quiet_search(tiny(search={"rungs": 1}), tmp_path / "s", trainer=lambda g, ctx: {"accuracy": 1.0 * ctx.index})
    assert [r["rung"] for r in res.records] == [0] * 6


def test_out_folder_rules(tmp_path):
    quiet_search(tiny(search={"trials": 2}), tmp_path / "s")
    before = sorted(p.name for p in (tmp_path / "s").iterdir())
    with pytest.raises(ValueError, match="--resume"):
        quiet_search(tiny(search={"trials": 2}), tmp_path / "s")
    with pytest.raises(ValueError, match="proxy.steps"):
        quiet_search(tiny(search={"trials": 2}, proxy={"steps": 4}), tmp_path / "s", resume=True)
    quiet_search(tiny(search={"trials": 2, "workers": 3}), tmp_path / "s", resume=True)  # workers may change
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        quiet_search(tiny(), tmp_path / "other")
    # a search killed before its first state left only its own config.yaml: it starts over;
    # a config.yaml of another search is not overwritten
    early = tmp_path / "early"
    early.mkdir()
    from osep_nas.config import config_to_yaml

    cfg = load_search_config(tiny(search={"trials": 2}, output={"out": str(early)}))
    (early / "config.yaml").write_text(config_to_yaml(cfg))  # what the killed search had written
    (early / ".state.json.x1.tmp").write_text("{")
    assert quiet_search(tiny(search={"trials": 2}), early).n_ok == 2
    (tmp_path / "early2").mkdir()
    (tmp_path / "early2" / "config.yaml").write_text((early / "config.yaml").read_text())  # another OUT's
    with pytest.raises(ValueError, match="not empty"):
        quiet_search(tiny(search={"trials": 2}), tmp_path / "early2")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == before


@pytest.mark.slow
def test_two_workers_give_the_same_records_as_one(tmp_path):
    one = quiet_search(tiny(), tmp_path / "one")
    two = quiet_search(tiny(search={"workers": 2}), tmp_path / "two")
    assert two.workers == 2
    assert without_timings(two.records) == without_timings(one.records)
    assert (tmp_path / "one" / "pareto.yaml").read_text() == (tmp_path / "two" / "pareto.yaml").read_text()


# --------------------------------------------------------------------------- report

def _records() -> List[Dict[str, Any]]:
    space = GenotypeSpace("osep")
    rng = random.Random(5)
    pts = [(90.0, 100), (92.0, 200), (95.0, 300), (91.0, 250), (95.0, 400), (80.0, 50), (89.0, 150),
           (92.0, 200)]
    recs = [{"trial": i, "status": "ok", "accuracy": a, "params": p, "flops": 10 * p,
             "genotype": repr(space.random_sample(rng))} for i, (a, p) in enumerate(pts)]
    recs.append({"trial": 8, "status": "failed", "accuracy": None, "params": 10, "flops": 100,
                 "genotype": repr(O_DARTS)})
    return recs


def test_report_values_files_and_table(tmp_path, capsys):
    recs = _records()
    front, knee = pareto_of(recs)
    assert [r["trial"] for r in front] == [5, 0, 1, 2]  # ascending #Params; failed and dominated out
    assert front[2]["ties"] == [7]  # trial 7 has exactly trial 1's values
    assert knee["trial"] in (0, 1)
    rep = write_report(tmp_path, recs)
    out = capsys.readouterr().out
    doc = yaml.safe_load((tmp_path / "pareto.yaml").read_text())
    assert [m["id"] for m in doc["front"]] == [5, 0, 1, 2] and doc["knee"] == knee["trial"]
    assert doc["front"][2]["ties"] == [7] and "same values: #7" in out
    for m, r in zip(doc["front"], front):
        assert parse_genotype(m["genotype"]) == parse_genotype(r["genotype"])
        assert (m["params"], m["flops"], m["accuracy"]) == (r["params"], r["flops"], r["accuracy"])
    for name in ("pareto.png", "knee_normal.png", "knee_reduce.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert parse_genotype((tmp_path / "knee_genotype.yaml").read_text()) == parse_genotype(knee["genotype"])
    lines = out.strip().splitlines()
    assert lines[-1].startswith(f"best (knee) genotype #{knee['trial']}") and knee["genotype"] in lines[-1]
    assert f"{rep.front[-1]['params']:,}" in out and "target network" in out
    assert rep.files.keys() >= {"pareto.yaml", "pareto.png", "knee_genotype.yaml"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_with_no_success(tmp_path, capsys):
    rep = write_report(tmp_path, [_records()[-1]])
    assert rep.front == [] and rep.knee is None
    assert yaml.safe_load((tmp_path / "pareto.yaml").read_text())["front"] == []
    assert "no successful trial" in capsys.readouterr().out


# --------------------------------------------------------------------------- command line

def test_cli_runs_a_tiny_search(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny(search={"trials": 3})))
    assert main(["search", "--config", str(cfg), "--out", str(tmp_path / "o"), "--seed", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and out.strip().splitlines()[-1].startswith("best (knee) genotype")
    saved = load_search_config(str(tmp_path / "o" / "config.yaml"))
    assert saved.search.seed == 5 and saved.search.trials == 3


@pytest.mark.parametrize("argv, needle", [
    (["--set", "search.strategy=annealing"], "search.strategy"),
    (["--budget-minutes", "-1"], "--budget-minutes"),
    (["--set", "search.budget_minutes=-1"], "search.budget_minutes"),
    (["--data", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--set", "search.trails=3"], "search.trials"),
    (["--set", "space.op_candidates=osep_3x3,conv_9x9"], "conv_9x9"),
    (["--set", "search.objectives=[accuracy:max, latency:min]"], "latency"),
    (["--set", "proxy.layers=2"], "proxy.layers"),
    (["--config", "/nonexistent/search.yaml"], "/nonexistent/search.yaml"),
])
def test_cli_bad_input_one_line_exit_2_no_output(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    try:
        rc = main(["search", "--out", str(out), *argv])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_cli_subprocess_exit_status_and_help():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "osep_nas.cli", "search", "--set", "search.strategy=foo"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "osep_nas.cli", "search", "--help"], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert proc.returncode == 0 and "--resume" in proc.stdout and "Pareto" in proc.stdout


CIFAR_SUBSET = REPO.parent / "shared" / "data" / "cifar-10-batches-py"


@pytest.mark.skipif(not CIFAR_SUBSET.is_dir(), reason="the CIFAR-10 subset ../shared/data is absent")
def test_cli_data_dir_runs_on_cifar(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny(search={"trials": 2})))
    assert main(["search", "--config", str(cfg), "--data", str(CIFAR_SUBSET), "--set", "proxy.max_val_images=250",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    saved = load_search_config(str(tmp_path / "o" / "config.yaml"))
    assert saved.data.dataset == "cifar10" and saved.data.root == str(CIFAR_SUBSET)
    recs = load_trials(tmp_path / "o")
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    # accuracy is counted on the first 250 validation images (proxy.max_val_images)
    assert all(abs(r["accuracy"] * 2.5 - round(r["accuracy"] * 2.5)) < 1e-6 for r in recs)


def test_example_config_is_the_defaults():
    assert load_search_config(str(REPO / "examples" / "search_digits.yaml")) == load_search_config(None)


# --------------------------------------------------------------------------- end to end (slow)

def _children(pid: int) -> List[int]:
    kids: List[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker processes from /proc (Linux)")
def test_sigkill_during_a_promoted_trial_with_two_workers_then_resume(tmp_path):
    """kill -9 while a rung-1 job runs in one of 2 workers; --resume ends with the same
    records and front as an uninterrupted run, and the killed search leaves no worker behind."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny(search={"trials": 6, "workers": 2}, proxy={"steps": 25})))
    ref = quiet_search(tiny(search={"trials": 6}, proxy={"steps": 25}), tmp_path / "ref")  # 1 worker
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "osep_nas.cli", "search", "--config", str(cfg), "--out", str(tmp_path / "k"),
           "--quiet"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = tmp_path / "k" / "state.json"
    deadline, workers, promoted = time.time() + 300, [], False
    while time.time() < deadline and proc.poll() is None and not promoted:
        time.sleep(0.05)
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            continue
        done = {r["job"] for r in state["jobs"]}
        promoted = any(j["rung"] >= 1 and j["job"] not in done for j in state["round"])
        workers = _children(proc.pid) or workers
    assert promoted and proc.poll() is None, "the search ended before a promoted job ran"
    time.sleep(0.1)  # inside the promoted job
    workers = _children(proc.pid) or workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workers, "no worker process was seen"
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "worker processes outlived the killed search"
    rc = subprocess.run(cmd + ["--resume"], env=env, cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert without_timings(load_trials(tmp_path / "k")) == without_timings(ref.records)
    assert (tmp_path / "k" / "pareto.yaml").read_text() == (tmp_path / "ref" / "pareto.yaml").read_text()


@pytest.mark.slow
def test_default_search_end_to_end(tmp_path):
    """`osep-nas search` with its defaults (fewer trials): a real front from real training,
    every member non-dominated over all trials in (validation accuracy, target #Params)."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "osep_nas.cli", "search", "--trials", "9", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("best (knee) genotype")
    first = proc.stderr.strip().splitlines()[0]
    assert "worker(s)" in first and "rungs 80/240 steps" in first and "darts_cifar 36 ch x 20 cells" in first
    doc = yaml.safe_load((out / "pareto.yaml").read_text())
    front = doc["front"]
    genotypes = [parse_genotype(m["genotype"]) for m in front]
    target = resolve_target(None)
    assert all(m["params"] == target.counts(g)["params"] for m, g in zip(front, genotypes))
    assert len(front) >= 1 and len({m["params"] for m in front}) == len(front)
    records = load_trials(out)
    final = final_records(records)
    assert len(final) == 9 and len(records) > 9  # promotions ran
    ok = [r for r in final if r["status"] == "ok"]
    ids = {ok[i]["trial"] for i in pareto_front(ok, ["accuracy:max", "params:min"])}
    ties = {t for m in front for t in m.get("ties", [])}
    assert {m["id"] for m in front} | ties == ids and not {m["id"] for m in front} & ties  # non-dominated
    assert max(r["accuracy"] for r in ok) - min(r["accuracy"] for r in ok) > 1.0  # real training differs
    for name in ("pareto.png", "knee_normal.png", "knee_reduce.png", "knee_genotype.yaml", "summary.json"):
        assert (out / name).is_file()


def test_a_second_search_on_a_folder_in_use_is_refused_at_once(tmp_path, capsys):
    """One writer per OUT: while another process holds the folder, `search --resume` exits 2."""
    out = tmp_path / "s"
    quiet_search(tiny(search={"trials": 2}), out)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom osep_nas.outlock import hold_out_dir\n"
                               "with hold_out_dir(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)",
                               str(out)], env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(tiny(search={"trials": 3})))
        before = (out / "trials.jsonl").read_text()
        start = time.time()
        assert main(["search", "--config", str(cfg), "--out", str(out), "--resume", "--quiet"]) == 2
        assert time.time() - start < 30
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by pid {holder.pid}" in err[0]
        assert (out / "trials.jsonl").read_text() == before
    finally:
        holder.kill()
        holder.wait()
    assert main(["search", "--config", str(tmp_path / "c.yaml"), "--out", str(out), "--resume", "--quiet"]) == 0
