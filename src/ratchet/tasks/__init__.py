"""Tasks: where a loop's prompts come from, how they split, how answers end, what judges them.

A ``Task`` (``tasks.base``) owns its rows (a prompt as chat messages, an optional reference
``answer``, optional ``tests``, and any extra fields a judge may read), its fixed train / held-out
split, the stop strings its answers end with, and the judge it is scored by unless a recipe names
another. Two are built in (``arithmetic``, ``humaneval``: ``tasks.builtin``); any JSONL, JSON, CSV
or Parquet file, a ``datasets.save_to_disk`` folder or a Hugging Face dataset is one too
(``tasks.files``). ``load_task`` picks one from flat arguments; ``loop.stages`` unpacks the
recipe's ``task`` section into them. Knows nothing of models or training.
"""

from ratchet.tasks.base import FIELDS, Task, TaskError
from ratchet.tasks.builtin import BUILTIN, builtin_task
from ratchet.tasks.files import FileTask

__all__ = ["BUILTIN", "FIELDS", "FileTask", "Task", "TaskError", "builtin_task", "load_task"]


def load_task(name: str | None = None, *, source: str | None = None, seed: int = 0, steps: int = 1,
              **file_options) -> Task:
    """A built-in task by ``name`` (``steps``: arithmetic's operations per problem), or a ``FileTask``
    over ``source`` (``file_options`` are its keyword arguments: fields, heldout_fraction,
    heldout_source, stop, subset, split, heldout_split, revision)."""
    if source is None:
        return builtin_task(name or "arithmetic", seed=seed, steps=steps)
    if steps != 1:
        raise TaskError(f"task.steps: only the built-in arithmetic task has steps; got {steps} with task.source")
    return FileTask(source, name=name, seed=seed, **file_options)
