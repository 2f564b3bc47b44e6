"""One default per training setting: ``train_offline()`` and ``train_online()`` default every setting
``TrainConfig`` also has to the config's value, so a direct call trains as the loop does."""

import dataclasses
import inspect

import pytest

from ratchet.config import LossConfig, TrainConfig
from ratchet.train.offline import train_offline
from ratchet.train.online import train_online

CONFIG = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


@pytest.mark.parametrize("fn", [train_offline, train_online], ids=lambda f: f.__name__)
def test_defaults_are_the_configs(fn):
    params = inspect.signature(fn).parameters
    shared = sorted(set(CONFIG) & set(params))
    assert {"lr", "epochs", "batch_size", "warmup_ratio", "checkpoint_every", "seed"} <= set(shared)
    assert {k: params[k].default for k in shared} == {k: CONFIG[k] for k in shared}


def test_the_objective():
    assert inspect.signature(train_offline).parameters["loss"].default == LossConfig().name
    # the config's objective (dpo) does not train on-policy: train_online has none to default to
    assert inspect.signature(train_online).parameters["loss"].default is inspect.Parameter.empty
