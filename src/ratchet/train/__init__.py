"""Training: any objective in ``LOSSES``, on one CPU or many GPUs.

``offline.train_offline`` trains on a file of rows (pairs, unpaired rows, SFT rows;
docs/training.md); ``online.train_online`` samples from the policy as it trains (RLOO, SCoRe).
``batches`` validates, tokenises, plans steps and packs rows; ``step`` maps an objective's tensor
names onto sequences and runs one micro-batch; ``reference`` precomputes reference log-probs once
per dataset; ``checkpoint`` writes and reads training state atomically; ``metrics`` aggregates and
logs per-step metrics; ``adapters`` adds and merges LoRA.
"""
