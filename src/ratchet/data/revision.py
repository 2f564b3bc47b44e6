"""SRPO's revision prompts and the six sequences of a pair, as messages and text: no tokenizer, no model.

SRPO (Choi et al. 2024, arXiv 2406.01660; docs/algorithms.md#srpo) uses one set of weights as a
generator pi(y|x) with the ordinary prompt and as a reviser pi(y'|y, x) with a *revision prompt*
that holds a draft y. The revision prompt is the original conversation whose last user turn is
replaced by a template filled with that turn's text (``$prompt``) and the draft (``$draft``): a
single user turn, as in the revision template of TRL PR #1772 (the request, then "EXAMPLE
SUMMARY: {draft}"), so the draft is shown as material to improve, not as the model's own earlier
turn. Earlier turns (a system prompt, a previous exchange) are kept unchanged. Training
(``expand_revision``) and inference (``generate.revise``) build revision prompts with the same
``revision_messages``, so the model is revised at test time with the prompt it was trained on.

A pairs row ``{"messages", "chosen", "rejected", "chosen_complete"?, "rejected_complete"?}``
expands into six (prompt messages, completion, ended-by-itself) sequences, named as the ``srpo``
objective's inputs (``policy_<name>_logps``):

    chosen                          x -> y_w
    rejected                        x -> y_l
    revise_chosen_from_rejected     (x, draft y_l) -> y_w    revising the loser moves to the winner
    revise_rejected_from_rejected   (x, draft y_l) -> y_l    ... rather than staying put
    revise_chosen_from_chosen       (x, draft y_w) -> y_w    revising the winner keeps it
    revise_rejected_from_chosen     (x, draft y_w) -> y_l    ... rather than moving to the loser

Besides pairs of two samples, SRPO's self-improvement can learn from the model's own revisions
(``draft_revision_pairs``): a draft and the model's revision of it, the better of the two chosen,
so ``revise_chosen_from_rejected`` is the model's own improving step (or, where its revision broke
a right draft, ``revise_rejected_from_chosen`` is the breaking step it is taught away from).
"""

from __future__ import annotations

import string
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from ratchet.data.pairing import is_complete


TEMPLATES = {"revision": "revision.txt"}
"""Bundled revision templates (``src/ratchet/data/templates``), by name."""
PLACEHOLDERS = ("prompt", "draft")
SEQUENCE_NAMES = ("chosen", "rejected", "revise_chosen_from_rejected", "revise_rejected_from_rejected",
                  "revise_chosen_from_chosen", "revise_rejected_from_chosen")
"""The six sequences of a pair, in the order the ``srpo`` docstring lists them."""

Messages = list[dict]


class PromptCompletion(NamedTuple):
    """One sequence to score: the chat prompt, the completion text, and whether it ended by itself
    (then the tokenizer's end-of-turn token is appended; see ``data.tokenize``)."""

    messages: Messages
    text: str
    complete: bool


def load_template(name_or_path: str | Path = "revision") -> string.Template:
    """A bundled template by name (``TEMPLATES``), or any file; ``string.Template`` syntax, with both
    ``$prompt`` (the last user turn) and ``$draft`` (the answer to revise). A literal ``$`` is ``$$``.
    One trailing newline of the file is dropped."""
    if str(name_or_path) in TEMPLATES:
        text = resources.files("ratchet.data").joinpath("templates", TEMPLATES[str(name_or_path)]).read_text()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"revision template {str(name_or_path)!r}: neither {list(TEMPLATES)} nor a file")
        text = path.read_text()
    template = string.Template(text.removesuffix("\n"))
    if not template.is_valid():
        raise ValueError(f"revision template {str(name_or_path)!r}: a '$' that starts no placeholder "
                         "(write $$ for a $)")
    found = set(template.get_identifiers())
    missing, unknown = sorted(set(PLACEHOLDERS) - found), sorted(found - set(PLACEHOLDERS))
    if missing or unknown:
        raise ValueError(f"revision template {str(name_or_path)!r}: needs exactly $prompt and $draft; "
                         f"missing {['$' + m for m in missing]}, unknown {['$' + u for u in unknown]}")
    return template


@lru_cache(maxsize=1)
def default_template() -> string.Template:
    return load_template("revision")


def revision_messages(messages: Messages, draft: str, template: string.Template | None = None) -> Messages:
    """The revision prompt: ``messages`` with the last user turn's content replaced by the template
    holding that content and ``draft``. A new list; ``messages`` is not modified."""
    if not messages or messages[-1].get("role") != "user" or not isinstance(messages[-1].get("content"), str):
        raise ValueError("a revision prompt needs messages ending with a user turn {'role': 'user', 'content': str}")
    template = template or default_template()
    text = template.substitute(prompt=messages[-1]["content"], draft=draft)
    return [dict(m) for m in messages[:-1]] + [{**messages[-1], "content": text}]


def expand_revision(row: dict, template: string.Template | None = None) -> dict[str, PromptCompletion]:
    """The six sequences of one pairs row, by name (``SEQUENCE_NAMES`` order). A missing or empty
    field is a ValueError naming the row's id."""
    for key in ("messages", "chosen", "rejected"):
        if key not in row:
            raise ValueError(f"pairs row {row.get('id', '?')!r}: missing {key!r}; "
                             "SRPO needs messages, chosen, rejected")
    for key in ("chosen", "rejected"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise ValueError(f"pairs row {row.get('id', '?')!r}: empty {key} completion")
    answers = {y: (row[y], bool(row.get(f"{y}_complete", True))) for y in ("chosen", "rejected")}
    drafts = {d: revision_messages(row["messages"], row[d], template) for d in ("rejected", "chosen")}
    out = {y: PromptCompletion(row["messages"], *answers[y]) for y in ("chosen", "rejected")}
    for draft in ("rejected", "chosen"):
        for target in ("chosen", "rejected"):
            out[f"revise_{target}_from_{draft}"] = PromptCompletion(drafts[draft], *answers[target])
    return out


def _better(draft: tuple[float, bool | None], revision: tuple[float, bool | None]) -> int:
    """1 if the revision is better, -1 if the draft is, 0 if the judge does not tell them apart:
    by the verifier's verdicts where both have one, else by score."""
    (s_d, c_d), (s_r, c_r) = draft, revision
    if c_d is not None and c_r is not None:
        return int(c_r) - int(c_d)
    return (s_r > s_d) - (s_r < s_d)


def draft_revision_pairs(completions_row: dict, judged: dict, revised_row: dict, revised_judged: dict, *,
                         drop_truncated: bool = True) -> list[dict]:
    """Pairs (draft, the model's revision of it) of one prompt, the better one chosen (``_better``):
    an improved revision over its draft, a right draft over the revision that broke it.

    ``completions_row``/``judged``: a round's samples and their judgments; ``revised_row``: the same
    prompt's revisions, ``completions`` with one revision per revised draft and ``draft_indices``
    (which sample each revises); ``revised_judged``: their judgments. A revision equal to its draft,
    one the judge cannot tell from it, or (``drop_truncated``) a pair with an answer cut by the
    token budget gives no pair. Rows are pairs rows (``data.records``) plus ``"origin": "revision"``."""
    indices = revised_row.get("draft_indices")
    if not isinstance(indices, list) or len(indices) != len(revised_row["completions"]):
        raise ValueError(f"revised row {revised_row.get('id', '?')!r}: needs 'draft_indices', one per completion")
    correct_d, correct_r = judged.get("correct") or [], revised_judged.get("correct") or []
    out = []
    for n, i in enumerate(indices):
        draft, rev = completions_row["completions"][i], revised_row["completions"][n]
        if draft["text"] == rev["text"]:
            continue
        if drop_truncated and any(c.get("finish_reason") == "length" for c in (draft, rev)):
            continue  # a cut answer is not an answer (pairing.drop_truncated says why)
        d = (judged["scores"][i], correct_d[i] if correct_d else None)
        r = (revised_judged["scores"][n], correct_r[n] if correct_r else None)
        better = _better(d, r)
        if better == 0:
            continue
        (w, w_score), (l, l_score) = ((rev, r[0]), (draft, d[0])) if better > 0 else ((draft, d[0]), (rev, r[0]))
        out.append({"id": completions_row["id"], "messages": completions_row["messages"], "chosen": w["text"],
                    "rejected": l["text"], "chosen_score": w_score, "rejected_score": l_score,
                    "chosen_complete": is_complete(w), "rejected_complete": is_complete(l), "origin": "revision"})
    return out
