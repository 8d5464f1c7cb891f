"""Issue 21: property-based fuzzing (hypothesis) of every reader of user input.

Readers: genotype text (DARTS repr, JSON, YAML: ``parse_genotype``), YAML configs
(``load_config``, study files), ``--set`` overrides, the nnictl HPO space
(``check_search_space``), checkpoints (``load_checkpoint``), CIFAR python batches
(``read_cifar_batch`` and its restricted unpickler), the search's ``state.json``
(``run_search(resume=True)``) and ``trials.jsonl`` (``load_trials``).

Inputs are mostly grammar-aware: valid inputs with byte-level edits (deletions, inserted
grammar tokens and hostile payloads, bit flips, duplicated spans, truncation) and
structure-level edits (a value anywhere in the parsed tree replaced by another type, a
huge or negative number, NaN, a deep nesting, a payload string; a key dropped or added),
plus random text and random bytes.  The only allowed outcomes are a valid result, or a
ValueError / FileNotFoundError whose message is one line (no line break, at most
``MAX_MESSAGE`` characters).  No input may take more than 1 s of CPU time (an input over
the limit is timed again once, so a one-off warm-up cost does not fail the test), and no
input may run code: ``os.system``, ``subprocess.Popen`` and ``os.exec*`` are replaced by
tripwires during the fuzzing, and payloads that would create a marker file are checked.

How many inputs (one place, :func:`examples`):

* the fast tests (``test_fuzz_fast_*``, not marked slow) run ``FAST_EXAMPLES`` (60) per
  reader, about 20 s in all;
* the slow tests (``test_fuzz_slow_*``) run ``OSEP_NAS_FUZZ_EXAMPLES`` per reader,
  10,000 when it is unset (``pytest -m slow tests/ -k fuzz``); ``make test`` sets it to
  500 to keep CI within its time budget.

Hypothesis runs derandomized (a fixed seed), without its example database and without
its deadline (the 1 s CPU check above replaces it), so CI is reproducible.  Each test
prints its input count and outcome histogram (shown without ``-s``)."""
from __future__ import annotations

import collections
import json
import math
import os
import pickle
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST_EXAMPLES = 60
SLOW_DEFAULT = 10_000
MAX_MESSAGE = 1000
CPU_LIMIT_S = 1.0


def examples(slow: bool) -> int:
    """The number of inputs per reader: the one place that decides it."""
    if not slow:
        return int(os.environ.get("OSEP_NAS_FUZZ_FAST_EXAMPLES", FAST_EXAMPLES))
    return int(os.environ.get("OSEP_NAS_FUZZ_EXAMPLES", SLOW_DEFAULT))


def fuzz_settings(slow: bool) -> settings:
    return settings(max_examples=examples(slow), deadline=None, derandomize=True, database=None,
                    print_blob=False, suppress_health_check=list(HealthCheck))


# ----------------------------------------------------------------------------- the harness

class Tally:
    """Runs a reader on one input, checks the outcome, counts outcomes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.hist: collections.Counter = collections.Counter()
        self.slowest = 0.0
        self.t0 = time.time()

    def run(self, read: Callable[[], Any], shown: Any, valid: Optional[Callable[[Any], None]] = None) -> None:
        self.count += 1
        for attempt in (0, 1):
            start = time.process_time()
            outcome = self._once(read, shown, valid)
            took = time.process_time() - start
            if took <= CPU_LIMIT_S:
                break
            assert attempt == 0, \
                f"{self.name}: {took:.2f} s of CPU time (twice over {CPU_LIMIT_S} s) for {shown!r:.300}"
        self.slowest = max(self.slowest, took)
        self.hist[outcome] += 1

    def _once(self, read: Callable[[], Any], shown: Any, valid: Optional[Callable[[Any], None]]) -> str:
        try:
            result = read()
        except (ValueError, FileNotFoundError) as exc:
            msg = str(exc)
            assert msg.strip(), f"{self.name}: empty {type(exc).__name__} for {shown!r:.300}"
            assert "\n" not in msg and "\r" not in msg, \
                f"{self.name}: a message of {msg.count(chr(10)) + 1} lines for {shown!r:.300}: {msg[:600]!r}"
            assert len(msg) <= MAX_MESSAGE, f"{self.name}: a {len(msg)}-character message for {shown!r:.300}"
            return type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
            raise AssertionError(f"{self.name}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
                                 f"for input {shown!r:.400}") from exc
        if valid is not None:
            valid(result)
        return "valid"

    def report(self) -> str:
        hist = ", ".join(f"{k} {v}" for k, v in sorted(self.hist.items(), key=lambda kv: -kv[1]))
        return (f"fuzz {self.name}: {self.count} inputs in {time.time() - self.t0:.1f} s "
                f"(slowest {self.slowest * 1000:.0f} ms CPU): {hist}")


@pytest.fixture
def tally(request, capsys):
    tallies: List[Tally] = []

    def make(name: str) -> Tally:
        t = Tally(name)
        tallies.append(t)
        return t

    yield make
    with capsys.disabled():
        for t in tallies:
            print(f"\n{t.report()}", end="")


class _Tripwire(Exception):
    pass


@pytest.fixture
def no_code(monkeypatch, tmp_path):
    """Tripwires on the ways a payload could run a command; a marker path payloads name."""
    def trip(*a, **k):
        raise _Tripwire(f"code execution attempted: {a!r:.200}")

    import posix

    from osep_nas import kernels

    kernels.available()  # the native kernel's build check runs a compiler probe: before the tripwires
    for module in (os, posix):
        for name in ("system", "popen", "execv", "execve", "execvp", "execl", "posix_spawn", "spawnv", "fork"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, trip)
    monkeypatch.setattr(subprocess, "run", trip)
    monkeypatch.setattr(subprocess, "check_output", trip)
    yield MARKER
    assert not MARKER.exists(), "a fuzzed input ran code (the marker file exists)"


MARKER = Path(tempfile.gettempdir()) / f"osep-nas-fuzz-pwned-{os.getpid()}"
PAYLOADS = [
    f"__import__('os').system('touch {MARKER}')",
    f"eval(\"__import__('os').system('touch {MARKER}')\")",
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "&a [*a, *a, *a]",
    "*a",
    "<<: *a",
    "%TAG ! tag:yaml.org,2002:",
    "{{7*7}}",
    "${HOME}",
    "\x00", "\n", "\r\n", "\t", "\ufeff", "\u2028", "\udcff",
    "9" * 40, "-1", "-0", "1e309", "-1e309", ".nan", "NaN", "Infinity", "0x7fffffffffffffff", "1_000",
    "[" * 64, "]" * 64, "{" * 64, "(" * 64,
    "range(10**9)", "range(-1)", "Genotype(", "Genotype()", "True", "None", "null", "~",
]


def _tokens(extra: Sequence[str]) -> List[bytes]:
    return [t.encode("utf-8", "surrogatepass") for t in list(extra) + PAYLOADS]


@st.composite
def byte_mutants(draw, bases: Sequence[bytes], tokens: Sequence[bytes], max_edits: int = 6) -> bytes:
    """A valid input with 1..max_edits byte-level edits."""
    data = bytearray(draw(st.sampled_from(list(bases))))
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, len(data)))
        if op == 0:  # delete a span
            del data[pos:pos + draw(st.integers(1, 32))]
        elif op == 1:  # insert a grammar token or a payload
            data[pos:pos] = draw(st.sampled_from(list(tokens)))
        elif op == 2:  # insert random bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 3 and data:  # flip a bit
            i = min(pos, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 4 and data:  # duplicate a span
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[end:end] = data[pos:end]
        elif op == 5:  # truncate
            del data[pos:]
        elif op == 6 and data:  # overwrite with one byte value
            i = min(pos, len(data) - 1)
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(PAYLOADS),
)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4)),
                           max_leaves=12)


def _paths(obj: Any, prefix=()) -> List[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


@st.composite
def tree_mutants(draw, bases: Sequence[Any], max_edits: int = 3) -> Any:
    """A parsed valid input (dicts/lists) with 1..max_edits structural edits."""
    obj = json.loads(json.dumps(draw(st.sampled_from(list(bases)))))
    for _ in range(draw(st.integers(1, max_edits))):
        paths = _paths(obj)
        path = draw(st.sampled_from(paths))
        op = draw(st.integers(0, 5))
        if not path:
            if op == 0:
                obj = draw(JSON_VALUES)
            continue
        parent, key = _get(obj, path[:-1]), path[-1]
        if op == 0:  # another value, any type
            parent[key] = draw(JSON_VALUES)
        elif op == 1:  # drop it
            del parent[key]
        elif op == 2 and isinstance(parent, dict):  # an extra key
            parent[draw(st.one_of(st.text(max_size=10), st.sampled_from(list(map(str, parent)) + ["__class__"])))
                   ] = draw(JSON_VALUES)
        elif op == 3:  # a number at the edges
            parent[key] = draw(st.sampled_from([0, -1, 10 ** 12, 10 ** 30, -(10 ** 30), 2 ** 63, 1e308, -0.0,
                                                float("nan"), float("inf"), 0.5, True, False]))
        elif op == 4:  # nested deep
            value = parent[key]
            for _ in range(draw(st.integers(1, 40))):
                value = [value]
            parent[key] = value
        elif op == 5:  # the same value as a string, or a string as a list
            value = parent[key]
            parent[key] = [value] if isinstance(value, str) else str(value)
    return obj


def _dump_json(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _dump_yaml(obj: Any) -> bytes:
    return yaml.safe_dump(obj, allow_unicode=True).encode("utf-8", "surrogatepass")


RANDOM_TEXT = st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass"))
RANDOM_BYTES = st.binary(max_size=400)


def _file(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


def _assert_profile(t: Any, slow: bool) -> None:
    """Every input of the profile ran; the slow profile (500 in CI, 10,000 by hand) must also
    have produced valid inputs, or the grammar only ever tests the error paths. (The fast
    profile's 60 inputs may hold none for the rarer grammars, by chance.)"""
    assert t.count >= examples(slow)
    if slow:
        assert t.hist["valid"] > 0, f"{t.count} inputs, none valid: the grammar only tests the error paths"


# ----------------------------------------------------------------------------- genotypes

def _genotype_bases() -> List[bytes]:
    from osep_nas.genotypes import DARTS_V1, DARTS_V2, O_DARTS, genotype_to_dict, genotype_to_yaml

    out = []
    for g in (DARTS_V2, O_DARTS, DARTS_V1):
        out += [repr(g).encode(), json.dumps(genotype_to_dict(g)).encode(), genotype_to_yaml(g).encode()]
    return out


def _genotype_strategy():
    from osep_nas.genotypes import DARTS_V2, O_DARTS, genotype_to_dict
    from osep_nas.ops import PRIMITIVES

    bases = _genotype_bases()
    tokens = _tokens(list(PRIMITIVES) + ["'osep_3x3'", "('sep_conv_3x3', 0)", "normal_concat", "reduce=",
                                         "range(2, 6)", "[2, 3, 4, 5]", "'", '"', ",", ":", "- ", "normal:", "99"])
    trees = [genotype_to_dict(DARTS_V2), genotype_to_dict(O_DARTS)]
    return st.one_of(byte_mutants(bases, tokens), byte_mutants(bases, tokens),
                     tree_mutants(trees).map(_dump_json), tree_mutants(trees).map(_dump_yaml),
                     RANDOM_TEXT, RANDOM_BYTES)


def _check_genotype(g: Any) -> None:
    from osep_nas.genotypes import Genotype, validate_genotype

    assert isinstance(g, Genotype)
    validate_genotype(g)


def _fuzz_genotype(slow: bool, tally, no_code) -> None:
    from osep_nas.genotypes import parse_genotype

    t = tally("genotype text (parse_genotype)")
    bases = _genotype_bases()

    @fuzz_settings(slow)
    @given(data=_genotype_strategy(), as_text=st.booleans())
    @example(data=bases[0], as_text=True)  # the unmutated texts always run too: a valid outcome is
    @example(data=bases[1], as_text=False)  # guaranteed, whatever the generated sample (60 in the
    @example(data=bases[2], as_text=True)  # fast profile may hold no valid mutant)
    def run(data: bytes, as_text: bool) -> None:
        value: Any = data.decode("utf-8", "replace") if as_text else data
        t.run(lambda: parse_genotype(value), value, _check_genotype)

    run()
    _assert_profile(t, slow)


# ----------------------------------------------------------------------------- configs and --set

def _config_bases() -> List[bytes]:
    return [p.read_bytes() for p in sorted((REPO / "examples" / "configs").glob("*.yaml"))]


def _fuzz_config(slow: bool, tally, no_code, tmp_path: Path) -> None:
    """Training configs (load_config) and study files (load_study: load_config with the
    study schema, then the runs)."""
    from osep_nas.config import Config, load_config
    from osep_nas.study import StudyConfig, load_study

    bases = {"config": _config_bases(),
             "study": [p.read_bytes() for p in sorted((REPO / "examples" / "studies").glob("*.yaml"))]}
    trees = {k: [yaml.safe_load(b) for b in v] for k, v in bases.items()}
    tokens = _tokens(["model:", "data:", "optim:", "training:", "study:", "runs:", "seeds: [0]", "epochs: 3",
                      "lr: 0.1", "  ", "- ", ": ", "[", "]", "'", '"', "#", "---", "...", "!!float", "!!str", "? ",
                      "|", ">"])
    t = tally("YAML configs and study files (load_config, load_study)")
    path = tmp_path / "config.yaml"
    readers = {"config": lambda: load_config(path), "study": lambda: load_study(path)}
    kinds = {"config": Config, "study": StudyConfig}

    def inputs(kind: str):
        return st.tuples(st.just(kind), st.one_of(
            byte_mutants(bases[kind], tokens), byte_mutants(bases[kind], tokens),
            tree_mutants(trees[kind]).map(_dump_yaml), tree_mutants(trees[kind]).map(_dump_yaml),
            RANDOM_TEXT, RANDOM_BYTES))

    @fuzz_settings(slow)
    @given(case=st.one_of(inputs("config"), inputs("config"), inputs("study")))
    def run(case) -> None:
        kind, data = case
        path.write_bytes(data)
        t.run(readers[kind], data, lambda cfg: isinstance(cfg, kinds[kind]) or _fail(cfg))

    run()
    _assert_profile(t, slow)


def _flat_keys() -> List[str]:
    from osep_nas.config import config_to_dict, load_config

    tree = config_to_dict(load_config(None))
    return sorted(f"{s}.{k}" for s, v in tree.items() if isinstance(v, dict) for k in v) + ["max_steps_per_epoch"]


def _override_strategy():
    keys = _flat_keys()
    values = st.one_of(st.sampled_from(["3", "0.1", "true", "null", "[1, 2]", "{a: 1}", "cosine", "digits", "", "-5",
                                        "1e400", "nan", "'x'", "[", "a: b", "&x 1", "*x", "!!python/name:os.system"]),
                       st.sampled_from(PAYLOADS), st.text(max_size=30))
    key = st.one_of(st.sampled_from(keys), st.sampled_from(keys).map(lambda k: k[:-1]),
                    st.sampled_from(keys).map(lambda k: k + ".x"), st.sampled_from(keys).map(lambda k: k.upper()),
                    st.text(max_size=20))
    sep = st.sampled_from(["=", "=", "=", " = ", "==", ":", ""])
    one = st.builds(lambda k, s, v: f"{k}{s}{v}", key, sep, values)
    return st.lists(st.one_of(one, one, one, st.text(max_size=40)), min_size=1, max_size=3)


def _fuzz_overrides(slow: bool, tally, no_code) -> None:
    from osep_nas.config import Config, load_config

    t = tally("--set overrides (load_config)")

    @fuzz_settings(slow)
    @given(overrides=_override_strategy())
    def run(overrides: List[str]) -> None:
        t.run(lambda: load_config(None, overrides), overrides, lambda cfg: isinstance(cfg, Config) or _fail(cfg))

    run()
    _assert_profile(t, slow)


def _fail(value: Any) -> None:
    raise AssertionError(f"unexpected result {value!r:.200}")


# ----------------------------------------------------------------------------- nnictl HPO space

def _fuzz_hpo(slow: bool, tally, no_code, tmp_path: Path) -> None:
    from search_spaces.hpo import check_search_space

    base = (REPO / "examples" / "nni" / "search_space.json").read_bytes()
    tree = json.loads(base)
    tokens = _tokens(['"_type"', '"choice"', '"_value"', '"normal/op_2_0"', '"osep_3x3"', '"randint"', "[", "]",
                      "{", "}", ",", ":", '"', "0", "1"])
    t = tally("nnictl HPO space JSON (check_search_space)")
    paths = {".json": tmp_path / "space.json", ".yaml": tmp_path / "space.yaml"}

    @fuzz_settings(slow)
    @given(data=st.one_of(byte_mutants([base], tokens), tree_mutants([tree]).map(_dump_json),
                          tree_mutants([tree]).map(_dump_json), tree_mutants([tree]).map(_dump_yaml),
                          RANDOM_TEXT, RANDOM_BYTES),
           suffix=st.sampled_from([".json", ".json", ".yaml"]))
    def run(data: bytes, suffix: str) -> None:
        path = paths[suffix]
        path.write_bytes(data)
        t.run(lambda: check_search_space(path), data)

    run()
    _assert_profile(t, slow)


# ----------------------------------------------------------------------------- checkpoints

def _checkpoint_base(tmp: Path) -> bytes:
    from osep_nas.checkpoint import capture_rng_state, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": {"epoch": 1},
             "rng": capture_rng_state(), "epoch": 1, "best_top1": 50.0, "best_epoch": 1,
             "config": {"model": {"name": "resnet20"}}, "genotype": None}
    path = tmp / "base.pt"
    save_checkpoint(path, state)
    return path.read_bytes()


def _fuzz_checkpoint(slow: bool, tally, no_code, tmp_path: Path) -> None:
    from osep_nas.checkpoint import RESUME_KEYS, load_checkpoint

    base = _checkpoint_base(tmp_path)
    evil = pickle.dumps(0)[:2] + b"cos\nsystem\n(V" + f"touch {MARKER}".encode() + b"\ntR."
    tokens = [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"data.pkl", b"\x80\x02", b"cos\nsystem\n",
              b"ctorch._utils\n_rebuild_tensor_v2\n", b"\x00" * 64, b"\xff" * 8, evil]
    t = tally("checkpoints (load_checkpoint)")
    path = tmp_path / "last.pt"

    @fuzz_settings(slow)
    @given(data=st.one_of(byte_mutants([base], tokens, max_edits=4), byte_mutants([base], tokens, max_edits=4),
                          byte_mutants([base], tokens, max_edits=1), st.just(evil), RANDOM_BYTES))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        t.run(lambda: load_checkpoint(path, map_location="cpu", required=RESUME_KEYS), data[:64],
              lambda ckpt: isinstance(ckpt, dict) or _fail(ckpt))

    run()
    _assert_profile(t, slow)


# ----------------------------------------------------------------------------- CIFAR batches

def _cifar_bases() -> List[bytes]:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
    labels = [3, 1, 0, 9]
    as_bytes = {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data,
                b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"]}
    as_str = {"labels": labels, "data": data}
    return [pickle.dumps(as_bytes, protocol=2), pickle.dumps(as_str, protocol=4),
            pickle.dumps({b"data": data[:1], b"labels": [2]}, protocol=2)]


def _fuzz_cifar(slow: bool, tally, no_code, tmp_path: Path) -> None:
    from osep_nas.data import read_cifar_batch

    bases = _cifar_bases()
    evil = b"\x80\x02cposix\nsystem\nq\x00X" + f"touch {MARKER}".encode() + b"q\x01\x85q\x02Rq\x03."
    tokens = [b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\ndtype\n", b"cbuiltins\neval\n",
              b"c__builtin__\nexec\n", b"cos\nsystem\n", b"c_codecs\nencode\n", b"\x80\x02", b"\x80\x04\x95",
              b"R", b".", b"(", b"t", b"}", b"]", b"e", b"s", b"q\x00", b"h\x00", b"K\xff", b"J\xff\xff\xff\x7f",
              b"B\xff\xff\xff\x7f", b"\x8e\xff\xff\xff\xff\xff\xff\xff\x7f", evil]
    t = tally("CIFAR batches (read_cifar_batch, restricted unpickler)")
    path = tmp_path / "data_batch_1"

    def valid(result: Any) -> None:
        x, y = result
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (3, 32, 32) and len(y) == len(x)
        assert ((0 <= y) & (y < 10)).all()

    @fuzz_settings(slow)
    @given(data=st.one_of(byte_mutants(bases, tokens), byte_mutants(bases, tokens),
                          byte_mutants(bases, tokens, max_edits=1), st.sampled_from(bases), st.just(evil),
                          RANDOM_BYTES))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        t.run(lambda: read_cifar_batch(path), data[:80], valid)

    run()
    _assert_profile(t, slow)


# ----------------------------------------------------------------------------- the search's files

SEARCH_TINY: Dict[str, Any] = {
    "search": {"strategy": "evolution", "trials": 6, "population_size": 3, "sample_size": 2, "seed": 3},
    "space": {"op_candidates": "osep_3x3,max_pool_3x3,skip_connect", "num_nodes": 2},
    "proxy": {"init_channels": 2, "layers": 3, "steps": 3}, "data": {"batch_size": 16},
    "output": {"plots": False},
}


def _fake_trainer(genotype, ctx):
    return {"accuracy": 10.0 + (hash(str(genotype)) % 80)}


def _search_config() -> Any:
    """SEARCH_TINY in one process (no worker pool to start) where the search has workers."""
    from strategies.search import load_search_config

    try:
        return load_search_config({**SEARCH_TINY, "search": {**SEARCH_TINY["search"], "workers": 1}})
    except ValueError:  # a search without search.workers
        return load_search_config(SEARCH_TINY)


@pytest.fixture(scope="module")
def search_folder(tmp_path_factory):
    """A real search folder (fake trainer, 3 jobs done, killed): state.json, trials.jsonl."""
    from strategies.search import run_search

    out = tmp_path_factory.mktemp("fuzz-search") / "s"
    run_search(_search_config(), out, progress=False, print_report=False, trainer=_fake_trainer, stop_after=3,
               report=False)
    return out


def _fuzz_state(slow: bool, tally, no_code, tmp_path: Path, search_folder: Path, monkeypatch) -> None:
    import strategies.search as S

    base = (search_folder / "state.json").read_bytes()
    tree = json.loads(base)
    cfg = _search_config()
    if hasattr(S, "prepare_proxy"):  # the proxy's data once, not per input
        setup = S.prepare_proxy(cfg)
        monkeypatch.setattr(S, "prepare_proxy", lambda c: setup)
    tokens = _tokens(['"history"', '"pending"', '"population"', '"rng"', '"jobs"', '"round"', '"format"',
                      '"version"', "null", "[]", "{}", "-1", "1e999", '"x"', ",", ":", "[", "]", "{", "}"])
    t = tally("search state.json (run_search resume)")
    work = tmp_path / "w"
    trials = (search_folder / "trials.jsonl").read_bytes()

    @fuzz_settings(slow)
    @given(data=st.one_of(tree_mutants([tree]).map(_dump_json), tree_mutants([tree]).map(_dump_json),
                          tree_mutants([tree], max_edits=1).map(_dump_json), byte_mutants([base], tokens),
                          RANDOM_BYTES))
    def run(data: bytes) -> None:
        if work.exists():
            for p in work.iterdir():
                p.unlink()
        else:
            work.mkdir()
        (work / "state.json").write_bytes(data)
        (work / "trials.jsonl").write_bytes(trials)
        t.run(lambda: S.run_search(cfg, work, resume=True, progress=False, print_report=False,
                                   trainer=_fake_trainer, stop_after=0, report=False), data[:200])

    run()
    _assert_profile(t, slow)


def _fuzz_trials(slow: bool, tally, no_code, tmp_path: Path, search_folder: Path) -> None:
    from strategies.report import load_trials

    base = (search_folder / "trials.jsonl").read_bytes()
    records = [json.loads(line) for line in base.decode().splitlines()]
    tokens = _tokens(['"trial"', '"status"', '"ok"', '"accuracy"', '"genotype"', "\n", "{}", "[]", "null", ",",
                      ":", "{", "}"])
    t = tally("search trials.jsonl (load_trials)")
    path = tmp_path / "trials.jsonl"

    def as_lines(recs: Any) -> bytes:
        recs = recs if isinstance(recs, list) else [recs]
        return b"".join(_dump_json(r) + b"\n" for r in recs)

    def valid(result: Any) -> None:
        assert isinstance(result, list) and all(isinstance(r, dict) for r in result)

    @fuzz_settings(slow)
    @given(data=st.one_of(byte_mutants([base], tokens), byte_mutants([base], tokens),
                          tree_mutants([records]).map(as_lines), RANDOM_TEXT, RANDOM_BYTES))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        t.run(lambda: load_trials(path), data[:200], valid)

    run()
    _assert_profile(t, slow)


# ----------------------------------------------------------------------------- the tests

READERS = ["genotype", "config", "overrides", "hpo", "checkpoint", "cifar", "state", "trials"]


def _dispatch(reader: str, slow: bool, tally, no_code, tmp_path, request, monkeypatch) -> None:
    if reader == "genotype":
        _fuzz_genotype(slow, tally, no_code)
    elif reader == "config":
        _fuzz_config(slow, tally, no_code, tmp_path)
    elif reader == "overrides":
        _fuzz_overrides(slow, tally, no_code)
    elif reader == "hpo":
        _fuzz_hpo(slow, tally, no_code, tmp_path)
    elif reader == "checkpoint":
        _fuzz_checkpoint(slow, tally, no_code, tmp_path)
    elif reader == "cifar":
        _fuzz_cifar(slow, tally, no_code, tmp_path)
    elif reader == "state":
        _fuzz_state(slow, tally, no_code, tmp_path, request.getfixturevalue("search_folder"), monkeypatch)
    elif reader == "trials":
        _fuzz_trials(slow, tally, no_code, tmp_path, request.getfixturevalue("search_folder"))
    else:
        raise AssertionError(reader)


# state.json found two tracebacks in the search's resume path (a config section that is not a
# mapping; a bad RNG state's OverflowError): both are one-line ValueErrors now.
_PARAMS = list(READERS)


@pytest.mark.parametrize("reader", _PARAMS)
def test_fuzz_fast(reader, tally, no_code, tmp_path, request, monkeypatch, one_thread):
    _dispatch(reader, False, tally, no_code, tmp_path, request, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("reader", _PARAMS)
def test_fuzz_slow(reader, tally, no_code, tmp_path, request, monkeypatch, one_thread):
    _dispatch(reader, True, tally, no_code, tmp_path, request, monkeypatch)


def test_fuzz_harness_catches_what_it_must(tally):
    """The harness itself: a two-line message, a foreign exception and a slow input fail."""
    t = tally("harness self-test")
    with pytest.raises(AssertionError, match="2 lines"):
        t.run(lambda: (_ for _ in ()).throw(ValueError("a\nb")), "x")
    with pytest.raises(AssertionError, match="KeyError"):
        t.run(lambda: {}["k"], "x")
    t.run(lambda: (_ for _ in ()).throw(FileNotFoundError("missing: x")), "x")
    t.run(lambda: 1, "x")
    assert t.hist == {"FileNotFoundError": 1, "valid": 1}
    assert math.isclose(CPU_LIMIT_S, 1.0)


# ----------------------------------------------------------------------------- regressions found by the fuzzers

@pytest.mark.parametrize("text", ["data.download=\n", "optim.lr=\nfast", "optim\n.lr=1", "x" * 5000 + "=1",
                                  "optim.lr=" + "9" * 70000, "\x1b[31m=1", "optim.lr=\r2\n3"])
def test_fuzz_regression_set_override_message_is_one_bounded_line(text, capsys):
    """A --set text holding a newline was echoed raw: a two-line error (the CI failure of
    the first attempt at issue 21)."""
    from osep_nas.cli import main
    from osep_nas.config import load_config

    with pytest.raises(ValueError) as e:
        load_config(None, [text])
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg and len(msg) <= MAX_MESSAGE, msg
    assert main(["train", "--set", text, "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("osep-nas train: error: --set "), err


def test_fuzz_regression_crafted_numpy_dtype_state_is_refused_not_a_crash(tmp_path):
    """A CIFAR batch whose numpy dtype carries a 6-field state crashed the interpreter
    (segfault in numpy's dtype.__setstate__); the unpickler now builds dtypes and arrays
    itself from checked parts."""
    from osep_nas.data import read_cifar_batch, safe_unpickle

    good = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]}, protocol=2)
    bad = good.replace(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t", b"NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t")
    assert bad != good
    path = tmp_path / "data_batch_1"
    path.write_bytes(bad)
    with pytest.raises(ValueError, match="unusual pickled state"):
        safe_unpickle(path)
    path.write_bytes(good)
    x, y = read_cifar_batch(path)
    assert x.shape == (1, 3, 32, 32) and y.tolist() == [1]
    for dtype in (object, [("a", "i4")]):  # objects and structured dtypes are refused outright
        path.write_bytes(pickle.dumps(np.zeros(2, dtype=dtype), protocol=2))
        with pytest.raises(ValueError, match="not allowed"):
            safe_unpickle(path)


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d", b"\x95"])
def test_fuzz_regression_huge_length_field_is_a_value_error(tmp_path, opcode):
    """A pickle whose length field asks for 2**60 bytes raised MemoryError (not one line)."""
    import struct

    from osep_nas.data import safe_unpickle

    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x04" + opcode + struct.pack("<Q", 1 << 60) + b"abc")
    with pytest.raises(ValueError) as e:
        safe_unpickle(path)
    assert "\n" not in str(e.value) and "corrupt" in str(e.value)


@pytest.mark.parametrize("text", ['"\\r": 1\n', 'model:\n  "a\\nb": 1\n', '"\\x1b[2J": {}\n',
                                  'study:\n  runs:\n    "a\\rb": {model: 5}\n',
                                  'study:\n  runs:\n    a: {model: x, "gamma=4.\\n": 1}\n',
                                  'study:\n  runs:\n    a: {model: x, 1: 2, b: 3}\n'])
def test_fuzz_regression_yaml_keys_are_escaped_in_messages(tmp_path, text):
    """Keys from the file were echoed raw: "\\r: unknown section" printed as two lines."""
    from osep_nas.config import load_config
    from osep_nas.study import load_study

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        (load_study if text.startswith("study") else load_config)(path)
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg and "\x1b" not in msg, msg
    assert "unknown" in msg or "expected a model name" in msg


def test_fuzz_regression_checkpoint_struct_error_is_a_value_error(tmp_path):
    """A one-byte checkpoint "X" made torch.load raise struct.error, a traceback."""
    from osep_nas.checkpoint import load_checkpoint

    for data in (b"X", b"\x80\x02X", b"PK\x03\x04" + b"\x00" * 30):
        (tmp_path / "last.pt").write_bytes(data)
        with pytest.raises(ValueError, match="not a readable checkpoint|corrupt checkpoint"):
            load_checkpoint(tmp_path / "last.pt")


def test_fuzz_regression_refused_global_name_is_escaped(tmp_path):
    """The name of a refused global came from the file and was echoed raw (a carriage return)."""
    from osep_nas.data import safe_unpickle

    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c\rumpy\x1b._core\nsystem\n.")
    with pytest.raises(ValueError) as e:
        safe_unpickle(path)
    msg = str(e.value)
    assert "\r" not in msg and "\x1b" not in msg and "is not allowed" in msg, msg
