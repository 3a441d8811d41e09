import json

import pytest

from fastssl.config import Config, all_keys, apply_overrides, format_config, set_value
from fastssl.errors import FastSSLError


def test_defaults_are_typed_and_complete():
    cfg = Config()
    assert cfg.train.batch_size == 256 and isinstance(cfg.optim.base_lr, float)
    keys = all_keys(cfg)
    assert "optim.base_lr" in keys and "data.skip_corrupt" in keys and len(keys) == len(set(keys))


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("--train.batch_size=64", ("train", "batch_size"), 64),
        ("--train.batch_size=1e3", ("train", "batch_size"), 1000),
        ("--optim.base_lr=0.5", ("optim", "base_lr"), 0.5),
        ("--data.skip_corrupt=true", ("data", "skip_corrupt"), True),
        ("--data.skip_corrupt=0", ("data", "skip_corrupt"), False),
        ("--aug.blur_p=0.5,0.25", ("aug", "blur_p"), (0.5, 0.25)),
        ("model.name=vit_tiny", ("model", "name"), "vit_tiny"),
    ],
)
def test_overrides_are_coerced(override, key, expected):
    cfg = apply_overrides(Config(), [override])
    value = getattr(getattr(cfg, key[0]), key[1])
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("--train.batch_sise=3", "train.batch_size"),  # typo -> closest valid key
        ("--optim.lr=3", "optim."),
        ("--nosection.key=1", "unknown config key"),
        ("--train.batch_size=abc", "is an int"),
        ("--train.batch_size=2.5", "is an int"),
        ("--data.skip_corrupt=maybe", "is a bool"),
        ("--aug.blur_p=0.5", "2 comma-separated"),
        ("--optim.base_lr=fast", "is a float"),
        ("--train.batch_size", "has no value"),
    ],
)
def test_bad_overrides_fail_with_one_line(override, fragment):
    with pytest.raises(FastSSLError) as e:
        apply_overrides(Config(), [override])
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg


def test_override_tokens_take_both_flag_forms():
    from fastssl.config.config import parse_overrides

    tokens = ["--train.epochs=3", "--train.batch_size", "8", "model.name=vit_tiny", "--aug.blur_p=0.5,0.25"]
    assert parse_overrides(tokens) == [("train.epochs", "3"), ("train.batch_size", "8"), ("model.name", "vit_tiny"),
                                       ("aug.blur_p", "0.5,0.25")]
    for bad, fragment in [(["--train.epochs", "--train.batch_size=8"], "has no value"),
                          (["stray"], "--section.key=value"), (["--epochs=3"], "--section.key=value")]:
        with pytest.raises(FastSSLError, match=fragment):
            parse_overrides(bad)


def test_json_round_trip_and_format():
    cfg = apply_overrides(Config(), ["--aug.solarize_p=0.1,0.3", "--train.epochs=7"])
    again = Config.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    text = format_config(cfg)
    assert "train.epochs = 7" in text and "aug.solarize_p = (0.1, 0.3)" in text


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(FastSSLError, match="unknown config key"):
        Config.from_dict({"train": {"nope": 1}})
    with pytest.raises(FastSSLError, match="'train' must be a section of keys"):
        Config.from_dict({"train": 5})


def test_set_value_rejects_malformed_key():
    with pytest.raises(FastSSLError):
        set_value(Config(), "train", 1)


def test_method_name_switches_the_section_class_and_rejects_foreign_keys():
    from fastssl.config import BYOLConfig, MoCoV2Config

    cfg = apply_overrides(Config(), ["--method.proj_dim=8", "--method.name=byol", "--method.pred_hidden_dim=16"])
    assert isinstance(cfg.method, BYOLConfig)
    assert cfg.method.proj_dim == 8  # set before the switch, kept: byol has the key too
    assert cfg.method.pred_hidden_dim == 16
    with pytest.raises(FastSSLError, match=r"--method.queue_size is not a key of method 'byol'.*mocov2"):
        apply_overrides(cfg, ["--method.queue_size=16"])
    # method.name is applied first whatever the order on the command line
    cfg = apply_overrides(Config(), ["--method.queue_size=16", "--method.name=mocov2"])
    assert isinstance(cfg.method, MoCoV2Config) and cfg.method.queue_size == 16
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg


def test_unknown_method_suggests_the_closest():
    with pytest.raises(FastSSLError, match="Did you mean 'byol'"):
        apply_overrides(Config(), ["--method.name=byl"])


@pytest.mark.parametrize("override, key", [
    ("--method.temperature=-1", "--method.temperature"),
    ("--train.batch_size=0", "--train.batch_size"),
    ("--dist.zero_stage=4", "--dist.zero_stage"),
    ("--optim.base_lr=0", "--optim.base_lr"),
])
def test_validate_names_the_key_to_change(override, key):
    from fastssl.config import validate

    with pytest.raises(FastSSLError) as e:
        validate(apply_overrides(Config(), [override]))
    assert key in str(e.value) and "\n" not in str(e.value)
