"""PIT's gap-ordering loss: values derived by hand, the reference point, and the ordering metric.

G(a|d) = policy - ref log-prob of answer a under the revision prompt with draft d; with beta = 1
the five terms are -log sigma(G(w|l) - G(w|w)), -log sigma(G(w|l) - G(l|l)), -log sigma(G(w|l) -
G(l|w)), -log sigma(G(w|w) - G(l|w)), -log sigma(G(l|l) - G(l|w)). sigma(ln 3) = 3/4, so
-log sigma(ln 3) = ln(4/3), -log sigma(-ln 3) = ln 4, -log sigma(2 ln 3) = ln(10/9).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ratchet.losses import LOSSES

from ._helpers import at_reference, t

LN2, LN3 = math.log(2), math.log(3)


def pit(w_from_l, w_from_w, l_from_l, l_from_w, **params):
    """Call ``pit`` with the given gap log-ratios (the reference values are arbitrary)."""
    ratios = {"revise_chosen_from_rejected": w_from_l, "revise_chosen_from_chosen": w_from_w,
              "revise_rejected_from_rejected": l_from_l, "revise_rejected_from_chosen": l_from_w}
    x = {}
    for i, (k, r) in enumerate(ratios.items()):
        x[f"ref_{k}_logps"] = t(-4.0 - i)
        x[f"policy_{k}_logps"] = t(-4.0 - i + r)
    spec = LOSSES["pit"]
    return spec.fn(**x, **dataclasses.asdict(spec.make_params(**params)))


def test_pit_is_registered_on_revision_data():
    spec = LOSSES["pit"]
    assert spec.data == "revision" and spec.needs_reference
    assert spec.make_params().beta == 0.1
    # reads the four revision sequences only, each under the policy and the reference
    assert sorted(spec.inputs) == sorted(f"{m}_revise_{a}_from_{d}_logps" for m in ("policy", "ref")
                                         for a in ("chosen", "rejected") for d in ("chosen", "rejected"))


def test_pit_at_reference_is_five_ln2():
    spec = LOSSES["pit"]
    out = spec.fn(**at_reference(spec), **dataclasses.asdict(spec.make_params()))
    torch.testing.assert_close(out.loss, torch.full_like(out.loss, 5 * LN2), rtol=1e-12, atol=1e-12)


def test_pit_values_by_hand():
    # G(w|l) = ln 3, G(w|w) = G(l|l) = 0, G(l|w) = -ln 3, beta 1: every ordering holds.
    #   four terms with difference ln 3: 4 ln(4/3); G(w|l) - G(l|w) = 2 ln 3: ln(10/9)
    out = pit(LN3, 0.0, 0.0, -LN3, beta=1.0)
    torch.testing.assert_close(out.loss, t(4 * math.log(4 / 3) + math.log(10 / 9)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.metrics["orderings_correct"], t(1.0))
    torch.testing.assert_close(out.metrics["margins"], t(2 * LN3))  # beta (G(w|l) - G(l|w))
    # beta scales the gaps: doubled log-ratios at beta 1/2 give the same loss
    torch.testing.assert_close(pit(2 * LN3, 0.0, 0.0, -2 * LN3, beta=0.5).loss, out.loss)
    # only G(l|w) = ln 3 (turning the winner into the loser is the largest gap): every ordering is
    # violated or tied: (w|l, w|w) and (w|l, l|l) tie at 0: ln 2 each; the three against G(l|w): ln 4 each
    bad = pit(0.0, 0.0, 0.0, LN3, beta=1.0)
    torch.testing.assert_close(bad.loss, t(2 * LN2 + 3 * math.log(4)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bad.metrics["orderings_correct"], t(0.0))


def test_pit_gradient_raises_the_loser_to_winner_revision():
    x = {}
    for k in ("revise_chosen_from_rejected", "revise_chosen_from_chosen", "revise_rejected_from_rejected",
              "revise_rejected_from_chosen"):
        x[f"ref_{k}_logps"] = t(-5.0)
        x[f"policy_{k}_logps"] = t(-5.0).requires_grad_(True)
    LOSSES["pit"].fn(**x, beta=1.0).loss.sum().backward()
    # d/dG of the sum at G = 0: each term -log sigma(a - b) has gradient -1/2 on a and +1/2 on b.
    # G(w|l) is the larger side 3 times: -3/2; G(l|w) the smaller 3 times: +3/2; G(w|w), G(l|l) once each way: 0
    grads = {k: x[f"policy_{k}_logps"].grad for k in ("revise_chosen_from_rejected", "revise_chosen_from_chosen",
                                                       "revise_rejected_from_rejected", "revise_rejected_from_chosen")}
    torch.testing.assert_close(grads["revise_chosen_from_rejected"], t(-1.5))
    torch.testing.assert_close(grads["revise_rejected_from_chosen"], t(1.5))
    torch.testing.assert_close(grads["revise_chosen_from_chosen"], t(0.0))
    torch.testing.assert_close(grads["revise_rejected_from_rejected"], t(0.0))
