"""``VLLMSampler``: the ``Sampler`` protocol on vLLM, for machines with a GPU and ``vllm`` installed.

An optional extra (``pip install ratchet[vllm]``), never required: ``vllm`` is imported only when
a ``VLLMSampler`` is built. UNTESTED in ratchet's CI and on its development machines (no GPU):
it is written against vLLM's documented offline API (``LLM``, ``SamplingParams``, ``LLM.generate``
with token-id prompts, ``CompletionOutput.finish_reason``/``stop_reason``); only the conversions
to and from vLLM's types are unit-tested, with stand-in objects.

Same prompts and same results format as the transformers samplers: prompts are formatted with
ratchet's own chat templating (``prompt_ids``) and given to vLLM as token ids; stop strings are
kept in the text; token counts are counted as ``HFSampler`` counts them; completions end on the
same token ids (``generate.stops``). Each prompt gets its own seed derived from (seed, prompt
index), so its k completions draw the same random numbers whichever prompts share the call (a
shard of a stage passes ``first_index``, its place in the whole); their logits can still round
otherwise in another batch (vLLM's kernels are not batch-invariant by default).
vLLM holds the only copy of the model; the caller should not keep one loaded for sampling.
"""

from __future__ import annotations

import hashlib
from typing import Any, Collection, Sequence

from ratchet.generate.base import Messages, Sample, SamplingParams, encode_prompts
from ratchet.generate.hf import cut_at_stop
from ratchet.generate.stops import stop_token_ids


def is_available() -> bool:
    """True when ``vllm`` is importable and a CUDA GPU is present."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def prompt_seed(seed: int, prompt: int) -> int:
    """A 31-bit seed per prompt: no two (seed, prompt) pairs share a random stream by construction."""
    digest = hashlib.sha256(f"ratchet-vllm/{seed}/{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1


def vllm_kwargs(params: SamplingParams, prompt: int, stop_ids: Sequence[int] = ()) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for prompt number ``prompt``; ``stop_ids`` are
    the token ids that end a completion (``stop_token_ids``), given to vLLM as ``stop_token_ids``."""
    kwargs = dict(n=params.k, temperature=params.temperature, top_p=params.top_p,
                  max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
                  include_stop_str_in_output=True,  # ratchet keeps the stop string in the text
                  skip_special_tokens=True, seed=prompt_seed(params.seed, prompt))
    if stop_ids:
        kwargs["stop_token_ids"] = list(stop_ids)
    return kwargs


def to_sample(output, tokenizer, params: SamplingParams, stop_ids: Collection[int] | None = None) -> Sample:
    """A ``Sample`` from a vLLM ``CompletionOutput``; ``stop_ids`` default to ``stop_token_ids(tokenizer)``.

    vLLM reports finish_reason "stop" for EOS, stop token ids and stop strings; ``stop_reason`` is
    None for EOS, the token id for a stop token, the matched string for a stop string. A stop
    token is a special token, dropped from the text (``skip_special_tokens``) but kept in
    ``token_ids``, so it is not counted here. The text is cut again with ``cut_at_stop`` so it
    ends exactly as the transformers samplers' would."""
    text, stopped = cut_at_stop(output.text, params.stop)
    if stopped:
        return Sample(text=text, num_tokens=len(tokenizer(text, add_special_tokens=False)["input_ids"]),
                      finish_reason="stop")
    stop_ids = stop_token_ids(tokenizer) if stop_ids is None else stop_ids
    ids = [t for t in output.token_ids if t not in stop_ids]
    reason = "length" if output.finish_reason == "length" else "eos"
    return Sample(text=text, num_tokens=len(ids), finish_reason=reason)


class VLLMSampler:
    """k completions per prompt with vLLM's offline ``LLM`` (the model is loaded by vLLM).

    ``model``: a ratchet model name, a local model directory or a hub id. ``tokenizer``: the
    Hugging Face tokenizer used for chat templating (loaded from the model when omitted).
    ``llm_kwargs`` go to ``vllm.LLM`` (``gpu_memory_utilization``, ``dtype``, ...).
    """

    def __init__(self, model: str, tokenizer=None, *, max_context: int | None = None, progress: bool = True,
                 **llm_kwargs):
        try:
            import vllm
        except ImportError as err:
            raise ImportError("VLLMSampler needs vLLM and a GPU: pip install 'ratchet[vllm]'") from err
        from ratchet.models import resolve_model

        path = resolve_model(model)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer, self.progress = tokenizer, progress
        self.llm = vllm.LLM(model=path, **llm_kwargs)
        self.stop_ids = stop_token_ids(tokenizer, _generation_config(path))
        engine_config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.max_context = max_context or getattr(engine_config, "max_model_len", None)

    def close(self) -> None:
        """Shut the engine down and free its GPU memory (the loop's next stage, training, needs it);
        vLLM's documented teardown: model-parallel groups, the distributed environment, the cache."""
        import gc

        import torch

        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except ImportError:  # an older or newer layout: dropping the engine below still frees most of it
            pass
        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def sample(self, prompts: Sequence[Messages], params: SamplingParams, first_index: int = 0) -> list[list[Sample]]:
        """Return, for each prompt in order, ``params.k`` samples; prompt i is seeded as prompt
        ``first_index + i`` (``first_index``: the place of ``prompts[0]`` in a stage split over workers)."""
        import vllm

        if not prompts:
            return []
        requests = [{"prompt_token_ids": ids}
                    for ids in encode_prompts(self.tokenizer, prompts, params.max_new_tokens, self.max_context)]
        sampling = [vllm.SamplingParams(**vllm_kwargs(params, first_index + i, self.stop_ids))
                    for i in range(len(prompts))]
        outputs = self.llm.generate(requests, sampling, use_tqdm=self.progress)
        return [[to_sample(o, self.tokenizer, params, self.stop_ids) for o in out.outputs] for out in outputs]


def _generation_config(path: str):
    """The model's ``GenerationConfig`` (its EOS ids are stop ids), or None without one."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the tokenizer's ids are all there is
        return None
