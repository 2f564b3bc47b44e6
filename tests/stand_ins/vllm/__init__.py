"""A stand-in for vLLM's offline API (``LLM``, ``SamplingParams``), for tests on machines without
vLLM or a GPU. Only ``tests`` put its folder (``tests/stand_ins``) on the import path.

``LLM.generate`` returns, for each request, ``n`` completions of token ids drawn from a
``random.Random`` seeded with the request's seed, the completion's index and the prompt's ids, so
the output depends on the seed a request is given and not on the other requests of the call.
Every engine built, every call and every shutdown is appended as a JSON line to the file
``RATCHET_STAND_IN_VLLM_LOG`` names (if set), with the process id, so a test can see which
process ran what."""

from __future__ import annotations

import json
import os
import random
from types import SimpleNamespace


def log(event: str, **fields) -> None:
    path = os.environ.get("RATCHET_STAND_IN_VLLM_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class LLM:
    def __init__(self, model: str, **kwargs):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=kwargs.get("max_model_len", 2048)))
        log("engine", model=model, kwargs=kwargs)

    def generate(self, requests: list[dict], sampling: list[SamplingParams], use_tqdm: bool = True) -> list:
        log("generate", seeds=[s.seed for s in sampling])
        return [SimpleNamespace(outputs=[self._completion(r["prompt_token_ids"], s, j) for j in range(s.n)])
                for r, s in zip(requests, sampling)]

    def _completion(self, prompt: list[int], params: SamplingParams, j: int):
        rng = random.Random(f"{params.seed}/{j}/{prompt}")
        ids = [rng.randrange(20, min(self.tokenizer.vocab_size, 200)) for _ in range(rng.randint(1, params.max_tokens))]
        reason = "length" if len(ids) == params.max_tokens else "stop"
        return SimpleNamespace(text=self.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
                               finish_reason=reason, stop_reason=None)
