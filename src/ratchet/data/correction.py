"""SCoRe's two-turn episode (Kumar et al. 2024, arXiv 2409.12917; docs/algorithms.md#score).

Turn 1 answers the prompt x; turn 2 answers ``[x, y1, p]``: the conversation so far with the first
attempt as the assistant's turn, then a fixed self-correction instruction p as a new user turn.
Unlike SRPO's revision prompt (``data.revision``: the draft quoted inside one user turn), the first
attempt stays the model's own earlier turn, as in the paper's multi-turn setting. Training
(``loop.rollouts.two_turn``) and evaluation (``loop.stages.evaluate_correction``) build the
second turn with this one function. Pure Python; knows no tokenizer or model.
"""

from __future__ import annotations

INSTRUCTION = ("There might be an error in the solution above because of lack of understanding of the question. "
               "Please correct the error, if any, and rewrite the solution.")
"""The first two sentences of the paper's MATH self-correction instruction (docs/algorithms.md#score)."""

Messages = list[dict]


def correction_messages(messages: Messages, first_attempt: str, instruction: str = INSTRUCTION) -> Messages:
    """``messages`` + the first attempt (assistant) + ``instruction`` (user): the prompt of attempt 2.
    A new list; ``messages`` must end with a user turn and is not modified."""
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("a correction episode needs messages ending with a user turn {'role': 'user', ...}")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("the self-correction instruction must be a non-empty string")
    return [dict(m) for m in messages] + [{"role": "assistant", "content": first_attempt},
                                         {"role": "user", "content": instruction}]
