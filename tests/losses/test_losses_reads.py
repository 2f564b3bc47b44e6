"""`LossSpec.reads`: what each objective declares it reads is exactly what its function takes, and a
declaration that disagrees with the function is refused when the entry is made."""

from __future__ import annotations

import inspect

import pytest

from ratchet.losses import LOSSES, ONE_ANSWER, DPOParams, Input, LossSpec, Reads, dpo_loss, sft_loss


def _tensor_arguments(spec: LossSpec) -> list[str]:
    """The function's keyword arguments that are not parameters, in signature order."""
    params = set(spec.params.__dataclass_fields__)
    return [n for n in inspect.signature(spec.fn).parameters if n not in params]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_declared_inputs_are_the_functions_tensor_arguments(name):
    spec = LOSSES[name]
    declared = list(spec.reads.tensors)
    assert len(declared) == len(set(declared))
    assert set(declared) == set(_tensor_arguments(spec)) == set(spec.inputs)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_source_is_declared_in_the_functions_order(name):
    """The order of a Reads tuple is the order the trainer packs sequences in and hashes into the
    reference cache key; it follows the function's own order, as the name parsing it replaced did."""
    spec = LOSSES[name]
    args = _tensor_arguments(spec)
    for source in ("policy", "ref", "anchor", "lengths", "value"):
        names = [n for n, i in spec.reads.tensors.items() if i.source == source]
        assert names == [a for a in args if a in names], source


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_needs_reference_is_whether_a_reference_sequence_is_declared(name):
    spec = LOSSES[name]
    assert spec.needs_reference == bool(spec.reads.reference)
    assert spec.needs_reference == any(i.source == "ref" for i in spec.reads.tensors.values())


def test_tensor_names_and_sources():
    assert LOSSES["dpo"].reads.tensors == {
        "policy_chosen_logps": Input("policy", "chosen"), "policy_rejected_logps": Input("policy", "rejected"),
        "ref_chosen_logps": Input("ref", "chosen"), "ref_rejected_logps": Input("ref", "rejected")}
    # the one answer of a record drops the sequence from the names
    assert LOSSES["sft"].reads.tensors == {"policy_logps": Input("policy", ONE_ANSWER),
                                           "lengths": Input("lengths", ONE_ANSWER)}
    assert LOSSES["inpo"].reads.anchor == ("chosen", "rejected")
    assert LOSSES["sppo"].reads.values == ("chosen_win_rates", "rejected_win_rates")
    assert "ref_response" in LOSSES["selm"].reads.reference
    # what the loop reads: which objectives need the reference's own answer, which train on revision prompts
    assert {n for n, s in LOSSES.items() if "ref_response" in s.reads.policy} == {"selm"}
    assert LOSSES["score"].reads.policy == ("first", "second")
    assert {n for n, s in LOSSES.items() if any(q.startswith("revise_") for q in s.reads.policy)} == {
        n for n, s in LOSSES.items() if s.data == "revision"}


def test_a_declaration_that_disagrees_with_the_function_is_refused():
    with pytest.raises(ValueError, match=r"loss 'bad': `reads` declares \['lengths'\] that dpo_loss does not take "
                                         r"and misses \['ref_chosen_logps', 'ref_rejected_logps'\]"):
        LossSpec(name="bad", fn=dpo_loss, params=DPOParams, data="paired",
                 reads=Reads(policy=("chosen", "rejected"), lengths=(ONE_ANSWER,)))
    with pytest.raises(ValueError, match="misses"):
        LossSpec(name="bad", fn=sft_loss, params=LOSSES["sft"].params, data="sft", reads=Reads(policy=(ONE_ANSWER,)))
