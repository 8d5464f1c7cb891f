"""strategies: the genotype space adapter, the in-process search (`osep-nas search`), its
resume contract, failure handling, budgets, report and command-line errors."""
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

from osep_nas import count_params
from osep_nas.cli import main
from osep_nas.genotypes import DARTS_V2, O_DARTS, Genotype, parse_genotype, validate_genotype
from osep_nas.networks import NetworkCIFAR, check_genotype
from strategies.genotype_space import GenotypeSpace, edge_differences, full_network_params, resolve_op_candidates
from strategies.pareto import pareto_front
from strategies.report import load_trials, pareto_of, write_report
from strategies.search import load_search_config, proxy_train, run_search

REPO = Path(__file__).resolve().parents[1]
OPS3 = "osep_3x3,max_pool_3x3,skip_connect"

# a tiny but real search: 2-channel proxy, 3 SGD steps per trial (~0.1 s a trial)
TINY: Dict[str, Any] = {
    "search": {"trials": 6, "population_size": 3, "sample_size": 2, "seed": 3},
    "space": {"op_candidates": OPS3, "num_nodes": 2},
    "proxy": {"init_channels": 2, "layers": 3, "steps": 3, "batch_size": 16},
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


def test_cheap_metrics_are_the_counter_on_the_proxy_network_and_cached(monkeypatch):
    space = GenotypeSpace("osep", init_channels=4, layers=3)
    expected = count_params(NetworkCIFAR(4, 10, 3, False, O_DARTS))
    assert space.cheap_metrics(O_DARTS)["params"] == expected
    assert space.cheap_metrics(O_DARTS)["flops"] > 0
    calls = []
    monkeypatch.setattr(space, "build", lambda g: calls.append(g))
    assert space.cheap_metrics(O_DARTS)["params"] == expected and calls == []


def test_op_candidates_presets_lists_and_errors():
    assert "none" not in resolve_op_candidates("osep") and "osep_3x3" in resolve_op_candidates("osep")
    assert "none" in resolve_op_candidates("darts", exclude_none=False)
    assert resolve_op_candidates("osep_3x3, skip_connect") == ["osep_3x3", "skip_connect"]
    with pytest.raises(ValueError, match="conv_9x9"):
        resolve_op_candidates("osep_3x3,conv_9x9")
    with pytest.raises(ValueError, match="none"):
        resolve_op_candidates("none")


def test_full_network_params_is_the_36_channel_20_cell_network():
    assert full_network_params(O_DARTS) == count_params(NetworkCIFAR(36, 10, 20, False, O_DARTS))
    assert 1.5e6 < full_network_params(O_DARTS) < full_network_params(DARTS_V2) < 3.5e6


# --------------------------------------------------------------------------- search

def test_tiny_seeded_search_is_reproducible(tmp_path):
    a = quiet_search(tiny(), tmp_path / "a")
    b = quiet_search(tiny(), tmp_path / "b")
    assert len(a.records) == 6 and a.n_ok == 6
    assert without_timings(a.records) == without_timings(b.records)
    assert [r["trial"] for r in a.front] == [r["trial"] for r in b.front]
    assert a.knee["genotype"] == b.knee["genotype"]
    # the proxy really trained: accuracies are measured, not constant
    assert len({r["accuracy"] for r in a.records}) > 1
    assert [r["origin"] for r in a.records][:3] == ["random"] * 3 and "mutation" in [r["origin"] for r in a.records]
    # the log on disk is the same as the result
    assert without_timings(load_trials(tmp_path / "a" / "trials.jsonl")) == without_timings(a.records)
    c = quiet_search(tiny(search={"seed": 4}), tmp_path / "c")
    assert [r["genotype"] for r in c.records] != [r["genotype"] for r in a.records]


def test_resume_after_stop_equals_uninterrupted_run(tmp_path):
    full = quiet_search(tiny(), tmp_path / "full")
    first = quiet_search(tiny(), tmp_path / "cut", stop_after=2)
    assert first.stop_reason == "stopped" and len(first.records) == 2
    assert not (tmp_path / "cut" / "pareto.yaml").exists()
    resumed = quiet_search(tiny(), tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 2
    assert without_timings(resumed.records) == without_timings(full.records)
    assert [r["trial"] for r in resumed.front] == [r["trial"] for r in full.front]
    on_disk = load_trials(tmp_path / "cut")
    assert [r["trial"] for r in on_disk] == list(range(6))  # none lost, none twice
    assert without_timings(on_disk) == without_timings(full.records)
    # timings survive the resume (the state is the source of the log)
    assert [r["train_s"] for r in on_disk[:2]] == [r["train_s"] for r in first.records]


def test_resume_after_kill_mid_trial_with_torn_log(tmp_path):
    """A kill during trial 3 (the candidate is pending in state.json) and a log that lost its
    last line: the resume re-runs trial 3 with the same seed and rebuilds the log."""
    full = quiet_search(tiny(), tmp_path / "full")

    def killed_at_3(genotype, ctx):
        if ctx.index == 3:
            raise KeyboardInterrupt  # escapes the trial handler, like a kill
        return proxy_train(genotype, ctx)

    with pytest.raises(KeyboardInterrupt):
        quiet_search(tiny(), tmp_path / "cut", trainer=killed_at_3)
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert len(state["evolution"]["history"]) == 3 and len(state["evolution"]["pending"]) == 1
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
    assert len(res.records) == 6 and res.n_failed == 1 and res.n_ok == 5
    bad = res.records[2]
    assert bad["status"] == "failed" and bad["accuracy"] is None
    assert bad["reason"].startswith("RuntimeError: CUDA out of memory")
    assert bad["params"] > 0  # counted before training
    assert 2 not in [r["trial"] for r in res.front]
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["failed"] == 1


def test_max_params_refuses_before_training(tmp_path):
    space = GenotypeSpace(OPS3, num_nodes=2, init_channels=2, layers=3)
    rng = random.Random(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the search: tiny forwards are slow with idle-waiting threads
    try:
        sizes = sorted(space.cheap_metrics(space.random_sample(rng))["params"] for _ in range(20))
    finally:
        torch.set_num_threads(threads)
    limit = sizes[len(sizes) // 2]
    trained: List[int] = []

    def spy(genotype, ctx):
        trained.append(ctx.space.cheap_metrics(genotype)["params"])
        return {"accuracy": 50.0 + ctx.index}

    res = quiet_search(tiny(search={"max_params": limit}), tmp_path / "s", trainer=spy)
    assert len(trained) == len(res.records) == 6
    assert max(trained) <= limit and res.n_refused > 0
    assert all(r["params"] <= limit for r in res.records)


def test_budget_stops_cleanly_and_resume_completes(tmp_path):
    def slow(genotype, ctx):
        time.sleep(0.3)
        return {"accuracy": float(ctx.index)}

    cfg = tiny(search={"budget_minutes": 0.005})  # 0.3 s
    res = quiet_search(cfg, tmp_path / "s", trainer=slow)
    assert res.stop_reason == "budget" and len(res.records) < 6
    assert (tmp_path / "s" / "pareto.yaml").exists()
    more = quiet_search(tiny(), tmp_path / "s", resume=True, trainer=slow)  # budget may change on resume
    assert more.stop_reason == "trials" and [r["trial"] for r in more.records] == list(range(6))


def test_random_strategy_never_mutates(tmp_path):
    res = quiet_search(tiny(search={"strategy": "random"}), tmp_path / "s",
                       trainer=lambda g, ctx: {"accuracy": 1.0 * ctx.index})
    assert [r["origin"] for r in res.records] == ["random"] * 6


def test_out_folder_rules(tmp_path):
    quiet_search(tiny(search={"trials": 2}), tmp_path / "s")
    before = sorted(p.name for p in (tmp_path / "s").iterdir())
    with pytest.raises(ValueError, match="--resume"):
        quiet_search(tiny(search={"trials": 2}), tmp_path / "s")
    with pytest.raises(ValueError, match="proxy.steps"):
        quiet_search(tiny(search={"trials": 2}, proxy={"steps": 4}), tmp_path / "s", resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        quiet_search(tiny(), tmp_path / "other")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == before


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
        g = parse_genotype(m["genotype"])
        assert m["params_cifar"] == full_network_params(g) and m["accuracy"] == r["accuracy"]
    for name in ("pareto.png", "knee_normal.png", "knee_reduce.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert parse_genotype((tmp_path / "knee_genotype.yaml").read_text()) == parse_genotype(knee["genotype"])
    lines = out.strip().splitlines()
    assert lines[-1].startswith(f"best (knee) genotype #{knee['trial']}") and knee["genotype"] in lines[-1]
    assert f"{rep.front[-1]['params_cifar']:,}" in out
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
    assert main(["search", "--config", str(cfg), "--data", str(CIFAR_SUBSET), "--set", "proxy.max_test_images=250",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    saved = load_search_config(str(tmp_path / "o" / "config.yaml"))
    assert saved.proxy.dataset == "cifar10" and saved.proxy.root == str(CIFAR_SUBSET)
    recs = load_trials(tmp_path / "o")
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    # accuracy is counted on the first 250 test images (proxy.max_test_images)
    assert all(abs(r["accuracy"] * 2.5 - round(r["accuracy"] * 2.5)) < 1e-6 for r in recs)


def test_example_config_is_the_defaults():
    assert load_search_config(str(REPO / "examples" / "search_digits.yaml")) == load_search_config(None)


# --------------------------------------------------------------------------- end to end (slow)

@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny(search={"trials": 8}, proxy={"steps": 20})))
    ref = quiet_search(load_search_config(str(cfg)), tmp_path / "ref")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "osep_nas.cli", "search", "--config", str(cfg), "--out", str(tmp_path / "k"),
           "--quiet"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "k" / "trials.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(load_trials(log))
    assert 3 <= done < 8
    rc = subprocess.run(cmd + ["--resume"], env=env, cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert without_timings(load_trials(log)) == without_timings(ref.records)
    front = yaml.safe_load((tmp_path / "k" / "pareto.yaml").read_text())["front"]
    assert [m["id"] for m in front] == [r["trial"] for r in ref.front]


@pytest.mark.slow
def test_default_search_end_to_end(tmp_path):
    """`osep-nas search` with its defaults (fewer trials): a real front from real training."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "osep_nas.cli", "search", "--trials", "32", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("best (knee) genotype")
    doc = yaml.safe_load((out / "pareto.yaml").read_text())
    front = doc["front"]
    genotypes = [parse_genotype(m["genotype"]) for m in front]
    assert all(isinstance(g, Genotype) for g in genotypes)
    # how many architectures the front holds depends on the run (one trial may dominate all
    # others); what must hold is that it is non-empty, without duplicates, and exact (below)
    assert len(front) >= 1 and len({m["params"] for m in front}) == len(front)
    records = load_trials(out)
    assert len(records) == 32
    ok = [r for r in records if r["status"] == "ok"]
    ids = {ok[i]["trial"] for i in pareto_front(ok, ["accuracy:max", "params:min"])}
    ties = {t for m in front for t in m.get("ties", [])}
    assert {m["id"] for m in front} | ties == ids and not {m["id"] for m in front} & ties  # non-dominated
    assert max(r["accuracy"] for r in ok) - min(r["accuracy"] for r in ok) > 1.0  # real training differs
    for name in ("pareto.png", "knee_normal.png", "knee_reduce.png", "knee_genotype.yaml", "summary.json"):
        assert (out / name).is_file()
