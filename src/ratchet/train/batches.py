"""Pairs file rows -> validated, tokenised examples -> the step plan -> packed model inputs.

A training file holds rows of one format (``ROW_FIELDS``, ``row_format``): preference pairs
(``messages``, ``chosen``, ``rejected``), or KTO's unpaired examples (``messages``, ``completion``,
``label``: one answer each, desirable or not; ``data.pairing.build_unpaired``). An unpaired row
becomes an example with the one sequence ``completion`` instead of ``chosen`` and ``rejected``.

Validation names the row: a missing field, a field of the wrong type, an empty completion, or a
prompt that leaves no room for the completion within ``max_length`` is a ``PairsError`` (or
skipped and counted with ``skip_invalid``). A pair whose chosen text equals its rejected one is
dropped and counted (no preference: a DPO-style loss sits at log 2 on it). Truncated completions
are counted, never silent.

An example holds named sequences, each a prompt plus a completion: ``chosen`` and ``rejected``
always, and whatever else the objective reads (``SEQUENCES`` says where each comes from in a
pairs row). ``pack`` lays a batch out for one forward: with ``share_prompt`` an example's
sequences form one row, a prefix tree in which every token prefix they share (the prompt of all
of them, the common head of SRPO's revision prompts) is computed once and each token attends to
its own sequence's earlier tokens only (a 4D mask); without it, every sequence is its own
right-padded row.

``epoch_batches`` and ``split_step`` turn examples into optimizer steps: a global batch of
``batch_size * grad_accum * num_processes`` pairs per step, cut into the same number of
micro-batches on every process (a process with nothing left gets a zero-weight copy, so
collective operations never hang), and the step's pair count, by which the loop divides the
summed loss so the gradient is the mean over the global batch however it was cut.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch

from ratchet.data.records import RecordError, messages_problem
from ratchet.data.revision import revision_messages
from ratchet.data.tokenize import Tokenized, completion_ids, prompt_ids

PAIR_FIELDS = ("messages", "chosen", "rejected")
ROW_FIELDS = {"pairs": PAIR_FIELDS, "unpaired": ("messages", "completion", "label")}
"""Fields every row has, by file format: preference pairs, or unpaired labelled examples (KTO)."""
OWN_SEQUENCES = {"pairs": ("chosen", "rejected"), "unpaired": ("completion",)}
"""The answers a row of each format holds, tokenised for every objective."""


SKIP_HINT = "use --skip-invalid to skip such rows"
"""The end of an invalid row's error where skipping is offered (``ratchet train``; ``prepare_pairs``'s ``hint``)."""


class PairsError(RecordError):
    """A training file's row, or the whole file, does not fit the objective (a ``RecordError``, so
    the CLI reports it as one line)."""


# ------------------------------------------------------------------------------------ sequences
def _plain(field_name: str):
    def source(row: dict, rows: list[dict], n: int, template) -> tuple[list[dict], str, bool]:
        return row["messages"], row[field_name], row.get(f"{field_name}_complete", True)
    return source


def _unpaired(row: dict, rows: list[dict], n: int, template) -> tuple[list[dict], str, bool]:
    """The one answer of an unpaired row (``complete``, as ``build_unpaired`` writes it)."""
    return row["messages"], row["completion"], row.get("complete", True)


def _mismatched(rows: list[dict], n: int) -> dict:
    """The first row after row ``n`` (1-based, cyclically) with another prompt; the next row if
    all share one. Rows of one prompt sit together in a round's file, and the next row's answer
    to the same prompt would be a matched, not a mismatched, pair."""
    here = rows[n - 1].get("messages")
    for k in range(len(rows) - 1):
        other = rows[(n + k) % len(rows)]
        if not isinstance(other, dict) or other.get("messages") != here:
            return other
    return rows[n % len(rows)]


def _kl(row: dict, rows: list[dict], n: int, template) -> tuple[list[dict], str, bool]:
    """KTO's mismatched completion y' for z0 (Ethayarajh et al. 2024, section 4; TRL shifts
    completions by one in the batch): the answer (``chosen``, or an unpaired row's ``completion``)
    of the next row with another prompt, under this row's prompt. Fixed per dataset, so its
    reference log-prob is precomputed like any other. A pair and its two unpaired rows
    (``data.pairing.unpaired_from_pairs``) get the same y'."""
    other = _mismatched(rows, n)
    text = (other.get("chosen", other.get("completion")) if isinstance(other, dict) else None)
    if not isinstance(text, str) or not text.strip():
        text = row.get("rejected", row.get("completion"))
    return row["messages"], text, True


def _revision(target: str, draft: str):
    """SRPO: revise ``draft`` into ``target``, with the revision prompt inference uses
    (``ratchet.data.revision.revision_messages``)."""
    def source(row: dict, rows: list[dict], n: int, template) -> tuple[list[dict], str, bool]:
        messages = revision_messages(row["messages"], row[draft], template)
        return messages, row[target], row.get(f"{target}_complete", True)
    return source


SEQUENCES = {
    "chosen": _plain("chosen"),
    "rejected": _plain("rejected"),
    "ref_response": _plain("ref_response"),  # SELM: the reference model's own response
    "completion": _unpaired,  # an unpaired row's answer (KTO)
    "kl": _kl,
    **{f"revise_{t}_from_{d}": _revision(t, d) for t in ("chosen", "rejected") for d in ("chosen", "rejected")},
}
"""Sequence name -> how to read (prompt messages, completion text, ended by itself) from a row
(``source(row, rows, n, revision_template)``; n is the 1-based row number)."""


def required_fields(names: tuple[str, ...], values: tuple[str, ...], row_format: str = "pairs") -> tuple[str, ...]:
    extra = tuple(n for n in names if n == "ref_response")
    return tuple(dict.fromkeys(ROW_FIELDS[row_format] + extra + values))


def row_format(rows: list[dict]) -> str:
    """``unpaired`` if the first row is an unpaired example (``completion``, no ``chosen``), else
    ``pairs``; a row of the other format is then reported by number as missing fields."""
    first = rows[0] if rows else {}
    return "unpaired" if isinstance(first, dict) and "completion" in first and "chosen" not in first else "pairs"


@dataclass
class PairExample:
    row: int
    """1-based row number in the pairs file (for error messages)."""
    chosen: Tokenized | None
    """None for an unpaired row, whose one answer is the ``completion`` sequence in ``extra``."""
    rejected: Tokenized | None
    extra: dict[str, Tokenized] = field(default_factory=dict)
    """Further sequences the objective reads (``ref_response``, ``kl``, ``revise_*``, ``completion``)."""
    values: dict[str, float] = field(default_factory=dict)
    """Per-row numbers the objective reads (e.g. ``chosen_win_rate``)."""

    def sequence(self, name: str) -> Tokenized:
        return {"chosen": self.chosen, "rejected": self.rejected}.get(name) or self.extra[name]

    @property
    def length(self) -> int:
        """Tokens of the packed row (prompt once, then the row's own answers: chosen and rejected,
        or an unpaired row's completion): the grouping key."""
        own = [s for s in (self.chosen, self.rejected) if s is not None] or [self.extra["completion"]]
        prompt = len(own[0].input_ids) - own[0].num_completion_tokens
        return prompt + sum(s.num_completion_tokens for s in own)


@dataclass
class PrepareReport:
    examples: list[PairExample]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """(row, reason) of every invalid row that was skipped."""
    truncated: int = 0
    """Completions cut to fit max_length."""
    identical: int = 0
    """Pairs rows dropped because chosen == rejected."""


def _problem(row: dict, fields: tuple[str, ...]) -> str | None:
    missing = [k for k in fields if k not in row]
    if missing:
        return f"missing field(s) {missing}"
    for key in ("chosen", "rejected", "ref_response", "completion"):
        if key in fields and not isinstance(row[key], str):
            return f"{key} must be a string (the answer text), got {type(row[key]).__name__} {row[key]!r:.60}"
        if key in fields and not row[key].strip():
            return f"empty {key} completion"
    if "label" in fields and not isinstance(row["label"], bool):
        return f"label must be true (desirable) or false (undesirable), got {row['label']!r}"
    problem = messages_problem(row["messages"])
    if problem:
        return problem
    for key in fields:
        if key.endswith("_win_rate") and not (isinstance(row[key], (int, float)) and 0 <= row[key] <= 1):
            return f"{key} must be a number in [0, 1], got {row[key]!r}"
    return None


def _tokenize(tokenizer, messages: list[dict], text: str, complete: bool, max_length: int,
              prompts: dict) -> Tokenized:
    key = repr(messages)
    if key not in prompts:
        prompts[key] = prompt_ids(tokenizer, messages)
    prompt = prompts[key]
    if not prompt:
        raise ValueError("the chat template renders an empty prompt")
    room = max_length - len(prompt)
    if room < 1:
        raise ValueError(f"prompt is {len(prompt)} tokens, leaving no room for the completion within "
                         f"max_length={max_length}")
    comp = completion_ids(tokenizer, text, complete)
    if not comp:
        raise ValueError("empty completion")
    return Tokenized(prompt + comp[:room], [0] * len(prompt) + [1] * len(comp[:room]), len(comp) > room)


def prepare_pairs(rows: list[dict], tokenizer, *, max_length: int, skip_invalid: bool = False,
                  sequences: tuple[str, ...] = ("chosen", "rejected"), values: tuple[str, ...] = (),
                  revision_template=None, row_format: str = "pairs", hint: str | None = SKIP_HINT) -> PrepareReport:
    """Validate and tokenise every row; ``sequences`` and ``values`` are what the objective reads;
    ``revision_template`` (a ``string.Template``; default the bundled one) makes SRPO's revision prompts;
    ``row_format`` is the file's (``ROW_FIELDS``; ``row_format(rows)`` tells); ``hint`` ends an invalid
    row's error (how to skip such rows; None where the caller offers no way)."""
    report = PrepareReport(examples=[])
    fields = required_fields(sequences, values, row_format)
    prompts: dict = {}
    for n, row in enumerate(rows, start=1):
        try:
            problem = _problem(row, fields) if isinstance(row, dict) else f"expected a JSON object, got {row!r}"
            if problem:
                raise ValueError(problem)
            if row_format == "pairs" and row["chosen"] == row["rejected"]:
                report.identical += 1
                continue
            seqs = {name: _tokenize(tokenizer, *SEQUENCES[name](row, rows, n, revision_template), max_length,
                                    prompts) for name in dict.fromkeys(OWN_SEQUENCES[row_format] + tuple(sequences))}
        except ValueError as e:
            if not skip_invalid:
                raise PairsError(f"{row_format} row {n}: {e}" + (f" ({hint})" if hint else "")) from None
            report.skipped.append((n, str(e)))
            continue
        report.truncated += sum(s.truncated for s in seqs.values())
        chosen, rejected = seqs.pop("chosen", None), seqs.pop("rejected", None)
        report.examples.append(PairExample(n, chosen, rejected, seqs, {k: float(row[k]) for k in values}))
    return report


# ----------------------------------------------------------------------------------- step plan
def length_grouped_batches(examples: list[PairExample], batch_size: int, *, seed: int) -> list[list[int]]:
    """Indices in batches of similar length (little padding), batch order shuffled by ``seed``.

    Sort a shuffled order by length inside windows of 50 batches (TRL/HF "group_by_length"
    style): padding stays low while every epoch still sees different batch compositions."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 50
    grouped = []
    for s in range(0, len(order), window):
        grouped += sorted(order[s:s + window], key=lambda i: examples[i].length, reverse=True)
    batches = [grouped[s:s + batch_size] for s in range(0, len(grouped), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass
class MicroBatch:
    indices: list[int]
    """Example indices; a zero-weight copy keeps a process with nothing left in step."""
    weights: list[float]
    """1.0 for a real pair, 0.0 for a filler."""


@dataclass
class Step:
    micro: list[MicroBatch]
    """This process's micro-batches (the same count on every process)."""
    global_pairs: int
    """Real pairs in the step over all processes: the loss normaliser."""
    all_indices: list[int]
    """Every example of the step, all processes (for error messages)."""


def epoch_batches(examples: list[PairExample], global_batch: int, *, seed: int, epoch: int,
                  shuffle: bool) -> list[list[int]]:
    """The global batches of one epoch: length-grouped and shuffled, or in file order."""
    if shuffle:
        return length_grouped_batches(examples, global_batch, seed=seed + epoch)
    return [list(range(s, min(s + global_batch, len(examples)))) for s in range(0, len(examples), global_batch)]


def _by_tokens(indices: list[int], examples: list[PairExample], max_tokens: int) -> list[list[int]]:
    """Consecutive runs of ``indices`` whose packed length stays within ``max_tokens`` (at least
    one pair each)."""
    runs, run, total = [], [], 0
    for i in indices:
        if run and total + examples[i].length > max_tokens:
            runs.append(run)
            run, total = [], 0
        run.append(i)
        total += examples[i].length
    return runs + ([run] if run else [])


def split_step(examples: list[PairExample], batch: list[int], *, batch_size: int, num_processes: int,
               process_index: int, max_tokens: int | None = None) -> Step:
    """Cut one global batch into micro-batches of at most ``batch_size`` pairs (and at most
    ``max_tokens`` packed tokens, if given), the same number on every process; similar lengths
    share a micro-batch (less padding)."""
    ordered = sorted(batch, key=lambda i: examples[i].length, reverse=True)
    per_process = max(1, math.ceil(len(ordered) / (batch_size * num_processes)))
    slots = per_process * num_processes
    base, extra = divmod(len(ordered), slots)
    cuts, start = [], 0
    for s in range(slots):
        size = base + (s < extra)
        cuts.append(ordered[start:start + size])
        start += size
    shares = [[c for c in cuts[r::num_processes] if c] for r in range(num_processes)]
    if max_tokens:
        shares = [[run for c in share for run in _by_tokens(c, examples, max_tokens)] for share in shares]
    count = max(len(share) for share in shares)
    mine = [MicroBatch(idx, [1.0] * len(idx)) for idx in shares[process_index]]
    mine += [MicroBatch([ordered[-1]], [0.0])] * (count - len(mine))  # fillers: weight 0, same shape of work
    return Step(mine, len(batch), list(batch))


# -------------------------------------------------------------------------------------- packing
@dataclass
class PackedBatch:
    """Model inputs for one forward; see ``ratchet.logprobs.packed_logps`` for the layout."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    src: torch.Tensor
    labels: torch.Tensor
    seq_index: torch.Tensor
    num_seqs: int
    lengths: torch.Tensor
    """[num_seqs] completion tokens of each sequence."""
    real: torch.Tensor
    """[R, T] bool: True at a token, False at padding. A token at position ``position_ids[r, t]``
    attends to that many earlier tokens and itself (the model-FLOP count of ``benchmarks/``)."""
    prompt_tokens: int
    """Tokens computed that no sequence scores (prompts; with ``share_prompt`` each distinct one once)."""

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int(self.real.sum())

    def model_inputs(self, device) -> dict:
        return {"input_ids": self.input_ids.to(device), "position_ids": self.position_ids.to(device),
                "attention_mask": self.attention_mask.to(device), "src": self.src.to(device),
                "labels": self.labels.to(device), "seq_index": self.seq_index.to(device), "num_seqs": self.num_seqs}


@dataclass
class _Row:
    """One packed row under construction: a forest of token prefixes laid out depth first."""

    ids: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    """Position id of each node: its distance from the root of its tree."""
    end: list[int] = field(default_factory=list)
    """One past the last node of each node's subtree (preorder: a node's descendants follow it)."""
    scored: list[bool] = field(default_factory=list)
    """Whether some sequence scores the token at this node (a completion token)."""


def _prefix_tree(seqs: list[tuple[list[int], int]]) -> tuple[_Row, list[list[int]]]:
    """The token sequences ``(ids, prompt length)`` of one example as a prefix tree (a trie): every
    distinct prefix is one node, so a prompt several sequences share, and the start two answers
    share, are computed once. Returns the row, laid out in depth-first preorder, and each
    sequence's path (the row index of its t-th token)."""
    children: list[dict[int, int]] = [{}]  # node 0 is a virtual root above the first tokens
    token, scored, paths = [-1], [False], []
    for ids, p in seqs:
        node, path = 0, []
        for t, tok in enumerate(ids):
            nxt = children[node].get(tok)
            if nxt is None:
                nxt = children[node][tok] = len(token)
                children.append({})
                token.append(tok)
                scored.append(False)
            scored[nxt] |= t >= p
            node = nxt
            path.append(nxt)
        paths.append(path)
    row, where = _Row(), {}
    stack = [(child, 0) for child in reversed(children[0].values())]
    while stack:  # preorder, children in insertion order (the order of ``seqs``)
        node, depth = stack.pop()
        if node < 0:  # the subtree of ~node is complete
            row.end[where[~node]] = len(row.ids)
            continue
        where[node] = len(row.ids)
        row.ids.append(token[node])
        row.depth.append(depth)
        row.end.append(0)
        row.scored.append(scored[node])
        stack.append((~node, depth))
        stack += [(child, depth + 1) for child in reversed(children[node].values())]
    return row, [[where[n] for n in path] for path in paths]


def pack(examples: list[PairExample], names: tuple[str, ...], pad_id: int, *, share_prompt: bool) -> PackedBatch:
    """Rows for one forward over sequences ``names`` of every example.

    Output slot ``k * len(examples) + b`` holds sequence ``names[k]`` of example ``b``.

    With ``share_prompt`` the sequences of one example go in one row as a prefix tree
    (``_prefix_tree``): the tokens several sequences begin with are computed once (the prompt of
    chosen and rejected; the chat header, the question and the template of SRPO's revision prompts;
    the start two answers share), each token at its position in its own sequences, attending to its
    ancestors and itself only (a 4D mask). Every hidden state thus sees exactly the context it has
    in an unshared row, and the last prompt token predicts the first answer token of every answer.
    Without it every sequence is its own right-padded row with a 2D mask (any attention kernel)."""
    rows, src, labels, slot, lengths = [], [], [], [], [0] * (len(names) * len(examples))
    for b, ex in enumerate(examples):
        seqs = [ex.sequence(name) for name in names]
        cut = [len(s.input_ids) - s.num_completion_tokens for s in seqs]
        if min(cut) < 1:  # the first answer token is predicted by the last prompt token
            raise ValueError(f"row {ex.row}: a sequence without prompt tokens cannot be scored")
        groups = [list(range(len(names)))] if share_prompt else [[k] for k in range(len(names))]
        for ks in groups:
            row, paths = _prefix_tree([(seqs[k].input_ids, cut[k]) for k in ks])
            for k, path in zip(ks, paths):
                out, ids = k * len(examples) + b, seqs[k].input_ids
                for t in range(cut[k], len(ids)):  # token t is predicted by the hidden state of token t - 1
                    src.append((len(rows), path[t - 1]))
                    labels.append(ids[t])
                    slot.append(out)
                lengths[out] = len(ids) - cut[k]
            rows.append(row)
    return _tensors(rows, src, labels, slot, lengths, pad_id, tree_mask=share_prompt)


def _tensors(rows: list[_Row], src, labels, slot, lengths, pad_id: int, *, tree_mask: bool) -> PackedBatch:
    """Right-padded [R, T] tensors of ``rows``; the 4D ancestor mask with ``tree_mask``, else 2D."""
    width = max(len(r.ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    end = torch.arange(width).repeat(len(rows), 1)  # padding: an empty subtree, never a visible key
    for r, row in enumerate(rows):
        n = len(row.ids)
        input_ids[r, :n], position_ids[r, :n], end[r, :n] = (torch.tensor(v) for v in (row.ids, row.depth, row.end))
    real = end > torch.arange(width)  # every node's subtree holds at least itself
    if tree_mask:
        q, k = torch.arange(width)[:, None], torch.arange(width)[None, :]
        # key k is visible from query q iff k is q or an ancestor of q: k <= q < end[k] (preorder)
        mask = (k <= q) & (q < end[:, None, :])  # [R, T, T]
        mask[:, :, 0] |= ~real  # a padding query sees the row's first token: no row of the mask is empty
        mask = mask[:, None]  # [R, 1, T, T]
    else:
        mask = real.long()  # [R, T]
    prompt = sum(len(r.ids) - sum(r.scored) for r in rows)
    flat = torch.tensor([r * width + t for r, t in src], dtype=torch.long)
    return PackedBatch(input_ids, position_ids, mask, flat, torch.tensor(labels, dtype=torch.long),
                       torch.tensor(slot, dtype=torch.long), len(lengths),
                       torch.tensor(lengths, dtype=torch.long), real, prompt)


# ------------------------------------------------- unshared [B, T] batches (kept for simple uses)
@dataclass
class SequenceBatch:
    """Right-padded sequences: input_ids, attention_mask, completion_mask, all [N, T]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def collate(seqs: list[Tokenized], pad_id: int) -> SequenceBatch:
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        attn[i, :n] = 1
        comp[i, :n] = torch.tensor(s.completion_mask)
    return SequenceBatch(ids, attn, comp)
