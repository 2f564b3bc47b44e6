"""DSTC's test-writing prompts: the model writes unit tests for the code prompts it also solves.

DSTC (Liu et al. 2024, arXiv 2411.13611; docs/algorithms.md#dstc) samples, per prompt, code from
the ordinary prompt and tests from a test-writing prompt built here from a template (a data
file, ``string.Template`` syntax) with ``$prompt`` (the code to test: the task's signature and
docstring) and ``$entry_point`` (the function's name). Pure Python: this module builds messages
from a prompt row (its ``code`` field, as ``judge.code.CodeTask.to_record`` writes it) and knows
nothing of models, parsing or execution.
"""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path

TEMPLATES = {"write_tests": "write_tests.txt"}
"""Bundled test-writing templates (``src/ratchet/data/templates``), by name."""
PLACEHOLDERS = ("prompt", "entry_point")


def load_template(name_or_path: str | Path = "write_tests") -> string.Template:
    """A bundled template by name (``TEMPLATES``) or any file, using exactly ``$prompt`` and
    ``$entry_point`` (a literal ``$`` is ``$$``). One trailing newline of the file is dropped."""
    name = str(name_or_path)
    if name in TEMPLATES:
        text = resources.files("ratchet.data").joinpath("templates", TEMPLATES[name]).read_text()
    elif Path(name).is_file():
        text = Path(name).read_text()
    else:
        raise FileNotFoundError(f"test-writing template {name!r}: neither {list(TEMPLATES)} nor a file")
    template = string.Template(text.removesuffix("\n"))
    found = set(template.get_identifiers()) if template.is_valid() else None
    if found != set(PLACEHOLDERS):
        raise ValueError(f"test-writing template {name!r}: needs exactly $prompt and $entry_point "
                         f"(and $$ for a literal $), found {sorted(found) if found is not None else 'a stray $'}")
    return template


def writing_messages(row: dict, template: string.Template) -> list[dict]:
    """The test-writing prompt of a code prompt row: one user turn."""
    code = row.get("code")
    if not isinstance(code, dict) or not all(isinstance(code.get(k), str) for k in PLACEHOLDERS):
        raise KeyError(f"prompt {row.get('id', '?')!r}: writing tests needs row['code'] with string keys "
                       f"{list(PLACEHOLDERS)} (a code task such as humaneval)")
    return [{"role": "user", "content": template.substitute(prompt=code["prompt"], entry_point=code["entry_point"])}]
