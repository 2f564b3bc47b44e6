"""Training: any objective in ``LOSSES``, on one CPU or many GPUs.

``offline.train_offline`` trains on a file of rows (pairs, unpaired rows, SFT rows;
docs/training.md); ``online.train_online`` samples from the policy as it trains (RLOO, SCoRe).
``batches`` validates, tokenises, plans steps and packs rows; ``step`` maps what an objective
reads (``LossSpec.reads``) onto sequences and runs one micro-batch; ``reference`` precomputes reference log-probs once
per dataset; ``runtime`` is what both loops share around their micro-batches (accelerator,
optimizer, the update with its NaN/inf stop, trainer state and metrics rows); ``checkpoint``
writes and reads training state atomically, and the trained model; ``metrics`` aggregates and
logs per-step metrics; ``adapters`` adds and merges LoRA.
"""
