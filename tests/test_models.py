"""The model registry, every registered model end to end, and the profile / eval commands."""
import inspect
import json

import pytest
import torch

from osep_nas import count_params
from osep_nas.cli import main
from osep_nas.genotypes import DARTS_V2, O_DARTS
from osep_nas.models import create_model, list_models, model_info, register_model, resolve_genotype

REQUIRED = (
    [f"{p}resnet{d}" for p in ("", "o_", "d_", "so_", "dw_") for d in (20, 32, 56, 110)]
    + ["darts_v1_cifar", "darts_v2_cifar", "o_darts_cifar", "darts_v2_imagenet", "o_darts_imagenet",
       "mobilenet", "o_mobilenet", "darts_cifar", "darts_imagenet"]
)

NEEDS_GENOTYPE = {"darts_cifar": str(O_DARTS), "darts_imagenet": "DARTS_V2"}
FAST = {f"{p}resnet20" for p in ("", "o_", "d_", "so_", "dw_", "s_")} | {"mobilenet", "o_mobilenet"}


def build(name, **kw):
    if name in NEEDS_GENOTYPE:
        kw.setdefault("genotype", NEEDS_GENOTYPE[name])
    if "darts" in name:
        kw.setdefault("auxiliary", True)
    return create_model(name, **kw)


def test_registry_has_the_paper_models():
    names = list_models()
    for name in REQUIRED:
        assert name in names
    assert list_models("o_resnet*") == ["o_resnet110", "o_resnet20", "o_resnet32", "o_resnet56"]


@pytest.mark.parametrize("name, width", [("o_resnet20", 3.625), ("o_resnet32", 3.75), ("o_resnet56", 3.875),
                                         ("o_resnet110", 3.875), ("d_resnet20", 2.72), ("d_resnet32", 2.75),
                                         ("d_resnet56", 2.75), ("d_resnet110", 2.75), ("resnet56", 1.0)])
def test_resnet_default_widths_are_the_papers(name, width):
    assert create_model(name).width_mult == width


@pytest.mark.parametrize("name, channels, cells, size", [
    ("darts_v2_cifar", 36, 20, (3, 32, 32)), ("o_darts_cifar", 42, 20, (3, 32, 32)),
    ("darts_v2_imagenet", 48, 14, (3, 224, 224)), ("o_darts_imagenet", 56, 14, (3, 224, 224)),
])
def test_darts_defaults_are_the_papers(name, channels, cells, size):
    model = create_model(name)
    assert (model.init_channels, model.layers, model.default_input_size) == (channels, cells, size)
    assert model.model_name == name


def test_names_are_forgiving_and_unknown_ones_suggest():
    assert create_model("o-ResNet20").model_name == "o_resnet20"
    with pytest.raises(ValueError, match="o_resnet20"):
        create_model("o_resnt20")
    with pytest.raises(ValueError, match="accepted: .*width_mult"):
        create_model("resnet20", layers=3)
    with pytest.raises(ValueError, match="genotype"):
        create_model("darts_cifar")


def test_consistent_keywords():
    common = {"num_classes", "width_mult", "gamma", "rounding", "n_convs", "channel_policy"}
    for name in list_models():
        assert common <= set(model_info(name).keywords()), name
    darts = {"init_channels", "layers", "auxiliary", "drop_path_prob", "genotype"}
    for name in list_models("*darts*"):
        assert darts <= set(model_info(name).keywords()), name
    m = create_model("o_darts_cifar", init_channels=8, layers=5, num_classes=3, rounding="paper", gamma=2.0,
                     drop_path_prob=0.1)
    assert m.classifier.out_features == 3 and m.drop_path_prob == 0.1
    assert create_model("darts_v2_cifar", width_mult=0.5).init_channels == 18
    assert create_model("o_resnet20", gamma=4.0).layers[0].conv1.plan.gamma == 4.0
    assert len(create_model("o_resnet20", n_convs=3).layers[0].conv1.convs) == 3
    assert len(create_model("o_mobilenet", n_convs=3).features[0][0].convs) == 3


def test_register_model_and_duplicates():
    @register_model("tiny_test_net", input_size=(3, 8, 8))
    def _tiny(num_classes: int = 10, width_mult: float = 1.0, gamma: float = 1.0, rounding: str = "divisor"):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, num_classes))

    model = create_model("tiny_test_net", num_classes=4)
    assert model.default_input_size == (3, 8, 8)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_test_net")(_tiny)


def test_resolve_genotype_accepts_objects_names_and_text():
    assert resolve_genotype(DARTS_V2) is DARTS_V2
    assert list(resolve_genotype("o_darts").normal) == list(O_DARTS.normal)
    assert [tuple(e) for e in resolve_genotype(str(DARTS_V2)).normal] == [tuple(e) for e in DARTS_V2.normal]
    with pytest.raises(ValueError):
        resolve_genotype(42)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in list_models()])
def test_every_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = build(name)
    size = model.default_input_size
    aux = getattr(model, "auxiliary_head", None)
    total = sum(p.numel() for p in model.parameters())
    assert count_params(model) == total - (sum(p.numel() for p in aux.parameters()) if aux is not None else 0)
    model.train()
    out = model(torch.randn((2,) + tuple(size)))
    logits, logits_aux = out if isinstance(out, tuple) else (out, None)
    assert logits.shape[0] == 2
    loss = logits.logsumexp(1).mean() + (0.4 * logits_aux.logsumexp(1).mean() if logits_aux is not None else 0)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        assert isinstance(model(torch.randn((1,) + tuple(size))), torch.Tensor)


@pytest.mark.parametrize("name", [n for n in list_models() if n not in FAST])
def test_every_model_counts_params_minus_auxiliary(name):
    model = build(name)
    aux = getattr(model, "auxiliary_head", None)
    aux_n = sum(p.numel() for p in aux.parameters()) if aux is not None else 0
    assert ("darts" in name) == (aux_n > 0)
    assert count_params(model) == sum(p.numel() for p in model.parameters()) - aux_n


# -- command line ----------------------------------------------------------------------------
def test_profile_table_with_paper_columns(capsys, tmp_path):
    out_file = tmp_path / "profile.json"
    rc = main(["profile", "resnet20", "o-ResNet20", "--paper", "--no-latency", "--json", str(out_file)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "paper #Params (M)" in text and "ours/paper" in text
    row = next(line for line in text.splitlines() if line.startswith("resnet20 "))
    assert "0.2697" in row and "0.04055" in row and "0.270" in row
    data = json.loads(out_file.read_text())
    assert [r["model"] for r in data["rows"]] == ["resnet20", "o_resnet20"]
    assert data["rows"][0]["paper"]["params_m"] == 0.270
    assert abs(data["rows"][0]["params_ratio"] - 1) < 0.005


def test_profile_latency_columns(capsys):
    rc = main(["profile", "resnet20", "--batch-sizes", "1", "2", "--warmup", "0", "--repeats", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "ms @ b1" in text and "ms @ b2" in text


def test_profile_rounding_flag_changes_osep_models(capsys):
    main(["profile", "o_resnet20", "--no-latency", "--rounding", "paper"])
    paper = capsys.readouterr().out
    main(["profile", "o_resnet20", "--no-latency"])
    default = capsys.readouterr().out
    assert paper != default


@pytest.mark.parametrize("argv, match", [
    (["profile", "no_such_net", "--no-latency"], "unknown model"),
    (["eval", "--genotype", "missing/genotype.yaml", "--no-latency"], "not found"),
    (["eval", "--genotype", "DARTS_V2", "--init-channels", "0", "--no-latency"], "init-channels"),
])
def test_cli_errors_are_one_line_exit_2(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


def test_profile_list(capsys):
    assert main(["profile", "--list"]) == 0
    assert "o_darts_imagenet" in capsys.readouterr().out


def test_eval_prints_params_and_flops_of_a_genotype(capsys, tmp_path):
    gfile = tmp_path / "g.txt"
    gfile.write_text(str(DARTS_V2))
    rc = main(["eval", "--genotype", str(gfile), "--dataset", "cifar10", "--init-channels", "8", "--layers", "5",
               "--no-latency", "--json", str(tmp_path / "e.json")])
    assert rc == 0
    text = capsys.readouterr().out
    net = create_model("darts_cifar", genotype=DARTS_V2, init_channels=8, layers=5)
    assert f"{count_params(net) / 1e6:.4f}" in text
    row = json.loads((tmp_path / "e.json").read_text())["rows"][0]
    assert row["params"] == count_params(net) and row["flops"] > 0


def test_eval_paper_columns_for_the_papers_darts(capsys):
    assert main(["eval", "--genotype", "DARTS_V2", "--paper", "--no-latency"]) == 0
    text = capsys.readouterr().out
    assert "3.350" in text and "0.52800" in text


def test_cpu_latency_budget_skips_big_batches_unless_forced():
    import argparse

    from osep_nas.cli.profile_cmd import latency_batch_sizes

    cpu = torch.device("cpu")
    args = argparse.Namespace(no_latency=False, batch_sizes=None, cpu_max_gmacs=5.0)
    assert latency_batch_sizes(args, 40_000_000, cpu) == [1, 64]  # ResNet20: 2.6 G at batch 64
    assert latency_batch_sizes(args, 530_000_000, cpu) == [1]  # DARTS: 34 G at batch 64
    args.batch_sizes = [1, 64]
    assert latency_batch_sizes(args, 530_000_000, cpu) == [1, 64]
    args.no_latency = True
    assert latency_batch_sizes(args, 1, cpu) == []


def test_one_table_of_darts_sizes():
    from osep_nas.models import DARTS_NETWORKS, darts_model_name

    for name, row in DARTS_NETWORKS.items():
        params = inspect.signature(model_info(name).factory).parameters
        assert (params["init_channels"].default, params["layers"].default) == (row.init_channels, row.layers)
    assert (darts_model_name("cifar10"), darts_model_name("digits")) == ("darts_cifar", "darts_cifar")
    assert darts_model_name("imagenet") == "darts_imagenet"
