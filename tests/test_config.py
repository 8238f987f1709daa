"""Tests of the config schema, YAML loading and key=value overrides."""

import pytest

from fedsign.config import Config, config_from_yaml_text, load_config, parse_overrides
from fedsign.errors import ConfigError


def test_overrides_are_typed_and_nested():
    overrides = parse_overrides(["train.lr=0.1", "seed=3", "data.download=true", "federation.keep_client_models=[2, 4]"])
    assert overrides == {"train": {"lr": 0.1}, "seed": 3, "data": {"download": True},
                         "federation": {"keep_client_models": [2, 4]}}


def test_load_config_applies_overrides_after_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.5\n  batch_size: 16\n")
    config = load_config(path, ["train.lr=0.25"])
    assert config.train.lr == 0.25
    assert config.train.batch_size == 16
    assert config.data.dataset == "digits"


def test_integer_is_accepted_for_float():
    config = load_config(None, ["train.lr=1"])
    assert config.train.lr == 1.0
    assert isinstance(config.train.lr, float)


@pytest.mark.parametrize(
    ("override", "expected_in_message"),
    [
        ("train.lrr=0.1", "unknown key 'train.lrr'"),
        ("nonsense=1", "unknown key 'nonsense'"),
        ("train.lr=abc", "train.lr='abc'"),
        ("train.lr=-0.1", "train.lr=-0.1"),
        ("data.alpha=0", "data.alpha=0.0"),
        ("data.alpha=-1", "data.alpha=-1.0"),
        ("strategy.fraction_train=0", "strategy.fraction_train=0.0"),
        ("strategy.fraction_train=1.5", "strategy.fraction_train=1.5"),
        ("train.batch_size=2.5", "train.batch_size=2.5"),
        ("data.download=yes please", "data.download='yes please'"),
        ("seed=true", "seed=True"),
        ("sign.variant=cubic", "sign.variant='cubic'"),
        ("train", "expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_key(override, expected_in_message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    message = str(error.value)
    assert expected_in_message in message
    assert "\n" not in message


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_yaml_round_trip_keeps_hash():
    config = load_config(None, ["train.lr=0.01", "data.alpha=0.1", "federation.keep_client_models=[3]"])
    again = config_from_yaml_text(config.to_yaml())
    assert again == config
    assert again.short_hash() == config.short_hash()


def test_run_name_has_prefix_and_hash():
    config = Config()
    name = config.run_name()
    assert name.startswith("digits-cnn-fedavg-dir0.5-s0-")
    assert len(name.rsplit("-", 1)[1]) == 8
    assert load_config(None, ["seed=1"]).run_name() != name
    assert config.run_name("central").startswith("digits-cnn-central-s0-")


def test_default_config_file_is_valid():
    config = load_config("configs/default.yaml")
    assert config.data.dataset == "digits"
    assert config.data.alpha == 0.5
