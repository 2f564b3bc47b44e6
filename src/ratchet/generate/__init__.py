"""Sampling k completions per prompt behind the ``Sampler`` protocol (see ``generate.base``)."""
