"""The registry contract: names, LossSpec fields, params dataclasses, signatures, output shapes, docs."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pathlib
import textwrap

import pytest
import torch

import ratchet.losses as losses_pkg
from ratchet.losses import LOSSES, LossOutput

from ._helpers import random_inputs

EXPECTED = {
    "dpo", "dpop", "cdpo", "rdpo", "ipo", "hinge", "kto", "simpo", "orpo", "rpo",
    "selm", "srpo", "inpo", "sppo", "nca", "fdpo", "sft", "rloo", "pit", "score",
}  # fmt: skip
ON_POLICY = {"rloo", "score"}  # [prompts, k] inputs from fresh samples (tests/losses/test_rloo.py, test_score.py)
REPO = pathlib.Path(__file__).resolve().parents[2]


def test_registered_names_are_exactly_the_issue_list():
    assert set(LOSSES) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_fields(name):
    spec = LOSSES[name]
    assert spec.name == name
    assert dataclasses.is_dataclass(spec.params) and isinstance(spec.params, type)
    assert isinstance(spec.needs_reference, bool)
    assert spec.data in ("paired", "unpaired", "revision", "scored", "sft", "online", "two_turn")
    # needs_reference is True exactly when the function reads a reference tensor.
    assert spec.needs_reference == any(n.startswith("ref_") for n in spec.inputs)


def test_data_kinds():
    kinds = {name: spec.data for name, spec in LOSSES.items()}
    assert kinds["kto"] == "unpaired" and kinds["srpo"] == kinds["pit"] == "revision"
    assert kinds["sppo"] == "scored" and kinds["sft"] == "sft"
    assert {n for n, k in kinds.items() if k in ("online", "two_turn")} == ON_POLICY
    assert {n for n, spec in LOSSES.items() if spec.on_policy} == ON_POLICY
    assert {n for n, k in kinds.items() if k == "paired"} == EXPECTED - {"kto", "srpo", "pit", "sppo", "sft"} - ON_POLICY


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_signature_is_keyword_only_and_params_have_no_defaults(name):
    spec = LOSSES[name]
    sig = inspect.signature(spec.fn)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
    fields = [f.name for f in dataclasses.fields(spec.params)]
    assert set(fields) <= set(sig.parameters)
    # Defaults live in one place: the params dataclass.
    assert all(sig.parameters[f].default is inspect.Parameter.empty for f in fields)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_params_field_has_an_attribute_docstring(name):
    cls = LOSSES[name].params
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    documented = {
        stmt.target.id
        for stmt, nxt in zip(body, body[1:])
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
    }
    assert documented == {f.name for f in dataclasses.fields(cls)}
    assert cls.__doc__ and LOSSES[name].fn.__doc__


def test_make_params_defaults_and_overrides():
    assert LOSSES["dpo"].make_params().beta == 0.1
    assert LOSSES["dpo"].make_params(beta=0.3).beta == 0.3
    assert LOSSES["srpo"].make_params() == LOSSES["srpo"].params(beta=0.01, alpha=0.8)


def test_make_params_unknown_key_names_loss_and_allowed_keys():
    with pytest.raises(ValueError, match=r"^loss 'dpo' has no parameter 'bta'; expected one of: beta$"):
        LOSSES["dpo"].make_params(bta=0.1)
    with pytest.raises(ValueError, match="expected one of: beta, epsilon"):
        LOSSES["rdpo"].make_params(label_smoothing=0.1)


@pytest.mark.parametrize(
    "name, bad",
    [("rdpo", {"epsilon": 0.5}), ("cdpo", {"epsilon": -0.1}), ("srpo", {"alpha": 1.5}),
     ("fdpo", {"divergence": "tv"}), ("fdpo", {"divergence": "alpha", "alpha": 0.0}), ("rpo", {"nll": "mean"}),
     ("inpo", {"tau_over_eta": 2.0})],
)  # fmt: skip
def test_invalid_param_values_raise(name, bad):
    with pytest.raises(ValueError):
        LOSSES[name].make_params(**bad)


@pytest.mark.parametrize("name", sorted(EXPECTED - ON_POLICY))
def test_output_shape_finite_and_detached_metrics(name):
    spec = LOSSES[name]
    x = random_inputs(spec, batch=5, requires_grad=True)
    out = spec.fn(**x, **dataclasses.asdict(spec.make_params()))
    assert isinstance(out, LossOutput)
    assert out.loss.shape == (5,) and out.loss.dtype == torch.float64
    assert torch.isfinite(out.loss).all() and out.loss.requires_grad
    assert out.metrics and all(not m.requires_grad for m in out.metrics.values())
    if spec.data != "sft":
        assert {"chosen_rewards", "rejected_rewards"} <= set(out.metrics)


def test_loss_modules_avoid_item_and_device_moves():
    src_dir = pathlib.Path(losses_pkg.__file__).parent
    for path in src_dir.glob("*.py"):
        text = path.read_text()
        for banned in (".item(", ".cuda(", ".cpu(", ".to(", "torch.manual_seed", "torch.rand"):
            assert banned not in text, f"{path.name} uses {banned}"


def test_docs_table_has_a_row_per_registered_name():
    text = (REPO / "docs" / "objectives.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")}
    assert rows == EXPECTED
