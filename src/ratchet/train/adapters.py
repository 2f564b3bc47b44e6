"""LoRA for the trainers: wrap a model with an adapter before training, merge it after.

One place for what both trainers (``train.offline`` on files of pairs, ``train.online`` on-policy)
and the loop need: ``add_lora`` wraps a model (or keeps training the adapter it already carries,
as a model loaded from an unmerged adapter directory does), ``save_merged`` replaces a saved
adapter directory by the full merged model, atomically. With an adapter the reference of a
round is the model with the adapter disabled (``train.reference``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def add_lora(model, *, r: int, alpha: int, dropout: float, target_modules, gradient_checkpointing: bool = False):
    """``model`` with a trainable LoRA adapter of rank ``r`` (Hu et al. 2021); ``r == 0`` returns the
    model as is. A model that already carries an adapter keeps it and trains it on."""
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if r <= 0 and not is_peft(model):
        return model
    if is_peft(model):
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        return model
    from peft import LoraConfig, get_peft_model

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
