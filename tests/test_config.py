"""The config loader: schema, strict YAML, overrides, the paper's recipes."""
from __future__ import annotations

from pathlib import Path

import pytest

from osep_nas.config import (Config, ConfigError, MAX_CONFIG_BYTES, config_to_dict, config_to_yaml, load_config,
                             parse_override)

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "configs"


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_and_file(tmp_path):
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.data.dataset == "digits" and cfg.optim.schedule == "cosine" and cfg.training.epochs == 10
    p = write(tmp_path, "optim:\n  lr: 0.1\ntraining:\n  epochs: 3\ndata:\n  dataset: cifar100\n  root: /x\n")
    cfg = load_config(p)
    assert cfg.optim.lr == 0.1 and cfg.training.epochs == 3 and cfg.data.dataset == "cifar100"
    assert cfg.optim.momentum == 0.9  # untouched default
    # integers are accepted for numbers and stored as float
    assert isinstance(load_config({"optim": {"lr": 1}}).optim.lr, float)
    # an empty file is all defaults
    assert load_config(write(tmp_path, "", "empty.yaml")) == Config()


def test_round_trip_yaml(tmp_path):
    cfg = load_config(None, ["optim.milestones=[0.1, 0.2]", "optim.schedule=step", "model.extra={depth: 3}"])
    again = load_config(write(tmp_path, config_to_yaml(cfg)))
    assert again == cfg
    assert config_to_dict(again)["optim"]["milestones"] == [0.1, 0.2]


def test_wrong_type_message_names_key_path():
    with pytest.raises(ConfigError) as e:
        load_config({"optim": {"lr": "fast"}})
    assert "optim.lr: expected a number, got 'fast'" in str(e.value)
    for raw, text in [({"training": {"epochs": 2.5}}, "training.epochs: expected an integer, got 2.5"),
                      ({"training": {"epochs": True}}, "training.epochs: expected an integer, got True"),
                      ({"training": {"amp": "yes please"}}, "training.amp: expected true or false"),
                      ({"data": {"root": 3}}, "data.root: expected a string, got 3"),
                      ({"optim": {"milestones": 5}}, "optim.milestones: expected a list"),
                      ({"optim": {"milestones": [1, "x"]}}, "optim.milestones[1]: expected a number"),
                      ({"optim": {"lr": float("nan")}}, "optim.lr: expected a finite number"),
                      ({"data": {"dataset": "cifar"}}, "did you mean cifar10?"),
                      ({"optim": 3}, "optim: expected a mapping"),
                      ({"model": {"extra": [1]}}, "model.extra: expected a mapping")]:
        with pytest.raises(ConfigError) as e:
            load_config(raw)
        assert text in str(e.value), (raw, str(e.value))


@pytest.mark.parametrize("raw,text", [
    ({"data": {"batch_size": 0}}, "data.batch_size: must be > 0, got 0"),
    ({"data": {"batch_size": -8}}, "data.batch_size: must be > 0, got -8"),
    ({"training": {"epochs": -1}}, "training.epochs: must be > 0, got -1"),
    ({"data": {"image_size": 0}}, "data.image_size: must be > 0"),
    ({"data": {"cutout": -1}}, "data.cutout: must be >= 0"),
    ({"model": {"drop_path_prob": 1.0}}, "model.drop_path_prob: must be < 1.0"),
    ({"optim": {"momentum": 1.5}}, "optim.momentum: must be <= 1.0"),
    ({"optim": {"schedule": "step"}}, "optim.milestones: schedule 'step' needs at least one"),
    ({"optim": {"milestones": [0.75, 0.5]}}, "optim.milestones: must increase"),
    ({"optim": {"milestones": [100, 150]}}, "optim.milestones: fractions of training.epochs in (0, 1)"),
    ({"optim": {"nesterov": True, "momentum": 0}}, "optim.nesterov: Nesterov momentum needs"),
    ({"data": {"image_size": 4}}, "data.image_size: digits are 8x8"),
])
def test_sizes_and_ranges(raw, text):
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    assert text in str(e.value)


def test_unknown_keys_suggest():
    cases = [({"optim": {"lrr": 0.1}}, "optim.lrr: unknown key (did you mean optim.lr?)"),
             ({"training": {"epoch": 3}}, "training.epoch: unknown key (did you mean training.epochs?)"),
             ({"optim": {"epochs": 3}}, "optim.epochs: unknown key (did you mean training.epochs?)"),
             ({"trainig": {}}, "trainig: unknown section (did you mean training?)"),
             ({"epochs": 3}, "epochs: unknown section (did you mean training.epochs?)"),
             ({"data": {"zzzz": 1}}, "data.zzzz: unknown key")]
    for raw, text in cases:
        with pytest.raises(ConfigError) as e:
            load_config(raw)
        assert text in str(e.value), str(e.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("optim:\n  lr: 0.1 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "optim: [lr: 1\n", "broken.yaml"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    big = tmp_path / "big.yaml"
    big.write_text("#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="more than"):
        load_config(big)
    # unsafe tags are refused by the safe loader
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "optim: !!python/object/apply:os.system ['echo hi']\n", "tag.yaml"))


def test_alias_bomb_refused(tmp_path):
    bomb = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] +
                     [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                      f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
                      for i in range(8)]) + "\n"
    with pytest.raises(ConfigError, match="anchors|aliases"):
        load_config(write(tmp_path, bomb, "bomb.yaml"))
    # even a harmless alias/merge key is refused: a config never needs one
    with pytest.raises(ConfigError, match="not allowed"):
        load_config(write(tmp_path, "optim: &o {lr: 0.1}\ndata: *o\n", "alias.yaml"))
    with pytest.raises(ConfigError, match="not allowed"):
        load_config(None, ["optim.milestones=[*x]"])


def test_overrides():
    cfg = load_config({"optim": {"lr": 0.1}}, ["optim.lr=0.05", "training.amp=false", "data.root=/d",
                                               "optim.milestones=[0.5, 0.75]", "optim.schedule=step"])
    assert cfg.optim.lr == 0.05 and cfg.training.amp is False and cfg.data.root == "/d"
    assert cfg.optim.milestones == [0.5, 0.75]
    # later overrides win; a section mapping merges into the section
    cfg = load_config(None, ["optim.lr=0.05", "optim.lr=0.2", "optim={nesterov: true, weight_decay: 0}"])
    assert cfg.optim.lr == 0.2 and cfg.optim.nesterov is True and cfg.optim.weight_decay == 0
    # free mapping keys
    cfg = load_config(None, ["model.extra.shortcut=B"])
    assert cfg.model.extra == {"shortcut": "B"}
    # null resets an optional key
    assert load_config({"data": {"root": "/x"}}, ["data.root=null"]).data.root is None
    assert load_config({"data": {"root": "/x"}}, ["data.root="]).data.root is None


def test_override_errors():
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got 'fast'"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match=r"unknown key \(did you mean optim.lr\?\)|did you mean"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="ambiguous short key; spell out one of model.gamma, optim.gamma"):
        load_config(None, ["gamma=2"])
    with pytest.raises(ConfigError, match="data.batch_size: must be > 0"):
        load_config(None, ["data.batch_size=0"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, ["optim.milestones=[1,"])


def test_short_aliases():
    assert parse_override("epochs=3") == (["training", "epochs"], 3)
    assert parse_override("lr=0.5") == (["optim", "lr"], 0.5)
    assert parse_override("dataset=cifar10") == (["data", "dataset"], "cifar10")
    cfg = load_config(None, ["epochs=3", "lr=0.5", "batch_size=8", "cutout=16"])
    assert (cfg.training.epochs, cfg.optim.lr, cfg.data.batch_size, cfg.data.cutout) == (3, 0.5, 8, 16)


def test_recipes_are_the_papers():
    c = load_config(RECIPES / "darts_cifar10.yaml")
    assert (c.training.epochs, c.data.batch_size, c.optim.lr, c.optim.schedule) == (600, 96, 0.025, "cosine")
    assert (c.optim.weight_decay, c.optim.momentum, c.data.cutout, c.model.drop_path_prob) == (3e-4, 0.9, 16, 0.2)
    assert (c.model.auxiliary, c.training.auxiliary_weight, c.optim.grad_clip) == (True, 0.4, 5.0)
    assert (c.model.init_channels, c.model.layers, c.model.genotype) == (36, 20, "O_DARTS")
    c = load_config(RECIPES / "darts_imagenet.yaml")
    assert (c.training.epochs, c.data.batch_size, c.optim.lr, c.optim.schedule) == (250, 1024, 0.5, "linear")
    assert (c.optim.momentum, c.optim.weight_decay, c.optim.label_smoothing) == (0.9, 3e-5, 0.1)
    assert (c.model.auxiliary, c.training.auxiliary_weight, c.data.crop, c.data.image_size) == (True, 0.4, "resized",
                                                                                               224)
    assert c.data.flip and c.data.color_jitter > 0 and (c.model.init_channels, c.model.layers) == (48, 14)
    c = load_config(RECIPES / "resnet_cifar10.yaml")
    assert (c.training.epochs, c.optim.lr, c.optim.schedule, c.optim.milestones, c.optim.gamma) == (
        200, 0.1, "step", [0.5, 0.75], 0.1)
    assert (c.data.batch_size, c.optim.weight_decay, c.optim.momentum, c.data.padding, c.data.flip) == (
        128, 1e-4, 0.9, 4, True)
    c = load_config(RECIPES / "mobilenet_imagenet.yaml")
    assert (c.training.epochs, c.data.batch_size, c.optim.lr, c.optim.schedule) == (200, 1024, 0.064, "exponential")
    assert (c.optim.gamma, c.optim.step_epochs, c.optim.weight_decay, c.data.color_jitter) == (0.973, 0.8, 1e-5, 0.0)
    assert c.data.crop == "resized" and c.data.flip
