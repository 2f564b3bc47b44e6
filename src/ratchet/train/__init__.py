"""The training loop: any objective in ``LOSSES`` from a pairs file, on one CPU or many GPUs.

``loop.train`` is the entry point (docs/training.md). ``batches`` validates, tokenises, plans
steps and packs rows; ``step`` maps an objective's tensor names onto sequences and runs one
micro-batch; ``reference`` precomputes reference log-probs once per dataset; ``checkpoint``
writes and reads training state atomically; ``metrics`` aggregates and logs per-step metrics.
"""
