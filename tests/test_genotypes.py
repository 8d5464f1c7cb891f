"""Genotypes: parsing (repr/JSON/YAML, never evaluating), validation, files, arch dicts, plots."""
import json
import os
import time

import pytest
import yaml

from osep_nas.genotypes import (DARTS_V1, DARTS_V2, KNOWN_GENOTYPES, MAX_TEXT_CHARS, O_DARTS, PRIMITIVES, Genotype,
                                arch_to_genotype, genotype_from_arg, genotype_from_dict, genotype_to_arch,
                                genotype_to_dict, genotype_to_yaml, load_genotype, parse_genotype, plot_cell,
                                random_genotype, save_genotype, to_osep, validate_genotype)
from osep_nas.ops import OSEP_PRIMITIVES, PRIMITIVES as OPS_PRIMITIVES

PUBLISHED = [DARTS_V1, DARTS_V2, O_DARTS]
RANDOM = [random_genotype(OSEP_PRIMITIVES, 4, seed=s) for s in range(100)]


def test_published_constants():
    assert PRIMITIVES == OPS_PRIMITIVES
    assert O_DARTS.normal[0] == ("osep_3x3", 0)
    assert ("osep_dil_3x3", 2) in O_DARTS.normal
    assert O_DARTS.reduce == DARTS_V2.reduce  # pools and skips are kept
    assert to_osep(DARTS_V2, spatial=True).normal[0] == ("sosep_3x3", 0)
    assert set(KNOWN_GENOTYPES) == {"DARTS_V1", "DARTS_V2", "O_DARTS"}
    for g in PUBLISHED:
        assert validate_genotype(g) == g  # already canonical
    from collections import namedtuple

    DartsGenotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")  # the DARTS repository's
    theirs = DartsGenotype(tuple(DARTS_V2.normal), range(2, 6), tuple(DARTS_V2.reduce), range(2, 6))
    assert validate_genotype(theirs) == DARTS_V2
    assert validate_genotype(genotype_to_dict(O_DARTS)) == O_DARTS


@pytest.mark.parametrize("g", PUBLISHED + RANDOM)
def test_round_trips(g):
    assert parse_genotype(repr(g)) == g
    assert parse_genotype(json.dumps(genotype_to_dict(g))) == g
    assert parse_genotype(genotype_to_yaml(g)) == g
    assert parse_genotype(yaml.safe_dump(genotype_to_dict(g))) == g  # block-style YAML too
    assert arch_to_genotype(genotype_to_arch(g)) == g
    assert arch_to_genotype(genotype_to_arch(g, input_as_list=False)) == g
    assert genotype_from_dict(genotype_to_dict(g)) == g
    assert parse_genotype(json.dumps(genotype_to_arch(g))) == g  # an NNI arch dict as JSON


def test_random_genotypes_cover_the_space():
    ops = {op for g in RANDOM for op, _ in g.normal + g.reduce}
    assert ops == set(OSEP_PRIMITIVES)
    inputs_of_last_node = {j for g in RANDOM for _, j in g.normal[6:]}
    assert inputs_of_last_node == {0, 1, 2, 3, 4}
    assert len({repr(g) for g in RANDOM}) == 100


def test_darts_repository_spellings():
    # tuples, range(), positional fields, a qualified name and trailing commas all parse
    text = ("genotypes.Genotype([('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2),], range(2, 6), "
            "reduce=(('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
            "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)), "
            'reduce_concat=[2, 3, 4, 5])')
    assert parse_genotype(text) == DARTS_V2
    assert parse_genotype(text.encode()) == DARTS_V2


def test_other_node_counts_and_friendly_yaml():
    g = random_genotype(OSEP_PRIMITIVES, 5, seed=3)
    assert len(g.normal) == 10 and g.normal_concat == [2, 3, 4, 5, 6]
    assert parse_genotype(repr(g)) == g
    two = parse_genotype("normal:\n- {op: osep_3x3, input: 1}\n- {op: skip_connect, input: 0}\n"
                         "normal_concat: [2]\nreduce: [[max_pool_3x3, 0], [max_pool_3x3, 1]]\nreduce_concat: [2]\n")
    assert two == Genotype([("osep_3x3", 1), ("skip_connect", 0)], [2], [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [2])


def test_code_is_never_evaluated(tmp_path):
    marker = "/tmp/osep_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    attacks = [
        "__import__('os').system('touch /tmp/osep_pwned')",
        "Genotype(normal=__import__('os').system('touch /tmp/osep_pwned'), normal_concat=[2], reduce=[], reduce_concat=[2])",
        "Genotype(normal=[(open('/tmp/osep_pwned', 'w'), 0)], normal_concat=[2], reduce=[], reduce_concat=[2])",
        "!!python/object/apply:os.system ['touch /tmp/osep_pwned']",
        "normal: !!python/object/apply:os.system ['touch /tmp/osep_pwned']\n",
    ]
    for text in attacks:
        with pytest.raises(ValueError):
            parse_genotype(text)
    with pytest.raises(ValueError, match="'__import__' is not allowed"):
        parse_genotype(attacks[0])
    with pytest.raises(ValueError, match="only Genotype\\(...\\) and range\\(...\\)"):
        parse_genotype(attacks[1])
    assert not os.path.exists(marker)


def _swap(g, **fields):
    return repr(g._replace(**fields))


MALFORMED = [
    ("", "empty"),
    ("   \n\t ", "empty"),
    (_swap(DARTS_V2, normal=[("sep_conv_9x9", 0)] + DARTS_V2.normal[1:]), "unknown op 'sep_conv_9x9'"),
    (_swap(DARTS_V2, normal=DARTS_V2.normal[:2] + [("sep_conv_3x3", 3)] + DARTS_V2.normal[3:]),
     r"normal\[2\].*input index out of range, node 1 can only take inputs 0..2"),
    (_swap(DARTS_V2, reduce=DARTS_V2.reduce[:7] + [("max_pool_3x3", -1)]), "input index out of range"),
    (_swap(DARTS_V2, normal=DARTS_V2.normal[:7]), "has 7 pairs"),
    (_swap(DARTS_V2, normal=[]), "'normal' is empty"),
    (_swap(DARTS_V2, normal_concat=[2, 3, 9]), "normal_concat': state index 9 out of range 0..5"),
    (_swap(DARTS_V2, normal_concat=[2, 2]), "listed twice"),
    (_swap(DARTS_V2, reduce_concat=[]), "'reduce_concat' is empty"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2], reduce=[('max_pool_3x3', 0), "
     "('max_pool_3x3', 1)])", "missing field\\(s\\) 'reduce_concat'"),
    (_swap(DARTS_V2, normal=[("sep_conv_3x3", "0")] + DARTS_V2.normal[1:]), "input index must be an integer"),
    (_swap(DARTS_V2, normal=[(3, 0)] + DARTS_V2.normal[1:]), "op name must be a string"),
    (_swap(DARTS_V2, normal=[("sep_conv_3x3", 0, 1)] + DARTS_V2.normal[1:]), r"normal\[0\] must be an \(op, input\) pair"),
    (_swap(DARTS_V2, normal=[[("sep_conv_3x3", 0)]] + DARTS_V2.normal[1:]), r"normal\[0\] must be an \(op, input\) pair"),
    (_swap(DARTS_V2, normal_concat="2345"), "must be a list of state indices"),
    (repr(DARTS_V2)[:-1], "ends too early"),
    (repr(DARTS_V2) + " extra", "unexpected 'extra'"),
    ("Genotype(normal=" + "[" * 40 + "]" * 40 + ")", "nested deeper"),
    ("Genotype(normal=[('a' 0)])", "expected ',' or '\\)' at offset 22, got '0'"),
    (repr(DARTS_V2).replace("normal_concat", "normal_concat=[2], normal_concat", 1), "given twice"),
    ("Genotype(normal=[], foo=1, normal_concat=[], reduce=[], reduce_concat=[])", "unknown field 'foo'"),
    ("Genotype(normal=[], normal_concat=range(10**9), reduce=[], reduce_concat=[])", "unexpected character"),
    ("Genotype(normal=[], normal_concat=range(0, 100000), reduce=[], reduce_concat=[])", "range.*too long"),
    (json.dumps({**genotype_to_dict(DARTS_V2), "extra": 1}), "unknown field\\(s\\) 'extra'"),
    (json.dumps({k: v for k, v in genotype_to_dict(DARTS_V2).items() if k != "reduce"}), "missing field\\(s\\) 'reduce'"),
    ('{"normal": [["osep_3x3", 0]', "neither valid JSON"),
    ("[1, 2, 3]", "not a DARTS Genotype"),
    ("just some words", "not a DARTS Genotype"),
    ("normal: [osep_3x3, 0]\nnormal_concat: [2]\nreduce: [[max_pool_3x3, 0], [max_pool_3x3, 1]]\nreduce_concat: [2]\n",
     r"normal\[0\] must be an \(op, input\) pair"),
    ("key: [unclosed", "not a Genotype.*valid YAML"),
    ({"normal/op_2_0": "osep_3x3"}, "must be a string"),
    ("x" * (10 * 1024 * 1024), "too large"),
]


@pytest.mark.parametrize("text,message", MALFORMED, ids=[f"case{i}" for i in range(len(MALFORMED))])
def test_malformed_genotypes_raise_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        parse_genotype(text)


def test_huge_input_is_refused_quickly():
    junk = "[" * (10 * 1024 * 1024)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=f"limit is {MAX_TEXT_CHARS}"):
        parse_genotype(junk)
    assert time.perf_counter() - t0 < 0.5


def test_arch_dicts():
    arch = genotype_to_arch(DARTS_V2)
    assert arch["normal/op_2_0"] == "sep_conv_3x3" and arch["normal/input_2_0"] == [0]
    assert arch["normal/op_5_1"] == "dil_conv_3x3" and arch["normal/input_5_1"] == [2]
    assert arch["reduce/op_3_0"] == "skip_connect" and arch["reduce/input_3_0"] == [2]
    assert len(arch) == 32
    # NNI's own DARTS space uses these labels for its published DARTS V2 arch
    assert arch_to_genotype({**arch, "learning_rate": 0.1}) == DARTS_V2  # foreign keys are ignored
    with pytest.raises(ValueError, match="missing 'normal/input_3_1'"):
        arch_to_genotype({k: v for k, v in arch.items() if k != "normal/input_3_1"})
    with pytest.raises(ValueError, match="node 3 can only take inputs 0..2"):
        arch_to_genotype({**arch, "normal/input_3_1": [3]})
    with pytest.raises(ValueError, match="exactly one input"):
        arch_to_genotype({**arch, "normal/input_3_1": [0, 1]})
    with pytest.raises(ValueError, match="not a cell label"):
        arch_to_genotype({**arch, "normal/opp_3_1": "x"})
    with pytest.raises(ValueError, match="unknown op"):
        arch_to_genotype({**arch, "reduce/op_2_0": "conv_9x9"})
    with pytest.raises(ValueError, match="concatenates all intermediate nodes"):
        genotype_to_arch(DARTS_V2._replace(normal_concat=[2, 5]))


def test_files_and_cli_arguments(tmp_path):
    path = tmp_path / "g.yaml"
    save_genotype(O_DARTS, path)
    assert path.read_text().startswith("# osep-nas genotype")
    assert load_genotype(path) == O_DARTS
    save_genotype(DARTS_V1, tmp_path / "g.json")
    assert json.loads((tmp_path / "g.json").read_text())["normal"][0] == ["sep_conv_3x3", 1]
    assert load_genotype(tmp_path / "g.json") == DARTS_V1
    (tmp_path / "g.txt").write_text(repr(DARTS_V2))
    assert genotype_from_arg(str(tmp_path / "g.txt")) == DARTS_V2
    assert genotype_from_arg(str(path)) == O_DARTS
    assert genotype_from_arg("DARTS_V2") == DARTS_V2
    assert genotype_from_arg("o-darts") == O_DARTS
    assert genotype_from_arg(repr(DARTS_V1)) == DARTS_V1
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    with pytest.raises(FileNotFoundError):
        genotype_from_arg(str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError):
        load_genotype(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="not an existing file, a known genotype"):
        genotype_from_arg("DARTS_V3")
    (tmp_path / "bad.yaml").write_text("normal: 3\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_genotype(tmp_path / "bad.yaml")


def test_plot_cell_writes_images(tmp_path):
    png = plot_cell(O_DARTS, "normal", tmp_path / "normal.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    svg = plot_cell(DARTS_V2, "reduce", tmp_path / "reduce.svg").read_text()
    assert "<svg" in svg and "max_pool_3x3" in svg
    with pytest.raises(ValueError, match="cell type"):
        plot_cell(O_DARTS, "both", tmp_path / "x.png")
    with pytest.raises(ValueError, match=".png, .svg or .pdf"):
        plot_cell(O_DARTS, "normal", tmp_path / "x.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["normal.png", "reduce.svg"]
