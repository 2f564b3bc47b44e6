"""SRPO's inference-time revision loop: draft, then revise the previous answer N times, same model.

``docs/algorithms.md#srpo-revision-loop``: ``y_0 ~ pi(.|x)`` with the plain prompt, then
``y_{k+1} ~ pi(.|x, y_k)`` with the revision prompt (``data.revision.revision_messages``: the
original request and the previous answer only, not the whole history), for k = 0 .. N-1; every
``y_k`` is then evaluated (``evaluate.revisions``). The paper reports N up to 5. Any ``Sampler``
runs it, so DPO/IPO baselines are revised with the same prompt, as the paper's figure does.
Each step is one sampler call over all prompts (batched across prompts); step k samples with seed
``params.seed + k`` so steps do not reuse one random stream. One answer per step: ``params.k`` must be 1.
Drafts already sampled (the loop's greedy held-out answers, a round's training samples) can be
given instead of step 0, so only the revisions are sampled.
"""

from __future__ import annotations

import dataclasses
import string

from ratchet.data.revision import revision_messages
from ratchet.generate.base import Sampler, SamplingParams


def revise(sampler: Sampler, prompts: list[dict], *, revisions: int, params: SamplingParams,
           template: string.Template | None = None, drafts: list[dict] | None = None) -> list[dict]:
    """For each prompt record (a row of prompts.jsonl), the row plus ``answers`` (N+1 texts, the draft
    first), ``finish_reasons`` (one per answer) and ``sampling``; ``template`` defaults to the bundled one.
    ``drafts``: one completion per prompt (``{"text", "finish_reason"?}``) used as step 0 unsampled."""
    if revisions < 0:
        raise ValueError(f"revisions must be >= 0, got {revisions}")
    if params.k != 1:
        raise ValueError(f"the revision loop follows one answer per prompt; use k=1, got k={params.k}")
    if drafts is not None and len(drafts) != len(prompts):
        raise ValueError(f"{len(drafts)} drafts for {len(prompts)} prompts; expected one draft per prompt")
    for i, row in enumerate(prompts):
        if not isinstance(row.get("messages"), list) or not row["messages"]:
            raise ValueError(f"prompt {i} ({row.get('id', '?')!r}) needs 'messages', a non-empty list")
    answers: list[list[str]] = [[d["text"]] for d in drafts] if drafts is not None else [[] for _ in prompts]
    finish: list[list[str]] = ([[d.get("finish_reason")] for d in drafts] if drafts is not None
                               else [[] for _ in prompts])
    current = [row["messages"] if drafts is None else revision_messages(row["messages"], a[0], template)
               for row, a in zip(prompts, answers)]
    for step in range(0 if drafts is None else 1, revisions + 1):
        samples = sampler.sample(current, dataclasses.replace(params, seed=params.seed + step)) if prompts else []
        for i, ss in enumerate(samples):
            answers[i].append(ss[0].text)
            finish[i].append(ss[0].finish_reason)
        current = [revision_messages(row["messages"], a[-1], template) for row, a in zip(prompts, answers)]
    sampling = {**dataclasses.asdict(params), "revisions": revisions}
    return [{**row, "answers": a, "finish_reasons": f, "sampling": sampling}
            for row, a, f in zip(prompts, answers, finish)]
