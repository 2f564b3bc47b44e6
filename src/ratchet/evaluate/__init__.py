"""Held-out evaluation: accuracy, pass@k, win-rate."""
