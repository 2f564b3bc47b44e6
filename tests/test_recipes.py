"""Every shipped recipe loads and names only things that exist (a new file is picked up by the glob).

``recipes/*.yaml`` go through ``ratchet.config.load_config`` (strict: unknown keys, wrong types and
bad loss parameters are errors) and then each name is looked up where the loop will look it up;
``recipes/accelerate/*.yaml`` are accelerate config files, checked for their ``distributed_type``.
"""

from pathlib import Path

import pytest
import yaml

from ratchet.config import load_config
from ratchet.data.pairing import STRATEGIES
from ratchet.data.selection import SELECTIONS
from ratchet.judge import JUDGES
from ratchet.loop.stages import SAMPLERS, make_task
from ratchet.losses import LOSSES

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
RUN_RECIPES = sorted(RECIPES.glob("*.yaml"))
ACCELERATE = sorted((RECIPES / "accelerate").glob("*.yaml"))
DISTRIBUTED_TYPE = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED"}


def test_the_recipes_are_found():
    assert len(RUN_RECIPES) >= 3 and {p.stem for p in ACCELERATE} >= set(DISTRIBUTED_TYPE)


@pytest.mark.parametrize("path", RUN_RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_names_known_parts(path):
    cfg = load_config(path)
    assert cfg.name == path.stem, f"{path.name}: name {cfg.name!r} should be the file name (runs/<name>/)"
    assert cfg.train.loss.name in LOSSES
    LOSSES[cfg.train.loss.name].make_params(**cfg.train.loss.params)
    make_task(cfg.task).check()  # a data file's columns too
    assert cfg.judge.name in JUDGES or cfg.judge.name.startswith("python:"), f"{path.name}: {cfg.judge.name!r}"
    assert cfg.pair.strategy in STRATEGIES, f"{path.name}: unknown pair strategy {cfg.pair.strategy!r}"
    assert cfg.pair.selection in SELECTIONS, f"{path.name}: unknown SFT selection {cfg.pair.selection!r}"
    for where, sampler in (("generate", cfg.generate.sampler), ("evaluate", cfg.evaluate.sampler)):
        assert sampler in SAMPLERS, f"{path.name}: {where}.sampler {sampler!r} unknown"
    assert cfg.rounds >= 1 and cfg.task.train_prompts >= 1 and cfg.task.heldout_prompts >= 1


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_parses(path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and "distributed_type" in data, path.name
    if path.stem in DISTRIBUTED_TYPE:
        assert data["distributed_type"] == DISTRIBUTED_TYPE[path.stem]
    assert data["num_processes"] >= 1


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_RECIPES = sorted(EXAMPLES.glob("*/*.yaml"))


@pytest.mark.parametrize("path", EXAMPLE_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_recipe_loads_and_its_data_fits(path, monkeypatch, tmp_path):
    """The examples as documented: run from the repository root, the example's folder on PYTHONPATH
    (for its Python judge); a save_to_disk folder is made by the example's own script."""
    import importlib.util

    monkeypatch.chdir(EXAMPLES.parent)
    monkeypatch.syspath_prepend(str(path.parent))
    data = yaml.safe_load(path.read_text())
    source = Path(data["task"]["source"])
    if not source.exists() and (path.parent / "save_dataset.py").exists():
        spec = importlib.util.spec_from_file_location("save_dataset", path.parent / "save_dataset.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main(source)
    cfg = load_config(path)
    info = make_task(cfg.task).check()
    assert info["train_rows"] >= cfg.task.train_prompts and info["heldout_rows"] >= 50, info
    assert len(EXAMPLE_RECIPES) >= 3
