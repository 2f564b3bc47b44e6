"""A Bradley-Terry reward model trained on preference pairs (``ratchet train-rm``).

Owns training a scalar reward r(x, y) from a pairs file: a sequence-classification head with one
label on a base causal model, the loss -log sigmoid(r(x, y_chosen) - r(x, y_rejected)) (Stiennon et
al. 2020, "Learning to summarize from human feedback", arXiv 2009.01325, eq. 1; Ouyang et al. 2022,
InstructGPT, arXiv 2203.02155, eq. 1 with one comparison per prompt), and the held-out pairwise
accuracy. Its output directory's ``model`` is a checkpoint the ``reward_model`` judge loads
(``judge.reward_model``), and conversations are rendered exactly as that judge renders them
(``judge.reward_model.render_ids``). Plain torch on one device: no accelerate, no checkpoints.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from ratchet.data.records import RecordError, write_json
from ratchet.data.trl_format import read_pairs
from ratchet.judge.reward_model import RewardModelJudge, pad_right, render_ids


def split_pairs(rows: list[dict], heldout_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a seeded shuffle, then round(n * fraction) pairs held out (at least one
    when the fraction is > 0); both parts non-empty, or a ``RecordError`` saying how many pairs there are."""
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(rows) * heldout_fraction)) if heldout_fraction > 0 else 0
    if len(rows) - n_held < 1 or (heldout_fraction > 0 and n_held < 1):
        raise RecordError(f"train-rm: {len(rows)} pair(s) cannot be split into training and {heldout_fraction:.0%} "
                          "held out; give more pairs")
    return [rows[i] for i in order[n_held:]], [rows[i] for i in order[:n_held]]


def _conversations(row: dict) -> tuple[list[dict], list[dict]]:
    """(prompt + chosen, prompt + rejected) as chat messages."""
    return tuple(row["messages"] + [{"role": "assistant", "content": row[side]}] for side in ("chosen", "rejected"))


def _load(model_path: str, device: str, dtype: str, seed: int):
    """The base model with a one-label score head, its tokenizer padding with eos if it has no pad
    token. The head is drawn from a generator seeded with ``seed``, N(0, 1/(d_model + 1)) as in
    Stiennon et al. 2020 (appendix C.2), instead of from transformers' unseeded global draw."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ratchet.models import pick_device, pick_dtype, resolve_model

    path = resolve_model(model_path)
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=pick_dtype(dtype, device))
    model.config.pad_token_id = tokenizer.pad_token_id
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if not hasattr(head, "weight"):
        raise ValueError(f"{model_path}: the sequence classifier has no 'score' or 'classifier' linear head")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = torch.randn(head.weight.shape, generator=generator) / math.sqrt(head.weight.shape[1] + 1)
        head.weight.copy_(weight.to(head.weight.dtype))
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()
    return model.to(device), tokenizer


def _with_lora(model, lora: dict | None, seed: int):
    """``model`` with a LoRA adapter (Hu et al. 2021) if ``lora`` gives ``r`` > 0; peft's SEQ_CLS task
    keeps the new score head fully trainable (``modules_to_save``)."""
    if not lora or int(lora.get("r", 0)) <= 0:
        return model
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # the adapters' A matrices come from the global generator
    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=int(lora["r"]), lora_alpha=lora.get("alpha", 16),
                                            lora_dropout=lora.get("dropout", 0.0),
                                            target_modules=lora.get("target_modules", "all-linear")))


def pairwise_accuracy(judge: RewardModelJudge, rows: list[dict]) -> tuple[float | None, float | None]:
    """(accuracy, mean Bradley-Terry loss) on ``rows``: the fraction of pairs whose chosen answer
    scores above the rejected one (a tie counts 1/2); (None, None) without rows."""
    if not rows:
        return None, None
    chosen = judge.score([_conversations(r)[0] for r in rows])
    rejected = judge.score([_conversations(r)[1] for r in rows])
    acc = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(rows)
    loss = sum(math.log1p(math.exp(-(c - r))) if c - r > -30 else r - c for c, r in zip(chosen, rejected))
    return acc, loss / len(rows)


def _epoch(model, encoded: list[tuple[list[int], list[int]]], optimizer, *, batch_size: int, pad_id: int,
           rng: random.Random) -> list[float]:
    """One pass over the (chosen ids, rejected ids) pairs in a seeded order; the loss of each step."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    order = list(range(len(encoded)))
    rng.shuffle(order)
    losses = []
    for start in range(0, len(order), batch_size):
        batch = [encoded[i] for i in order[start:start + batch_size]]
        ids, mask = pad_right([c for c, _ in batch] + [r for _, r in batch], pad_id)  # chosen rows, then rejected
        rewards = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float()
        n = len(batch)
        loss = -F.logsigmoid(rewards[:n] - rewards[n:]).mean()  # Bradley-Terry (Stiennon et al. 2020, eq. 1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train-rm: the loss is {loss.item()} at step {len(losses) + 1}; lower the lr")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_reward_model(model_path: str, pairs_path: str | Path, out_dir: str | Path, *, lr: float = 1e-5,
                       epochs: int = 1, batch_size: int = 8, max_length: int = 512, heldout_fraction: float = 0.1,
                       lora: dict | None = None, seed: int = 0, device: str = "auto", dtype: str = "float32") -> dict:
    """Train a reward model from ``model_path`` on the pairs at ``pairs_path`` (ratchet's or TRL's
    formats, ``data.trl_format.read_pairs``); write ``out_dir/model`` (the model, merged if LoRA,
    and its tokenizer) and ``out_dir/rm_summary.json`` (pair counts, per-epoch train loss, held-out
    pairwise accuracy and loss before and after training); return the summary."""
    import torch

    if lr <= 0 or epochs < 1 or batch_size < 1 or max_length < 2:
        raise ValueError(f"expected lr > 0, epochs >= 1, batch_size >= 1, max_length >= 2; got {lr}, {epochs}, "
                         f"{batch_size}, {max_length}")
    rows = read_pairs(pairs_path)
    for n, row in enumerate(rows, start=1):
        if "chosen" not in row or "rejected" not in row:
            raise RecordError(f"{pairs_path}:{n}: not a preference pair (a reward model trains on 'chosen' and "
                              f"'rejected'; unpaired rows are for KTO)")
    if not rows:
        raise RecordError(f"{pairs_path}: no preference pairs")
    train, heldout = split_pairs(rows, heldout_fraction, seed)
    started = time.monotonic()
    model, tokenizer = _load(model_path, device, dtype, seed)
    judge = RewardModelJudge(model, tokenizer, batch_size=batch_size, max_length=max_length)
    initial = pairwise_accuracy(judge, heldout)
    model = _with_lora(model, lora, seed)
    encoded = [tuple(render_ids(tokenizer, conv, max_length) for conv in _conversations(r)) for r in train]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng, epoch_losses = random.Random(seed), []
    model.train()
    for _ in range(epochs):
        losses = _epoch(model, encoded, optimizer, batch_size=batch_size, pad_id=tokenizer.pad_token_id, rng=rng)
        epoch_losses.append(sum(losses) / len(losses))
    if hasattr(model, "merge_and_unload"):  # LoRA: a plain checkpoint the judge loads without peft
        model = model.merge_and_unload()
    final = pairwise_accuracy(RewardModelJudge(model, tokenizer, batch_size=batch_size, max_length=max_length),
                              heldout)
    out = Path(out_dir)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    summary = {"pairs": len(rows), "train_pairs": len(train), "heldout_pairs": len(heldout), "epochs": epochs,
               "steps": epochs * math.ceil(len(train) / batch_size), "train_loss": epoch_losses[-1],
               "train_loss_per_epoch": epoch_losses, "heldout_accuracy": final[0], "heldout_loss": final[1],
               "heldout_accuracy_initial": initial[0], "heldout_loss_initial": initial[1],
               "lr": lr, "batch_size": batch_size, "max_length": max_length, "lora": lora or None, "seed": seed,
               "seconds": round(time.monotonic() - started, 2)}
    write_json(out / "rm_summary.json", summary)
    return summary
