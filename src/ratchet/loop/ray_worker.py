"""What runs inside a Ray worker process: ``Replica``, one copy of a round's model (an actor), and
``judge_rows``, a judge over some rows (a task). ``loop.executor`` places them; neither knows of Ray.

A replica computes exactly what the local stage computes for its rows:

- sampling (``CachedSampler``) draws completion j of prompt i from a generator seeded from
  (seed, i, j) (``generate.engine._generator``); a replica given prompts ``offset..`` of the stage
  seeds them with their index in the whole stage, so a shard draws the numbers the local stage draws.
  With ``sampler: vllm`` the replica is a vLLM engine on the actor's GPU instead (no transformers
  copy of the model), seeded the same way per prompt (its kernels may still round otherwise
  than one engine over the whole stage would);
- log-probs (``generate.score.sequence_logprobs``) are computed one local batch at a time: the
  driver sends each batch exactly as the local stage forms it (``logprob_batches``), so each
  forward sees the same rows, padding and order.

User-input errors (a prompt too long, a row the judge cannot read) come back as values
(``Failure``) for the driver to raise as the local stage would, not as Ray's wrapped tracebacks.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class Failure(NamedTuple):
    """A user-input error raised in a worker: its class, message and (prompts) row index."""

    kind: type
    message: str
    index: int | None = None


class Replica:
    """One replica of a model, run with ``threads`` torch threads (a thread count changes float
    sums: docs/loop.md, "Exact repeats"). Every call names its model's path (a round's model
    directory on shared storage, or a model name every node resolves alike), loaded as the recipe's
    ``model`` options say when it is not the one held: the process (torch and transformers imported)
    outlives a round, and a replica Ray restarts after a crash loads what the retried call names."""

    def __init__(self, load_options: dict, threads: int):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch

        torch.set_num_threads(threads)
        self.load_options, self.path = load_options, None
        self.model = self.tokenizer = None
        self.engine, self.engine_key = None, None  # a vLLM engine (``sampler: vllm``) and what it was built from

    def _use(self, path: str) -> None:
        from ratchet.models import load_model

        if path != self.path:
            self.unload()
            self.model, self.tokenizer = load_model(path, **self.load_options)
            self.model.eval()
            self.path = path

    def _vllm(self, path: str, options: dict):
        """The vLLM engine of ``path`` with ``generate.vllm`` ``options``, started on first use and
        kept for the stage's later calls (starting one takes a minute); the GPU is the engine's alone,
        so a held transformers model is freed first."""
        from ratchet.generate.vllm import VLLMSampler
        from ratchet.models import resolve_model

        key = (path, sorted(options.items()))
        if key != self.engine_key:
            self.unload()
            # the directory load_model would read (a hub id at the recipe's revision), as the local stage passes
            where = resolve_model(path, revision=self.load_options.get("revision"))
            self.engine = VLLMSampler(where, progress=False, **options)
            self.engine_key = key
        return self.engine

    def close_engine(self) -> None:
        """Shut the vLLM engine down, if one runs (its stage is over: the GPU memory goes to the next)."""
        if self.engine is not None:
            self.engine.close()
        self.engine = self.engine_key = None

    def unload(self) -> None:
        """Free the model's memory (the driver is about to train)."""
        import torch

        self.close_engine()
        self.model = self.tokenizer = self.path = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def pid(self) -> int:
        return os.getpid()

    def sample(self, path: str, prompts: list, params, offset: int, batch_size: int, sampler: str = "cached",
               vllm: dict | None = None):
        """``params.k`` samples of each prompt, prompt i seeded as prompt ``offset + i``, by ``sampler``:
        ``cached`` (``CachedSampler`` on the replica) or ``vllm`` (an engine with options ``vllm``)."""
        from ratchet.generate.base import PromptTooLongError
        from ratchet.generate.engine import CachedSampler

        if sampler == "vllm":
            engine = self._vllm(path, dict(vllm or {}))
        else:
            self._use(path)
            engine = CachedSampler(self.model, self.tokenizer, batch_size=batch_size, progress=False)
        try:
            return engine.sample(prompts, params, first_index=offset)
        except PromptTooLongError as e:
            index = None if e.index is None else offset + e.index
            return Failure(PromptTooLongError, str(e).replace(f"prompt {e.index} ", f"prompt {index} ", 1), index)

    def logprob_batches(self, path: str, items: list, batch_size: int) -> list[list[int]]:
        """The batches ``sequence_logprobs`` forms from ``items`` (``generate.score.logprob_batches``)."""
        from ratchet.generate.score import logprob_batches

        self._use(path)
        return logprob_batches(self.tokenizer, items, batch_size)

    def logprobs(self, path: str, batches: list[list], batch_size: int) -> list[list[tuple[float, int]]]:
        """``sequence_logprobs`` of each batch alone: one forward each, as the local stage runs it."""
        from ratchet.generate.score import sequence_logprobs

        self._use(path)
        return [sequence_logprobs(self.model, self.tokenizer, items, batch_size=batch_size) for items in batches]

    def judge(self, path: str | None, rows: list[dict], cfg, source: str):
        """``judge_rows`` here; with ``path``, the judge is that model (``llm`` with ``model: policy``)."""
        if path is None:
            return judge_rows(rows, cfg, source)
        self._use(path)
        return judge_rows(rows, cfg, source, policy=lambda: (self.model, self.tokenizer))


def train_worker(config: dict) -> None:
    """One Ray Train worker of the train stage (``RayExecutor.train``): the models loaded from their
    paths, then ``stages.train_model`` as the driver would call it; the process group Ray Train set
    up (RANK, WORLD_SIZE, MASTER_ADDR in the environment) is what accelerate's DDP runs on, or FSDP
    or DeepSpeed where ``executor.train_config`` names an accelerate config (its environment, as
    ``accelerate launch`` would set it, is set here before the trainer builds its ``Accelerator``)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.update(config.get("accelerate_env", {}))
    from pathlib import Path

    import torch

    from ratchet.loop import stages
    from ratchet.models import load_model

    torch.set_num_threads(config["threads"])
    load = lambda path: path and load_model(path, **config["load_options"])[0]  # noqa: E731
    model, tokenizer = load_model(config["model"], **config["load_options"])
    stages.train_model(model, tokenizer, Path(config["pairs"]), Path(config["out_dir"]), config["cfg"],
                       reference_model=load(config["reference"]), anchor_model=load(config["anchor"]),
                       **config["options"])


def judge_rows(rows: list[dict], cfg, source: str, policy=None):
    """``stages.judge_rows`` for a Ray task (one judge, so one code sandbox, per task)."""
    from ratchet.judge.base import JudgeInputError
    from ratchet.loop.stages import judge_rows as judge_here

    try:
        return judge_here(rows, cfg, policy=policy, source=source)
    except JudgeInputError as e:
        return Failure(JudgeInputError, str(e))
