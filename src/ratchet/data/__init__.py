"""Data: built-in tasks, JSONL records, pair building and tokenisation. Knows nothing of training."""
