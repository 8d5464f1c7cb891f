"""nnictl side: the example experiment config, ``osep-nas export`` on an NNI sqlite database
(built here with NNI's schema) and on a search folder, and a real nnictl run (slow)."""
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from osep_nas.cli import main as cli_main
from osep_nas.genotypes import Genotype, parse_genotype, random_genotype
from search_spaces.hpo import check_search_space, genotype_to_params, params_to_genotype
from strategies import cli_export
from strategies.cli_export import export, find_source, read_experiment

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# NNI 3.0's tables (nni_node/core/sqlDatabase.js)
NNI_SCHEMA = """
create table TrialJobEvent (timestamp integer, trialJobId text, event text, data text, logPath text,
    sequenceId integer, message text, environmentId text);
create table MetricData (timestamp integer, trialJobId text, parameterId text, type text, sequence integer, data text);
create table ExperimentProfile (params text, id text, execDuration integer, startTime integer, endTime integer,
    logDir text, nextSequenceId integer, revision integer);
"""
OPS = ["max_pool_3x3", "skip_connect", "osep_3x3", "sosep_5x5"]


def _hp(pid, genotype):
    return json.dumps({"parameter_id": pid, "parameter_source": "algorithm",
                       "parameters": genotype_to_params(genotype), "parameter_index": 0})


def _metric(value):
    return json.dumps(json.dumps(value))  # the trial dumps it, the manager dumps that string again


def make_fake_experiment(folder: Path, class_args=None):
    """An experiment folder as nnictl leaves it: 4 trials succeeded with a dict metric, one
    with a float metric (no params/flops), one failed, one still running."""
    db = folder / "db" / "nni.sqlite"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.executescript(NNI_SCHEMA)
    genotypes = [random_genotype(OPS, 4, seed=s) for s in range(7)]
    outcomes = [("SUCCEEDED", {"default": 90.0, "params": 3000, "flops": 40000}),
                ("SUCCEEDED", {"default": 92.0, "params": 4000, "flops": 50000}),
                ("SUCCEEDED", {"default": 85.0, "params": 2000, "flops": 30000}),
                ("SUCCEEDED", {"default": 80.0, "params": 3500, "flops": 45000}),  # dominated
                ("SUCCEEDED", 70.0),
                ("FAILED", None),
                ("RUNNING", None)]
    ts = 1_000
    for seq, (g, (state, metric)) in enumerate(zip(genotypes, outcomes)):
        job = f"job{seq}"
        con.execute("insert into TrialJobEvent values (?,?,?,?,?,?,?,?)",
                    (ts, job, "WAITING", _hp(seq, g), None, None, None, None))
        con.execute("insert into TrialJobEvent values (?,?,?,?,?,?,?,?)",
                    (ts + 1, job, "RUNNING", _hp(seq, g), None, seq, None, "local-env"))
        if metric is not None:
            con.execute("insert into MetricData values (?,?,?,?,?,?)", (ts + 2, job, str(seq), "FINAL", 0,
                                                                         _metric(metric)))
        if state != "RUNNING":
            con.execute("insert into TrialJobEvent values (?,?,?,?,?,?,?,?)",
                        (ts + 3, job, state, None, f"/logs/{job}", seq, None, "local-env"))
        ts += 10
    profile = {"experimentName": "fake", "searchSpace": json.loads((EXAMPLES / "nni" / "search_space.json").read_text()),
               "tuner": {"name": "ParetoEvolution", "classArgs": class_args or {}}}
    con.execute("insert into ExperimentProfile values (?,?,?,?,?,?,?,?)",
                (json.dumps(profile), "fakeid", 0, 0, None, str(folder.parent), 7, 1))
    con.commit()
    con.close()
    return genotypes


def test_example_config_and_meta_are_valid():
    from nni.experiment.config import ExperimentConfig

    from strategies.tuner import ParetoTuner, ParetoTunerClassArgsValidator

    canon = ExperimentConfig.load(str(EXAMPLES / "search.yml")).canonical_copy()  # paths relative to the file
    assert Path(canon.trial_code_directory) == ROOT
    assert Path(canon.search_space_file) == EXAMPLES / "nni" / "search_space.json"
    assert Path(canon.experiment_working_directory) == ROOT / "runs" / "nni-experiments"
    assert canon.trial_concurrency == 1 and canon.max_trial_number >= 4
    # self-contained: the tuner by its class, importable from the code directory (no registration)
    assert canon.tuner.name is None and canon.tuner.class_name == "strategies.tuner.ParetoTuner"
    assert Path(canon.tuner.code_directory) == ROOT
    summary = check_search_space(canon.search_space_file)
    assert summary["num_nodes"] == 4
    ParetoTunerClassArgsValidator().validate_class_args(**canon.tuner.class_args)
    with pytest.raises(TypeError):
        ParetoTunerClassArgsValidator().validate_class_args(populaton_size=3)
    # the trial config is a search config whose proxy matches the tuner's classArgs
    from strategies.search import load_search_config

    trial_cfg = load_search_config(str(EXAMPLES / "nni" / "trial.yaml"))
    args = canon.tuner.class_args
    assert (trial_cfg.proxy.init_channels, trial_cfg.proxy.layers, trial_cfg.data.image_size) == \
        (args["init_channels"], args["layers"], args["image_size"])
    from search_spaces.target import resolve_target

    assert resolve_target(trial_cfg.target) == resolve_target(args["target"])  # params counted alike
    assert "examples/nni/trial.yaml" in canon.trial_command
    # the meta file registers the tuner class
    meta = yaml.safe_load((EXAMPLES / "nni" / "pareto_tuner.yml").read_text())
    assert meta["algoType"] == "tuner" and meta["builtinName"] == "ParetoEvolution"
    assert meta["className"] == "strategies.tuner.ParetoTuner"
    import importlib

    for key in ("className", "classArgsValidator"):
        module, name = meta[key].rsplit(".", 1)
        assert getattr(importlib.import_module(module), name) in (ParetoTuner, ParetoTunerClassArgsValidator)


def test_read_experiment_and_export(tmp_path, capsys):
    exp_dir = tmp_path / "work" / "fakeid"
    genotypes = make_fake_experiment(exp_dir, {"init_channels": 2, "layers": 3, "image_size": 8,
                                               "objectives": ["accuracy:max", "params:min"]})
    records, profile = read_experiment(exp_dir / "db" / "nni.sqlite")
    assert profile["experimentName"] == "fake"
    assert [r["trial"] for r in records] == list(range(7))
    assert [r["status"] for r in records] == ["ok"] * 5 + ["failed", "running"]
    assert records[1]["accuracy"] == 92.0 and records[1]["params"] == 4000
    assert parse_genotype(records[3]["genotype"]) == genotypes[3]

    out = tmp_path / "report"
    rep = export(str(exp_dir), out)
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "knee" in printed
    for name in ("pareto.yaml", "pareto.png", "knee_genotype.yaml", "knee_normal.png", "knee_reduce.png",
                 "trials.jsonl"):
        assert (out / name).is_file(), name
    # the float-metric trial got its params/flops counted on the tuner's target network (classArgs target, default cifar10)
    rec4 = [json.loads(l) for l in (out / "trials.jsonl").read_text().splitlines()][4]
    from search_spaces.genotype_space import GenotypeSpace

    proxy = GenotypeSpace("osep", 4, init_channels=2, layers=3, input_size=(3, 8, 8))
    assert rec4["params"] == proxy.cheap_metrics(genotypes[4])["params"] and rec4["accuracy"] == 70.0
    front_ids = {r["trial"] for r in rep.front}
    assert {0, 1, 2} <= front_ids and 3 not in front_ids and 5 not in front_ids and 6 not in front_ids
    doc = yaml.safe_load((out / "pareto.yaml").read_text())
    assert {m["id"] for m in doc["front"]} == front_ids
    assert all(isinstance(parse_genotype(m["genotype"]), Genotype) for m in doc["front"])

    # by ID through nnictl's experiment list, and by the db file; the CLI's one-line errors
    home = tmp_path / "home"
    home.mkdir()
    (home / ".experiment").write_text(json.dumps({"fakeid": {"id": "fakeid", "logDir": str(tmp_path / "work")}}))
    old = cli_export._nni_home
    cli_export._nni_home = lambda: home
    try:
        assert find_source("fakeid").path == exp_dir / "db" / "nni.sqlite"
        assert cli_main(["export", "--experiment", "fakeid", "--out", str(tmp_path / "byid"), "--no-plots"]) == 0
        assert (tmp_path / "byid" / "pareto.yaml").is_file() and not (tmp_path / "byid" / "pareto.png").exists()
        assert cli_main(["export", "--experiment", "nosuchid"]) == 2
    finally:
        cli_export._nni_home = old
    assert find_source(str(exp_dir / "db" / "nni.sqlite")).name == "fakeid"
    (tmp_path / "empty").mkdir()
    assert cli_main(["export", "--experiment", str(tmp_path / "empty")]) == 2
    (tmp_path / "bad.sqlite").write_text("not a database")
    assert cli_main(["export", "--experiment", str(tmp_path / "bad.sqlite"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("osep-nas export: error:") for line in err)


def test_export_search_folder(tmp_path, capsys):
    """A folder written by osep-nas search (trials.jsonl lines as strategies.search.trial_record makes)."""
    folder = tmp_path / "search"
    folder.mkdir()
    recs = []
    for i, (acc, params) in enumerate([(90.0, 3000), (93.0, 4500), (88.0, 2500), (85.0, 4000)]):
        recs.append({"trial": i, "status": "ok", "origin": "random", "parent": None, "accuracy": acc,
                     "params": params, "flops": 10 * params, "train_loss": 0.1, "train_s": 1.0, "reason": None,
                     "genotype": repr(random_genotype(OPS, 4, seed=10 + i))})
    recs.append({"trial": 4, "status": "failed", "origin": "random", "parent": None, "accuracy": None,
                 "params": 1000, "flops": 1, "reason": "boom", "genotype": repr(random_genotype(OPS, 4, seed=20))})
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (folder / "config.yaml").write_text(yaml.safe_dump({"search": {"objectives": ["accuracy:max", "params:min"]}}))
    assert cli_main(["export", "--experiment", str(folder), "--out", str(tmp_path / "out")]) == 0
    doc = yaml.safe_load((tmp_path / "out" / "pareto.yaml").read_text())
    assert sorted(m["id"] for m in doc["front"]) == [0, 1, 2]
    assert (tmp_path / "out" / "knee_normal.png").is_file()
    assert "Pareto front" in capsys.readouterr().out


def test_remote_training_service_example_passes_nni_validation(tmp_path):
    """examples/search_remote.yml: NNI's own ExperimentConfig validation accepts it (offline,
    no connection), with the trial command, space, tuner and proxy of examples/search.yml."""
    from nni.experiment.config import ExperimentConfig
    from nni.experiment.config.training_services import RemoteConfig

    local = ExperimentConfig.load(str(EXAMPLES / "search.yml"))
    remote = ExperimentConfig.load(str(EXAMPLES / "search_remote.yml"))
    # NNI checks that each machine's SSH key exists on THIS machine: point them at a stand-in
    key = tmp_path / "id_ed25519"
    key.write_text("stand-in key\n")
    assert [m.ssh_key_file for m in remote.training_service.machine_list] == ["~/.ssh/id_ed25519"] * 2
    for machine in remote.training_service.machine_list:
        machine.ssh_key_file = str(key)
    remote.validate()  # raises on any schema error; it makes no connection
    canon, lcanon = remote.canonical_copy(), local.canonical_copy()
    ts = canon.training_service
    assert isinstance(ts, RemoteConfig) and ts.platform == "remote" and ts.reuse_mode is True
    assert [(m.host, m.port, m.user) for m in ts.machine_list] == [("192.0.2.11", 22, "alice"),
                                                                  ("192.0.2.12", 22, "alice")]
    assert all(m.python_path == "/home/alice/osep-nas/.venv/bin" for m in ts.machine_list)
    assert canon.trial_command == lcanon.trial_command
    assert canon.search_space_file == lcanon.search_space_file
    assert canon.trial_code_directory == lcanon.trial_code_directory == str(ROOT)
    assert (canon.tuner.class_name, canon.tuner.code_directory) == (lcanon.tuner.class_name,
                                                                    lcanon.tuner.code_directory)
    proxy_keys = ("init_channels", "layers", "image_size", "objectives", "target")
    assert {k: canon.tuner.class_args[k] for k in proxy_keys} == {k: lcanon.tuner.class_args[k] for k in proxy_keys}
    from strategies.tuner import ParetoTunerClassArgsValidator

    ParetoTunerClassArgsValidator().validate_class_args(**canon.tuner.class_args)
    # what NNI uploads to the machines leaves the local venv and outputs behind
    ignored = (ROOT / ".nniignore").read_text().split()
    assert {".venv/", "runs/", ".git/"} <= set(ignored)
    # and the validation is real: a machine without a key or password is refused
    bad = ExperimentConfig.load(str(EXAMPLES / "search_remote.yml"))
    bad.training_service.machine_list[0].ssh_key_file = str(tmp_path / "missing_key")
    with pytest.raises(ValueError, match="SSH key file"):
        bad.validate()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_nnictl_end_to_end(tmp_path):
    """From an NNI registry where nothing is registered, nnictl create the example as it is
    (its tuner given by className + codeDirectory; only the trial count, the proxy's steps and
    the folders shrunk): 4 trials SUCCEEDED with a dict metric, nnictl stop, then export."""
    venv_bin = Path(sys.executable).parent
    nnictl = venv_bin / "nnictl"
    if not nnictl.exists():
        pytest.skip("nnictl is not installed next to this python")
    # NNI keeps registered algorithms in <config dir>/registered_algorithms.yml, the config dir
    # being $NNI_CONFIG_DIR, else <venv>/nni (nni.runtime.config.get_config_directory): an empty
    # temporary one here. Own HOME too (nnictl's experiment list, ~/nni-experiments/.experiment,
    # which concurrent NNI runs rewrite).
    config_dir = tmp_path / "nni-config"
    # The native kernel stays in the user's torch extension cache (a new HOME would rebuild it).
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "torch_extensions")
    env = dict(os.environ, NNI_CONFIG_DIR=str(config_dir), HOME=str(tmp_path / "home"),
               PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONWARNINGS="ignore",
               TORCH_EXTENSIONS_DIR=extensions)
    config_dir.mkdir()
    (tmp_path / "home").mkdir()

    def nnictl_run(*args, timeout=120):
        return subprocess.run([str(nnictl), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    listing = nnictl_run("algo", "list")
    assert listing.returncode == 0 and "ParetoEvolution" not in listing.stdout, listing.stdout
    registered = yaml.safe_load((config_dir / "registered_algorithms.yml").read_text()) or {}
    assert all(not v for v in registered.values()), registered  # nothing registered
    doc = yaml.safe_load((EXAMPLES / "search.yml").read_text())
    doc.update(searchSpaceFile=str(EXAMPLES / "nni" / "search_space.json"), trialCodeDirectory=str(ROOT),
               experimentWorkingDirectory=str(tmp_path / "exps"), maxTrialNumber=4,
               trialCommand=doc["trialCommand"] + " --set proxy.steps=20")  # the example's command, on PATH
    config = tmp_path / "search.yml"
    assert doc["tuner"]["className"] == "strategies.tuner.ParetoTuner" and "name" not in doc["tuner"]
    doc["tuner"]["codeDirectory"] = str(ROOT)  # was relative to examples/
    config.write_text(yaml.safe_dump(doc))
    trials, listing, exp_id = None, None, None
    try:
        create = nnictl_run("create", "--config", str(config), "--port", str(_free_port()))
        assert create.returncode == 0, create.stdout + create.stderr
        exp_id = next(p.name for p in (tmp_path / "exps").iterdir()
                      if p.is_dir() and not p.is_symlink() and not p.name.startswith("_"))  # not _latest
        db = tmp_path / "exps" / exp_id / "db" / "nni.sqlite"
        deadline = time.time() + 420
        while time.time() < deadline:
            time.sleep(5)
            if db.is_file():
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                try:
                    done = con.execute("select count(*) from TrialJobEvent where event in "
                                       "('SUCCEEDED','FAILED','USER_CANCELED','SYS_CANCELED')").fetchone()[0]
                except sqlite3.Error:
                    done = 0
                finally:
                    con.close()
                if done >= 4:
                    break
        for _ in range(6):  # the REST server may answer late on a busy machine
            listing = nnictl_run("trial", "ls", exp_id)
            try:
                trials = json.loads(listing.stdout)
                break
            except ValueError:
                time.sleep(5)
    finally:
        for _ in range(3):  # never leave an NNI manager running (HOME is ours: --all is only ours)
            stop = nnictl_run("stop", "--all")
            if "success" in (stop.stdout + stop.stderr).lower():
                break
            time.sleep(5)
    assert trials is not None, (listing.stdout, listing.stderr)
    assert len(trials) == 4, listing.stdout
    for t in trials:
        assert t["status"] == "SUCCEEDED", t
        metric = json.loads(json.loads(t["finalMetricData"][0]["data"]))
        assert set(metric) >= {"default", "params", "flops"}
        assert 0.0 <= metric["default"] <= 100.0
        assert isinstance(metric["params"], int) and metric["params"] > 0 and metric["flops"] > 0
        # the parameters NNI sent are a valid genotype of the example's space
        hp = t["hyperParameters"][0]
        genotype = params_to_genotype((json.loads(hp) if isinstance(hp, str) else hp)["parameters"])
        assert len(genotype.normal) == len(genotype.reduce) == 8
    # still nothing registered: the tuner came from className + codeDirectory
    assert "ParetoEvolution" not in nnictl_run("algo", "list").stdout
    # the stopped experiment exports, by its ID (nnictl's experiment list in HOME)
    out = subprocess.run([str(venv_bin / "osep-nas"), "export", "--experiment", exp_id, "--out",
                          str(tmp_path / "report")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Pareto front" in out.stdout and (tmp_path / "report" / "pareto.png").is_file()
    assert len(yaml.safe_load((tmp_path / "report" / "pareto.yaml").read_text())["front"]) >= 1
    shutil.rmtree(tmp_path / "exps", ignore_errors=True)
