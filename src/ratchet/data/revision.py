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
"""

from __future__ import annotations

import string
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple


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
