"""LoRA for the trainers: wrap a model with an adapter before training, merge it after.

One place for what both trainers (``train.offline`` on files of pairs, ``train.online`` on-policy)
and the loop need: ``add_lora`` wraps a model (or keeps training the adapter it already carries,
as a model loaded from an unmerged adapter directory does), ``save_merged`` replaces a saved
adapter directory by the full merged model, atomically, and ``lora_training`` does both around
one training stage (the loop's offline and on-policy stages). ``enable_checkpointing`` turns on
gradient (activation) checkpointing with whichever name the installed transformers has. With an
adapter the reference of a round is the model with the adapter disabled (``train.reference``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def is_peft(model) -> bool:
    """True if ``model`` is a peft model (it carries an adapter that can be disabled)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def enable_checkpointing(model) -> None:
    """Turn on gradient (activation) checkpointing, non-reentrant (it needs no input that requires
    grad, so it works under a frozen base with LoRA). transformers 5 calls it
    ``activation_checkpointing_enable`` and keeps ``gradient_checkpointing_enable`` as a deprecated
    alias (removed in v6); the older versions ``transformers>=4.56`` allows have only the old name."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})


def add_lora(model, *, r: int, alpha: int, dropout: float, target_modules, gradient_checkpointing: bool = False,
             seed: int = 0):
    """``model`` with a trainable LoRA adapter of rank ``r`` (Hu et al. 2021); ``r == 0`` returns the
    model as is. A model that already carries an adapter keeps it and trains it on. A new adapter's
    A matrices are drawn from torch's global generator, seeded here with ``seed`` (``train.seed``):
    unseeded, they depended on whatever drew from it before (a resumed loop, a second run in one process)."""
    if gradient_checkpointing:
        enable_checkpointing(model)
    if r <= 0 and not is_peft(model):
        return model
    if is_peft(model):
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        return model
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                            target_modules=target_modules))


def save_merged(model, tokenizer, target: Path) -> None:
    """Merge the trained adapter of ``model`` into its weights and write the full model over the
    adapter directory ``target`` (a crash leaves the adapter directory, never half a model)."""
    target = Path(target)
    merged = model.merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-merged-", dir=target.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        old = target.with_name(f".{target.name}-adapter")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def lora_training(model, tokenizer, lora, *, gradient_checkpointing: bool, model_dir: Path, seed: int = 0):
    """Around one training stage: yields ``model`` wrapped by ``add_lora`` with ``lora`` (the
    config's ``train.lora``: ``r``, ``alpha``, ``dropout``, ``target_modules``, ``merge``), and when
    the stage ends without an error and ``lora.merge`` is set, replaces the adapter saved in
    ``model_dir`` by the merged model, so the next stages load a plain model and sample at full speed.
    ``seed``: the new adapter's initialisation (``add_lora``)."""
    model = add_lora(model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules,
                     gradient_checkpointing=gradient_checkpointing, seed=seed)
    yield model
    if is_peft(model) and lora.merge:
        save_merged(model, tokenizer, Path(model_dir))
