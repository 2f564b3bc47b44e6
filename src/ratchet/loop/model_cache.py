"""``ModelCache``: the models a loop run loads, each once, with the recipe's ``model`` options.

A stage that has to run asks for its model here; a stage skipped on resume never loads one. The
cache holds the one model in use (a loop moves from one round's model to the next, never back).
``model_id`` is how stage manifests name a model, so a changed model reruns the stages that used it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ratchet.models import load_model


def model_id(path: str, load: dict | None = None) -> dict:
    """A cheap identity of a model as a stage ran it: the directory's path plus each file's size and
    mtime, and how it was loaded (``model`` options: dtype, device...), which change its outputs."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    identity = {"path": str(p), "files": {f.name: [f.stat().st_size, int(f.stat().st_mtime)] for f in files}}
    return identity | ({"load": load} if load else {})


class Loaded(NamedTuple):
    model: object
    tokenizer: object


class ModelCache:
    """Loads a model only when a stage actually has to run, and keeps the one in use."""

    def __init__(self, options: dict | None = None):
        self.path: str | None = None
        self.loaded: Loaded | None = None
        self.options = dict(options or {})

    def get(self, path: str) -> Loaded:
        if self.path != path:
            self.loaded, self.path = None, None  # the old model's memory is free before the new one loads
            self.loaded, self.path = Loaded(*load_model(path, **self.options)), path
        return self.loaded

    def load(self, path: str) -> Loaded:
        """Another model (a reference), loaded alongside the one in use."""
        return Loaded(*load_model(path, **self.options))

    def id(self, path: str) -> dict:
        """``model_id`` of ``path`` as this cache loads it, for stage manifests."""
        return model_id(path, self.options)

    def forget(self):
        """The model in memory was changed in place (trained): it no longer is ``path``'s."""
        self.path, self.loaded = None, None
