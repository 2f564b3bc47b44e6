"""Tests of ratchet.losses (CPU, float64, fast)."""
