"""Issue 9: a corpus of bad input, run through the real ``osep-nas`` command line.

Every case must end with exit status 2, exactly one line on stderr that starts with
``osep-nas`` and names the problem (a keyword, as a regex), no traceback, no payload run
(a marker file stays absent) and not one byte changed in the output folder, which is
pre-populated with a few files and is also the working directory (so a stray relative
write shows up too).

Three ways to run a case:

* ``inproc``: ``osep_nas.cli.main(argv)`` in this process (fast; most cases);
* ``subprocess``: ``python -m osep_nas.cli`` - proves what a user sees (no traceback,
  no warning lines);
* ``guarded``: a subprocess under an address-space limit and a timeout, for inputs
  that try to exhaust memory (alias bombs, absurd sizes): a bug there must fail the
  test, not take the test machine down.

Static inputs live in ``tests/bad_inputs/``; large and binary ones (10 MB of junk,
CIFAR pickles, checkpoints carrying pickled code, search states) are generated once per
module.  Checkpoints go through ``train --resume`` and ``eval --checkpoint``.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import resource
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch

from osep_nas.cli import main

STATIC = Path(__file__).parent / "bad_inputs"
GUARD_BYTES = 4 << 30  # address-space limit of a guarded case
GUARD_TIMEOUT = 90
SUBPROCESS_TIMEOUT = 120

# Flags that keep an accidentally accepted run tiny (it would still write files: caught).
TINY_TRAIN = ["--set", "data.image_size=8", "--set", "data.padding=1", "--set", "data.batch_size=32",
              "--epochs", "1", "--set", "max_steps_per_epoch=1", "--set", "training.tensorboard=false",
              "--device", "cpu"]
TINY_MODEL = ["--model", "resnet20", "--set", "model.width_mult=0.25"]
TINY_DARTS = ["--set", "model.init_channels=4", "--set", "model.layers=3"]
SEARCH = ["--set", "search.strategy=evolution", "--set", "proxy.steps=5", "--set", "search.population_size=2", "--set", "search.sample_size=1",
          "--set", "proxy.max_val_images=64", "--set", "output.plots=false", "--set", "search.round_size=1",
          "--set", "search.workers=1", "--set", "target.init_channels=8", "--set", "target.layers=5", "--quiet"]


def train(*args: str) -> List[str]:
    return ["train", *TINY_MODEL, *TINY_TRAIN, *args, "--out", "{out}"]


def train_genotype(genotype: str) -> List[str]:
    return ["train", "--genotype", genotype, *TINY_DARTS, *TINY_TRAIN, "--out", "{out}"]


def resume(*args: str) -> List[str]:
    return ["train", *TINY_MODEL, *TINY_TRAIN, "--epochs", "2", *args, "--resume", "--out", "{out}"]


def evaluate(genotype: str, *args: str) -> List[str]:
    return ["eval", "--genotype", genotype, *args, "--json", "{out}/result.json"]


def evaluate_ckpt(path: str) -> List[str]:
    return ["eval", "--checkpoint", path, "--json", "{out}/result.json"]


def export(experiment: str) -> List[str]:
    return ["export", "--experiment", experiment, "--no-plots", "--out", "{out}/export"]


def search(*args: str) -> List[str]:
    return ["search", *SEARCH, "--trials", "3", *args, "--out", "{out}/search"]


# ----------------------------------------------------------------------------- preparations

def put(name: str, as_name: str) -> Callable[[Path, Path, Callable], None]:
    """Copy corpus file ``name`` into the output folder as ``as_name``."""
    def prep(corpus: Path, out: Path, fixture: Callable) -> None:
        src = corpus / name
        if src.is_dir():
            shutil.copytree(src, out / as_name)
        else:
            shutil.copyfile(src, out / as_name)
    return prep


def mkdir_at(as_name: str) -> Callable[[Path, Path, Callable], None]:
    def prep(corpus: Path, out: Path, fixture: Callable) -> None:
        (out / as_name).mkdir()
    return prep


def search_state(mutate: Callable[[dict], None]) -> Callable[[Path, Path, Callable], None]:
    """A real search folder (3 trials asked for, 2 done) with its state.json tampered."""
    def prep(corpus: Path, out: Path, fixture: Callable) -> None:
        base = fixture("search_base")
        shutil.copytree(base, out / "search")
        path = out / "search" / "state.json"
        state = json.loads(path.read_text())
        mutate(state)
        path.write_text(json.dumps(state))
    return prep


def garbage_state(corpus: Path, out: Path, fixture: Callable) -> None:
    shutil.copytree(fixture("search_base"), out / "search")
    (out / "search" / "state.json").write_text("{not json")


# ----------------------------------------------------------------------------- the corpus

@dataclass(frozen=True)
class Case:
    id: str
    argv: Tuple[str, ...]
    keyword: str                      # regex, case-insensitive, searched in the stderr line
    mode: str = "inproc"              # inproc | subprocess | guarded
    prep: Optional[Callable[[Path, Path, Callable], None]] = None


def C(id: str, argv: List[str], keyword: str, mode: str = "inproc", prep=None) -> Case:
    return Case(f"bad_input-{id}", tuple(argv), keyword, mode, prep)


CASES: List[Case] = [
    # -- genotype texts: eval --genotype and train --genotype
    C("genotype-code_injection-eval", evaluate("__import__('os').system('touch {marker}')"), "not allowed",
      "subprocess"),
    C("genotype-code_injection_file-train", train_genotype("{c}/genotype_code_injection.txt"), "not allowed"),
    C("genotype-python_yaml_tag-eval", evaluate("{c}/genotype_python_tag.yaml"), "yaml|tag"),
    C("genotype-unknown_op-eval", evaluate("{c}/genotype_unknown_op.txt"), "unknown op 'conv_9x9_evil'"),
    C("genotype-unknown_op-train", train_genotype("{c}/genotype_unknown_op.txt"), "unknown op 'conv_9x9_evil'"),
    C("genotype-bad_index-eval", evaluate("{c}/genotype_bad_index.txt"), "out of range"),
    C("genotype-bad_index-train", train_genotype("{c}/genotype_bad_index.txt"), "out of range"),
    C("genotype-wrong_nesting-eval", evaluate("{c}/genotype_wrong_nesting.txt"), "pair"),
    C("genotype-wrong_nesting-train", train_genotype("{c}/genotype_wrong_nesting.txt"), "pair"),
    C("genotype-empty-eval", evaluate(""), "empty"),
    C("genotype-empty-train", train_genotype("   "), "empty|genotype"),
    C("genotype-10mb_junk_text-eval", evaluate("{junk10mb}"), "too large"),
    C("genotype-10mb_junk_file-train", train_genotype("{c}/junk_10mb.txt"), "too large"),
    C("genotype-10mb_junk_file-eval", evaluate("{c}/junk_10mb.txt"), "too large"),
    C("genotype-non_utf8_file-eval", evaluate("{c}/genotype_latin1.txt"), "utf-8"),
    C("genotype-deep_nesting-eval", evaluate("[" * 100_000), "nested|deep"),
    C("genotype-folder-eval", evaluate("{c}"), "folder|not a file"),
    C("genotype-alias_bomb-eval", evaluate("{c}/genotype_alias_bomb.yaml"), "alias|anchor|pair", "guarded"),
    C("genotype-device_file-eval", evaluate("/dev/zero"), "not a (regular )?file|too large", "guarded"),
    C("genotype-device_file-train", train_genotype("/dev/zero"), "not a (regular )?file|too large", "guarded"),
    # -- YAML configs: train --config
    C("config-unknown_key-train", train("--config", "{c}/config_unknown_key.yaml"), "unknown key"),
    C("config-wrong_type-train", train("--config", "{c}/config_wrong_type.yaml"), "optim.lr: expected a number"),
    C("config-nan-train", train("--config", "{c}/config_nan.yaml"), "finite"),
    C("config-alias_bomb-train", train("--config", "{c}/config_alias_bomb.yaml"), "alias|anchor"),
    C("config-python_yaml_tag-train", train("--config", "{c}/config_python_tag.yaml"), "yaml", "subprocess"),
    C("config-non_utf8-train", train("--config", "{c}/config_non_utf8.yaml"), "utf-8"),
    C("config-top_level_list-train", train("--config", "{c}/config_top_level_list.yaml"), "top level"),
    C("config-too_large-train", train("--config", "{c}/config_too_large.yaml"), "bytes"),
    C("config-missing-train", train("--config", "{c}/no_such_config.yaml"), "not found"),
    C("config-folder-train", train("--config", "{c}"), "not a file"),
    C("config-bad_set_override-train", train("--set", "optim.lr=[1, 2]"), "optim.lr"),
    C("config-hostile_resume_config_yaml-train", ["train", "--resume", "--out", "{out}"], "yaml",
      prep=put("config_python_tag.yaml", "config.yaml")),
    # -- command-line arguments
    C("args-plan_zero_channels", ["plan", "0", "16", "3"], "in_channels"),
    C("args-plan_negative_kernel", ["plan", "16", "16", "-3"], "kernel_size"),
    C("args-plan_one_conv", ["plan", "16", "16", "3", "--n-convs", "1"], "n_convs"),
    C("args-plan_n_convs_not_a_number", ["plan", "16", "16", "3", "--n-convs", "x"], "--n-convs"),
    C("args-plan_gamma_nan", ["plan", "16", "16", "3", "--gamma", "nan"], "gamma"),
    C("args-plan_zero_size", ["plan", "16", "16", "3", "--size", "0"], "--size"),
    C("args-plan_huge_channels", ["plan", "1000000000", "1000000000", "3"], "channels", "guarded"),
    C("args-train_zero_epochs", train("--epochs", "0"), "training.epochs"),
    C("args-train_zero_batch", train("--set", "data.batch_size=0"), "batch_size"),
    C("args-train_unknown_model", ["train", "--model", "nosuchnet", *TINY_TRAIN, "--out", "{out}"], "unknown model"),
    C("args-train_unknown_dataset", train("--dataset", "mnist"), "--dataset"),
    C("args-train_fewer_classes_than_data", train("--set", "model.num_classes=3"), "num_classes"),
    C("args-train_huge_image_size", train("--set", "data.image_size=100000"), "image_size|memory", "guarded"),
    C("args-train_huge_channels", ["train", "--genotype", "O_DARTS", "--set", "model.init_channels=100000",
                                   "--set", "model.layers=3", *TINY_TRAIN, "--out", "{out}"],
      "init_channels|memory", "guarded"),
    C("args-eval_zero_channels", evaluate("O_DARTS", "--init-channels", "0"), "--init-channels"),
    C("args-eval_two_layers", evaluate("O_DARTS", "--layers", "2"), "layers"),
    C("args-eval_json_in_missing_folder", ["eval", "--genotype", "O_DARTS", "--layers", "3", "--init-channels", "4",
                                           "--no-latency", "--json", "{out}/missing/result.json"], "does not exist"),
    C("args-eval_huge_batch", evaluate("O_DARTS", "--layers", "3", "--init-channels", "4", "--batch-sizes",
                                       "100000000"), "batch|memory", "guarded"),
    C("args-unknown_command", ["nosuchcommand", "--out", "{out}"], "invalid choice"),
    C("args-search_unknown_strategy", search("--set", "search.strategy=annealing"), "search.strategy"),
    C("args-search_zero_trials", ["search", *SEARCH, "--trials", "0", "--out", "{out}/search"], "--trials"),
    C("args-search_unknown_metric", search("--set", "search.objectives=[accuracy:max, latency:min]"),
      "unknown metric"),
    C("args-search_missing_data", search("--data", "{out}/no_such_folder"), "not found"),
    C("args-search_huge_num_nodes", search("--set", "space.num_nodes=100000"), "num_nodes", "guarded"),
    C("args-search_huge_channels", search("--set", "proxy.init_channels=100000"), "init_channels|memory", "guarded"),
    # -- data folders: train --data
    C("data-missing-train", train("--dataset", "cifar10", "--data", "{c}/no_such_folder"), "not found"),
    C("data-wrong_layout-train", train("--dataset", "cifar10", "--data", "{c}/cifar_empty"), "missing data_batch_1"),
    C("data-is_a_file-train", train("--dataset", "cifar10", "--data", "{c}/config_nan.yaml"), "not a folder"),
    C("data-truncated_pickle-train", train("--dataset", "cifar10", "--data", "{c}/cifar_truncated"), "truncated"),
    C("data-labels_out_of_range-train", train("--dataset", "cifar10", "--data", "{c}/cifar_labels"),
      "label 10 out of range"),
    C("data-wrong_shape-train", train("--dataset", "cifar10", "--data", "{c}/cifar_shape"), "3072"),
    C("data-pickle_carrying_code-train", train("--dataset", "cifar10", "--data", "{c}/cifar_code"),
      "refused.*system", "subprocess"),
    C("data-imagenet_no_train_folder-train", train("--dataset", "imagenet", "--data", "{c}/cifar_empty"), "train/"),
    # -- checkpoints: train --resume (eval has no --checkpoint)
    C("checkpoint-truncated-resume", resume(), "truncated|corrupt", prep=put("ckpt_truncated.pt", "last.pt")),
    C("checkpoint-random_bytes-resume", resume(), "checkpoint", prep=put("ckpt_random.pt", "last.pt")),
    C("checkpoint-empty-resume", resume(), "empty", prep=put("ckpt_empty.pt", "last.pt")),
    C("checkpoint-another_model-resume", resume(), "does not fit this model",
      prep=put("ckpt_other_model.pt", "last.pt")),
    C("checkpoint-pickled_os_system-resume", resume(), "refused.*system", "subprocess",
      prep=put("ckpt_code_zip.pt", "last.pt")),
    C("checkpoint-raw_pickle_os_system-resume", resume(), "refused", "subprocess",
      prep=put("ckpt_code_pickle.pt", "last.pt")),
    C("checkpoint-not_a_dict-resume", resume(), "not an osep-nas checkpoint", prep=put("ckpt_list.pt", "last.pt")),
    C("checkpoint-missing_keys-resume", resume(), "lacks", prep=put("ckpt_lacks.pt", "last.pt")),
    C("checkpoint-more_epochs_than_asked-resume", resume(), "already holds", prep=put("ckpt_epoch99.pt", "last.pt")),
    C("checkpoint-folder_not_file-resume", resume(), "folder, not a regular file", prep=mkdir_at("last.pt")),
    C("checkpoint-nothing_to_resume-resume", resume(), "nothing to resume"),
    C("checkpoint-truncated-eval", evaluate_ckpt("{c}/ckpt_truncated.pt"), "truncated|corrupt"),
    C("checkpoint-random_bytes-eval", evaluate_ckpt("{c}/ckpt_random.pt"), "checkpoint"),
    C("checkpoint-pickled_os_system-eval", evaluate_ckpt("{c}/ckpt_code_zip.pt"), "refused.*system"),
    C("checkpoint-no_stored_config-eval", evaluate_ckpt("{c}/ckpt_lacks.pt"), "lacks.*config"),
    C("checkpoint-stored_config_invalid-eval", evaluate_ckpt("{c}/ckpt_bad_config.pt"), "optim.lr"),
    C("checkpoint-another_model-eval", evaluate_ckpt("{c}/ckpt_mismatch.pt"), "does not fit this model"),
    C("checkpoint-stored_genotype_device_file-eval", evaluate_ckpt("{c}/ckpt_genotype_dev_zero.pt"),
      "not a (regular )?file|too large", "guarded"),
    C("checkpoint-stored_config_shared_reference_bomb-eval", evaluate_ckpt("{c}/ckpt_config_bomb.pt"),
      "optim.lr|too (large|big|many)|expected a number", "guarded"),
    C("checkpoint-stored_huge_image_size-eval", evaluate_ckpt("{c}/ckpt_huge_image.pt"), "image_size|memory",
      "guarded"),
    # -- search state: search --resume
    C("search_state-not_json-resume", search("--resume"), "unreadable", prep=garbage_state),
    C("search_state-missing_rng-resume", search("--resume"), "state",
      prep=search_state(lambda s: s["evolution"].pop("rng"))),
    C("search_state-history_not_a_list-resume", search("--resume"), "state|history",
      prep=search_state(lambda s: s["evolution"].__setitem__("history", 5))),
    C("search_state-code_as_candidate-resume", search("--resume"), "genotype",
      prep=search_state(lambda s: s["evolution"]["history"][0].__setitem__("candidate", "__import__('os')"))),
    C("search_state-other_config-resume", search("--resume"), "differs",
      prep=search_state(lambda s: s["config"]["proxy"].__setitem__("steps", 7))),
    # -- nnictl trials and experiment exports: trial --params, export --experiment
    C("trial-malformed_json-trial", ["trial", "--params", "{normal/op_2_0: osep_3x3"], "malformed json"),
    C("trial-unknown_op-trial", ["trial", "--params", "{c}/trial_unknown_op.json"], "unknown op 'rm_rf'"),
    C("export-garbage_trials-export", export("{c}/export_garbage"), "not a json line"),
    C("export-not_a_database-export", export("{c}/export_not_a_db.sqlite"), "not an nni experiment database"),
    C("export-unknown_experiment_id-export", export("no_such_experiment_id"), "no experiment"),
    C("export-alias_bomb_config-export", export("{c}/export_bomb"), "alias|anchor|objectives|yaml", "guarded"),
    # -- nnictl search spaces: space --check
    C("space-malformed_json-check", ["space", "--check", "{c}/space_malformed.json"], "malformed json"),
    C("space-wrong_type-check", ["space", "--check", "{c}/space_wrong_type.json"], "_type 'uniform'"),
    C("space-unknown_op-check", ["space", "--check", "{c}/space_unknown_op.json"], "unknown op 'rm_rf'"),
    C("space-not_an_object-check", ["space", "--check", "{c}/space_not_object.json"], "object"),
    C("space-deep_nesting-check", ["space", "--check", "{c}/space_deep.json"], "nested"),
    C("space-too_large-check", ["space", "--check", "{c}/space_too_large.json"], "too large"),
    C("space-missing-check", ["space", "--check", "{c}/no_such_space.json"], "not found"),
    C("space-python_yaml_tag-check", ["space", "--check", "{c}/space_python_tag.yaml"], "yaml", "subprocess"),
    C("space-alias_bomb-check", ["space", "--check", "{c}/space_alias_bomb.yaml"], "alias|anchor|unknown op",
      "guarded"),
]


# ----------------------------------------------------------------------------- corpus files

class _Evil:
    """Pickles to a call of os.system (never unpickled by a correct reader)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cifar(folder: Path, n: int = 10, **replace: dict) -> None:
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = replace.get(name, {b"data": np.zeros((n, 3072), np.uint8), b"labels": [i % 10 for i in range(n)]})
        with open(folder / name, "wb") as fh:
            pickle.dump(d, fh, protocol=2)


def _resume_state(model: torch.nn.Module, epoch: int = 1) -> dict:
    from osep_nas.checkpoint import capture_rng_state

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": {"epoch": epoch},
            "rng": capture_rng_state(), "epoch": epoch}


def build_corpus(root: Path, marker: Path) -> None:
    from osep_nas.checkpoint import save_checkpoint
    from osep_nas.models import create_model

    for f in STATIC.iterdir():
        if f.is_file() and f.name != "README.md":
            (root / f.name).write_bytes(f.read_bytes().replace(b"@MARKER@", str(marker).encode()))
    rng = random.Random(9)
    (root / "junk_10mb.txt").write_bytes(bytes(rng.choice(b"abc(){}[]'\":, \n=*&!") for _ in range(1 << 16)) * 160)
    (root / "genotype_latin1.txt").write_bytes("Genotype(normal=[('sép_conv_3x3', 0)])".encode("latin-1"))
    (root / "config_too_large.yaml").write_text("# " + "x" * (1 << 20) + "\noptim: {lr: 0.1}\n")
    (root / "space_deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "space_too_large.json").write_text("{}" + " " * 2_000_001)
    # data folders
    (root / "cifar_empty").mkdir()
    _cifar(root / "cifar_truncated")
    data = (root / "cifar_truncated" / "data_batch_1").read_bytes()
    (root / "cifar_truncated" / "data_batch_1").write_bytes(data[: len(data) // 2])
    _cifar(root / "cifar_labels", data_batch_3={b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9 + [10]})
    _cifar(root / "cifar_shape", test_batch={b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10})
    _cifar(root / "cifar_code", data_batch_1={b"data": _Evil(marker), b"labels": [0]})
    # checkpoints
    torch.manual_seed(0)
    other = create_model("o_resnet20", width_mult=0.5)
    save_checkpoint(root / "ckpt_other_model.pt", _resume_state(other))
    data = (root / "ckpt_other_model.pt").read_bytes()
    (root / "ckpt_truncated.pt").write_bytes(data[: len(data) // 2])
    (root / "ckpt_random.pt").write_bytes(rng.randbytes(4096))
    (root / "ckpt_empty.pt").write_bytes(b"")
    torch.save({"model": _Evil(marker), "optimizer": {}, "scheduler": {}, "rng": {}, "epoch": 1},
               root / "ckpt_code_zip.pt")
    with open(root / "ckpt_code_pickle.pt", "wb") as fh:  # a plain pickle, not torch's zip format
        pickle.dump({"model": _Evil(marker), "epoch": 1}, fh, protocol=4)
    torch.save([1, 2, 3], root / "ckpt_list.pt")
    torch.save({"model": {}}, root / "ckpt_lacks.pt")
    save_checkpoint(root / "ckpt_epoch99.pt", {**_resume_state(torch.nn.Linear(2, 2)), "epoch": 99})
    # nnictl trial parameters and experiment folders
    from search_spaces.hpo import to_nni_search_space

    params = {k: v["_value"][0] for k, v in to_nni_search_space("osep", 4).items()}
    (root / "trial_unknown_op.json").write_text(json.dumps({**params, "normal/op_2_0": "rm_rf"}))
    (root / "export_garbage").mkdir()
    (root / "export_garbage" / "trials.jsonl").write_text('not json at all\n{"trial": 0, "status": "ok"}\n')
    (root / "export_not_a_db.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(200))
    (root / "export_bomb").mkdir()
    (root / "export_bomb" / "trials.jsonl").write_text(json.dumps(
        {"trial": 0, "status": "ok", "accuracy": 50.0, "params": 100, "flops": 1000,
         "genotype": "O_DARTS"}) + "\n")
    bomb = (root / "genotype_alias_bomb.yaml").read_text().splitlines()[1]  # normal: [[&a0 ..., *a8]], ...
    (root / "export_bomb" / "config.yaml").write_text("search:\n  objectives: " + bomb.split(": ", 1)[1] + "\n")
    # checkpoints for eval --checkpoint, which rebuilds model and data from the stored config
    tiny = {"model": {"name": "resnet20", "width_mult": 0.25}, "data": {"dataset": "digits", "image_size": 8}}
    save_checkpoint(root / "ckpt_bad_config.pt", {"model": {}, "config": {"optim": {"lr": "fast"}}})
    save_checkpoint(root / "ckpt_mismatch.pt", {"model": other.state_dict(), "config": tiny})
    save_checkpoint(root / "ckpt_genotype_dev_zero.pt", {"model": {}, "config": {
        "model": {"genotype": "/dev/zero", "init_channels": 4, "layers": 3}, "data": {"dataset": "digits"}}})
    bomb: list = ["lol"] * 9
    for _ in range(8):  # pickle's memo keeps the sharing: 1.5 kB on disk, 9**9 strings once copied or printed
        bomb = [bomb] * 9
    torch.save({"model": {}, "config": {"optim": {"lr": bomb}}}, root / "ckpt_config_bomb.pt")
    save_checkpoint(root / "ckpt_huge_image.pt", {"model": {}, "config": {
        **tiny, "data": {"dataset": "digits", "image_size": 100000}}})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    marker = tmp_path_factory.mktemp("marker") / "PWNED"
    build_corpus(root, marker)
    return root, marker


@pytest.fixture(scope="module")
def search_base(tmp_path_factory) -> Path:
    """A real, tiny search stopped after 2 of 3 trials (as if killed between trials)."""
    from strategies.search import load_search_config, run_search

    out = tmp_path_factory.mktemp("search_base") / "search"
    overrides = [a for a in SEARCH if a not in ("--set", "--quiet")] + ["search.trials=3"]
    cfg = load_search_config(None, overrides)
    before = torch.get_num_threads()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run_search(cfg, out, progress=False, stop_after=2)
    torch.set_num_threads(before)
    assert json.loads((out / "state.json").read_text())["evolution"]["history"][1]["index"] == 1
    return out


# ----------------------------------------------------------------------------- running

def snapshot(folder: Path) -> Dict[str, str]:
    """Every file (hidden ones too) -> sha256, every folder -> '<dir>'."""
    out: Dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "<link>" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "<dir>"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def populate(out: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("results of another experiment\n")
    (out / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (out / ".hidden").write_text("x")
    (out / "sub").mkdir()
    (out / "sub" / "keep.yaml").write_text("keep: true\n")


def _limit_memory() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (GUARD_BYTES, GUARD_BYTES))


def run_subprocess(argv: List[str], cwd: Path, guarded: bool) -> Tuple[int, str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)
    timeout = GUARD_TIMEOUT if guarded else SUBPROCESS_TIMEOUT
    try:
        proc = subprocess.run([sys.executable, "-m", "osep_nas.cli", *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, errors="replace", timeout=timeout,
                              preexec_fn=_limit_memory if guarded else None)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return -9, "", f"TIMEOUT after {timeout} s (no early refusal)\n{err[-2000:]}"
    return proc.returncode, proc.stdout, proc.stderr


def run_inproc(argv: List[str], capsys) -> Tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors exit from the parser, as the console script does
        rc = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        raise
    except BaseException:  # what the console script would print as a traceback
        cap = capsys.readouterr()
        return 1, cap.out, cap.err + traceback.format_exc()
    cap = capsys.readouterr()
    return int(rc), cap.out, cap.err


@pytest.fixture
def quiet_process_state():
    """One torch thread; the train command's log handler removed after each case."""
    logger = logging.getLogger("osep_nas.train")
    handlers, level = list(logger.handlers), logger.level
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _expand(argv: Tuple[str, ...], out: Path, corpus: Path, marker: Path) -> List[str]:
    junk = None
    result = []
    for a in argv:
        if a == "{junk10mb}":
            junk = junk or (corpus / "junk_10mb.txt").read_text()
            result.append(junk)
        else:
            result.append(a.replace("{out}", str(out)).replace("{c}", str(corpus)).replace("{marker}", str(marker)))
    return result


def _param(case: Case):
    marks = [pytest.mark.slow] if case.mode != "inproc" else []
    return pytest.param(case, id=case.id, marks=marks)


def test_bad_input_corpus_is_large_and_named():
    assert len(CASES) >= 30
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for area in ("genotype", "config", "args", "data", "checkpoint", "space", "search_state", "trial", "export"):
        assert any(i.startswith(f"bad_input-{area}-") for i in ids), area


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, corpus, tmp_path, monkeypatch, capsys, request, quiet_process_state):
    root, marker = corpus
    out = tmp_path / "out"
    populate(out)
    if case.prep is not None:
        case.prep(root, out, request.getfixturevalue)
    argv = _expand(case.argv, out, root, marker)
    before = snapshot(out)
    if case.mode == "inproc":
        monkeypatch.chdir(out)
        rc, stdout, stderr = run_inproc(argv, capsys)
    else:
        rc, stdout, stderr = run_subprocess(argv, out, guarded=case.mode == "guarded")
    after = snapshot(out)
    lines = [line for line in stderr.splitlines() if line.strip()]
    shown = "\n".join(lines[-15:])[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout, f"traceback:\n{shown}"
    assert rc == 2, f"exit status {rc}, stderr:\n{shown}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{shown}"
    assert lines[0].startswith("osep-nas"), lines[0]
    assert re.search(case.keyword, lines[0], re.IGNORECASE), f"{case.keyword!r} not in: {lines[0]}"
    assert not marker.exists(), "a payload ran"
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"output folder changed: {changed}"
