"""Config loading: strict keys and types, overrides, loss params, saved resolved config, recipes."""

from pathlib import Path

import pytest
import yaml

from ratchet.config import ConfigError, RunConfig, load_config, save_config

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=3e-6", "generate.k=4", "train.loss.beta=0.2", "name=x"])
    assert cfg.train.lr == 3e-6 and cfg.generate.k == 4 and cfg.name == "x"
    assert cfg.train.loss.name == "dpo" and cfg.train.loss.params == {"beta": 0.2}


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "train.lrr: unknown key"),
    ("rounds=three", "rounds: expected int"),
    ("generate.temperature=hot", "generate.temperature: expected float"),
    ("train.gradient_checkpointing=1", "train.gradient_checkpointing: expected bool"),
    ("train.loss.name=nope", "train.loss.name: unknown objective 'nope'"),
    ("train.loss.bta=0.1", "no parameter 'bta'"),
    ("task=3", "task: expected a mapping"),
    ("lr", "expected key=value"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  loss: {name: ipo, tau: 0.5}\n  epochs: 2\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="train.bogus: unknown key"):
        load_config(nested)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.loss.name=ipo", "rounds=2"])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["train"]["loss"]["name"] == "ipo" and saved["rounds"] == 2
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_every_recipe_loads(recipe):
    assert isinstance(load_config(recipe), RunConfig)


def test_recipes_exist():
    assert any(r.name == "arithmetic-dpo.yaml" for r in RECIPES)
