"""Data: JSONL records and their checks, pair and SFT-row building, chat formatting, tokenisation,
TRL formats, the arithmetic generator. Knows nothing of training; tasks live in ``ratchet.tasks``."""
