"""``ratchet export --model``: a run's model as a standard Hugging Face model directory, with a
model card that names the recipe, the rounds and the measured metrics; optionally pushed to the Hub.

``--model`` is a model directory, a run directory (its best model, from ``summary.json``) or
``<run>/best``. A LoRA adapter directory is merged into its base model first, so what is written
loads with ``AutoModelForCausalLM.from_pretrained`` alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from ratchet.models import ModelNotFoundError, load_model


def find_model(path: str | Path) -> tuple[Path, Path | None]:
    """(model directory, run directory or None) for a model dir, a run dir, or ``<run>/best``."""
    path = Path(path)
    run = path if (path / "summary.json").exists() else path.parent if path.name == "best" else None
    if run is not None:
        summary = run / "summary.json"
        if not summary.exists():
            raise ModelNotFoundError(f"{run} holds no summary.json: not a finished run directory")
        return Path(json.loads(summary.read_text())["best_model"]), run
    if not path.is_dir():
        raise ModelNotFoundError(f"model directory {path} does not exist")
    for parent in path.parents:  # runs/<name>/round_<r>/train/model
        if (parent / "summary.json").exists():
            return path, parent
    return path, None


def model_card(model_dir: Path, run: Path | None) -> str:
    """A README.md: where the model comes from and, for a run, its recipe and held-out metric per round."""
    lines = ["---", "library_name: transformers", "tags: [ratchet, preference-optimization]", "---", "",
             f"# {model_dir.name if run is None else run.name}", "",
             "Trained with [ratchet](https://pypi.org/project/ratchet/) from its own samples by preference "
             "optimization."]
    if run is None:
        return "\n".join(lines + [f"Exported from `{model_dir}`.", ""])
    summary = json.loads((run / "summary.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    metric = summary.get("metric", "accuracy")
    lines += ["", f"Base model: `{(config.get('model') or {}).get('path', '?')}`; objective "
              f"`{((config.get('train') or {}).get('loss') or {}).get('name', '?')}`; task "
              f"`{(config.get('task') or {}).get('source') or (config.get('task') or {}).get('name')}`; "
              f"judge `{(config.get('judge') or {}).get('name', '?')}`.", "",
              f"| round | held-out {metric} | kept |", "|---|---|---|"]
    for r in summary["rounds"]:
        value = r.get(metric)
        shown = "-" if value is None else f"{value:.3f}"
        lines.append(f"| {r['round']} | {shown} | {'yes' if r.get('kept') else 'no'} |")
    lines += ["", f"This model: `{model_dir}` ({summary.get('n_heldout', '?')} held-out prompts).", "",
              "## Recipe", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def export_model(model: str | Path, to: str | Path, *, push_to_hub: str | None = None) -> Path:
    """Write the model (merged if it is an adapter) and its card to ``to``, atomically; push if asked."""
    model_dir, run = find_model(model)
    to = Path(to)
    loaded, tokenizer = load_model(str(model_dir), device="cpu")
    if hasattr(loaded, "merge_and_unload"):
        loaded = loaded.merge_and_unload()
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{to.name}-", dir=to.parent))
    try:
        loaded.save_pretrained(tmp, safe_serialization=True)
        tokenizer.padding_side = "right"  # the usual default for whoever loads it next
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(model_dir, run))
        if to.exists():
            shutil.rmtree(to)
        os.replace(tmp, to)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, exist_ok=True)
        api.upload_folder(repo_id=push_to_hub, folder_path=str(to))
    return to
