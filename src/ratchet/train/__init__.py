"""The training loop: any objective in ``LOSSES`` from a pairs file, on one CPU or many GPUs."""
