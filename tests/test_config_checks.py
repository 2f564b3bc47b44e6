"""Every name and parameter a recipe may use is checked when the config loads, before any model:
loss parameter types, pair strategy and params, sampler names, numeric ranges; and the CLI
reports a bad one as a one-line error (exit 2) without loading a model."""

import re

import pytest

from ratchet import cli
from ratchet.config import SAMPLER_NAMES, ConfigError, load_config
from ratchet.losses import LOSSES


def _raises(overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


@pytest.mark.parametrize("overrides, message", [
    (["train.loss.beta=abc"], "train.loss.beta: expected float, got 'abc' (str)"),
    (["train.loss.beta=.nan"], "train.loss.beta: expected a finite float"),
    (["train.loss.beta=.inf"], "train.loss.beta: expected a finite float"),
    (["train.loss.beta=true"], "train.loss.beta: expected float, got True (bool)"),
    (["train.loss.name=ipo", "train.loss.length_normalized=1"], "train.loss.length_normalized: expected bool"),
    (["train.loss.name=score", "train.loss.stage=1.5"], "train.loss.stage: expected int"),
    (["train.loss.name=score", "train.loss.stage=true"], "train.loss.stage: expected int"),
    (["train.loss.name=rpo", "train.loss.nll=mean"], "train.loss.nll: expected one of 'sum', 'token_mean'"),
    (["train.loss.name=fdpo", "train.loss.divergence=tv"], "train.loss.divergence: expected one of"),
    # the params dataclasses' own range checks stay
    (["train.loss.name=cdpo", "train.loss.epsilon=2"], "train.loss: epsilon must be in [0, 1.0], got 2.0"),
])
def test_loss_parameter_types(overrides, message):
    _raises(overrides, message)


def test_loss_parameters_are_converted():
    cfg = load_config(None, ["train.loss.beta=3e-6", "train.loss.name=dpo"])  # YAML 1.1: a string
    assert cfg.train.loss.params == {"beta": 3e-6}
    assert load_config(None, ["train.loss.beta=1"]).train.loss.params["beta"] == 1.0
    assert LOSSES["rpo"].make_params(nll="token_mean").nll == "token_mean"
    with pytest.raises(ValueError, match=re.escape("loss 'dpo' parameter 'beta': expected float, got 'abc' (str)")):
        LOSSES["dpo"].make_params(beta="abc")


def test_pair_strategy_is_known():
    _raises(["pair.strategy=best_vs_wrost"], "pair.strategy: unknown pair strategy 'best_vs_wrost'; expected one of")
    _raises(["pair.strategy=nope"], "'score_margin'")


@pytest.mark.parametrize("overrides, message", [
    (["pair.params.margn=1"], "pair.params.margn: unknown parameter (strategy 'correct_vs_incorrect' takes none; "
                              "selection 'all_correct' takes none; labeller 'correct' takes none)"),
    (["pair.labeller=thresold"], "pair.labeller: unknown KTO labeller 'thresold'; expected one of ['correct', "
                                 "'threshold']"),
    (["pair.labeller=threshold", "pair.params.threshold=high"], "pair.params.threshold: expected float"),
    (["pair.strategy=score_margin", "pair.params.beta=1"], "strategy 'score_margin' takes margin"),
    (["pair.strategy=score_margin", "pair.params.margin=big"], "pair.params.margin: expected float, got 'big' (str)"),
    (["pair.strategy=rso", "pair.params.num_samples=2.5"], "pair.params.num_samples: expected int"),
    (["pair.selection=self_loglik", "pair.params.length_normalized=yes please"],
     "pair.params.length_normalized: expected bool"),
    (["pair.selection=best_of_n", "pair.params.min_score=high"], "pair.params.min_score: expected float"),
])
def test_pair_params_are_checked(overrides, message):
    _raises(overrides, message)


def test_pair_params_of_the_strategy_or_the_selection_pass():
    cfg = load_config(None, ["pair.strategy=score_margin", "pair.params.margin=1"])
    assert cfg.pair.params == {"margin": 1.0} and isinstance(cfg.pair.params["margin"], float)
    assert load_config(None, ["pair.selection=self_loglik", "pair.params.length_normalized=true"]).pair.params
    cfg = load_config(None, ["pair.selection=best_of_n", "pair.params.min_score=null"])
    assert cfg.pair.params == {"min_score": None}
    assert load_config(None, ["pair.strategy=reward_augmented", "pair.params.base=rso"]).pair.params == {"base": "rso"}
    cfg = load_config(None, ["train.loss.name=kto", "pair.labeller=threshold", "pair.params.threshold=1"])
    assert cfg.pair.labeller == "threshold" and cfg.pair.params == {"threshold": 1.0}


@pytest.mark.parametrize("key", ["generate.sampler", "evaluate.sampler"])
def test_sampler_names(key):
    _raises([f"{key}=vlm"], f"{key}: unknown sampler 'vlm'; expected one of cached, hf, vllm")
    assert load_config(None, [f"{key}=hf"])


def test_sampler_names_match_the_stages_registry():
    from ratchet.loop import stages

    assert set(SAMPLER_NAMES) == set(stages.SAMPLERS)


@pytest.mark.parametrize("override, message", [
    ("generate.k=0", "generate.k: expected >= 1, got 0"),
    ("generate.max_new_tokens=0", "generate.max_new_tokens: expected >= 1"),
    ("generate.batch_size=-1", "generate.batch_size: expected >= 1"),
    ("generate.temperature=-0.1", "generate.temperature: expected a finite number >= 0"),
    ("generate.temperature=.inf", "generate.temperature: expected a finite float, got inf"),
    ("generate.top_p=0", "generate.top_p: expected a probability in (0, 1]"),
    ("generate.top_p=1.5", "generate.top_p: expected a probability in (0, 1]"),
    ("generate.top_p=.nan", "generate.top_p: expected a finite float, got nan"),
    ("pair.max_pairs_per_prompt=0", "pair.max_pairs_per_prompt: expected >= 1"),
    ("evaluate.max_new_tokens=0", "evaluate.max_new_tokens: expected >= 1"),
    ("evaluate.batch_size=0", "evaluate.batch_size: expected >= 1"),
])
def test_numeric_ranges(override, message):
    _raises([override], message)


def test_range_edges_pass():
    cfg = load_config(None, ["generate.temperature=0", "generate.top_p=1", "generate.k=1",
                             "pair.max_pairs_per_prompt=1"])
    assert cfg.generate.temperature == 0.0 and cfg.generate.top_p == 1.0


def test_cli_fails_fast_on_a_bad_value(monkeypatch, capsys):
    import ratchet.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr(ratchet.models, "load_model", no_model)
    assert cli.main(["loop", "train.loss.beta=abc"]) == 2
    err = capsys.readouterr().err
    assert "train.loss.beta" in err and "expected float" in err and len(err.strip().splitlines()) == 1
