"""Where the loop's data-parallel stages run: in this process, or on a Ray cluster (``executor``).

With ``executor.name: ray`` the stages whose rows are independent (generate, evaluate's answers,
the temperature probe, self-score, judging) split their rows over Ray and merge the results in row
order, so they write the files a local run writes, byte for byte:

- sampling and log-probs go to ``executor.workers`` actors (``ray_worker.Replica``), each holding
  one replica of the model the stage uses, loaded from its path: the round's model directory
  (``round_<r>/train/model``) on storage every node sees, so weights need no sync of their own; an
  actor loads the next round's model when a call names it. Prompts are split into contiguous
  shards, one per actor; prompt i keeps the seed of its index in the whole stage
  (``CachedSampler.sample(..., first_index=offset)``). With ``sampler: vllm`` each actor holds
  a vLLM engine on its GPU instead (``executor.gpus_per_worker``), seeded per prompt the same way.
  Log-probs go by whole local batches (``Replica.logprob_batches``).
- judging goes to Ray tasks, a judge (and so a code sandbox) per task, one row per task for judges
  that run code and ``workers`` chunks of rows for the others; when the actors hold every CPU of the
  cluster (a small one) the idle actors take those calls instead, a judge per call all the same. A
  judge that is the policy itself (``llm`` with ``model: policy``) runs on the actors holding it.

Faults: actors are created with ``max_restarts`` and ``max_task_retries`` and tasks with
``max_retries``, so a worker that dies mid-stage is restarted (reloading its model) and its rows
computed again; the merged output does not change. A killed driver resumes through the stage
manifests as a local run does (``loop.manifest``).

- training (``RayExecutor.train``) stays in the driver, the actors' replicas freed for it, unless
  ``executor.train_workers`` asks for Ray Train workers: DDP through accelerate across the nodes,
  or FSDP / DeepSpeed from the accelerate config ``executor.train_config`` names.

Stages reach the executor in two ways: ``stage_model`` hands them, under ray, a ``Replicas``
where they take a model (``stages.open_sampler`` and ``stages.self_score`` dispatch on it), and
``stages.judge`` asks ``current_executor``; the loop's train stage asks ``current_executor().train``.
docs/scaling.md: how to run a loop on a cluster, and what was measured.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator

from ratchet.config import ConfigError, ExecutorConfig

MAX_RESTARTS = 3
"""How often Ray restarts a dead actor, retries a call on it or reruns a failed task before the stage fails."""
CODE_JUDGES = ("unit_tests", "dstc")
"""Judges that run model-written code: one Ray task (one sandbox) per row."""
CONNECT_TIMEOUT_S = 5.0
"""How long a ``HOST:PORT`` head may take to accept a TCP connection before the loop gives up."""
START_TIMEOUT_S = 120.0
"""How long the actors may take to start (a process each, no model yet) before the loop gives up:
longer means the cluster has no free room for them (other jobs hold its CPUs or GPUs)."""


class LocalExecutor:
    """Every stage in this process, on the model the ``ModelCache`` holds (the behaviour before Ray)."""

    distributed = False

    def model(self, models, path: str):
        return models.get(path)

    def train(self, *args, **kwargs) -> bool:
        """False: the train stage runs here (``RayExecutor.train`` says more)."""
        return False

    def close(self) -> None:
        pass


_active: list = [LocalExecutor()]


def current_executor():
    """The executor of the loop running now (``LocalExecutor`` outside ``using``)."""
    return _active[-1]


def stage_model(models, path: str):
    """(model, tokenizer) for a data-parallel stage: the loaded model locally, under ray a
    ``Replicas`` of ``path`` (and no tokenizer: the actors hold their own)."""
    return current_executor().model(models, path)


@contextlib.contextmanager
def using(cfg: ExecutorConfig, load_options: dict) -> Iterator:
    """Run the body with the executor ``cfg`` names; under ray the cluster is reached here, before
    any model loads, and a cluster that cannot be reached is a ``ConfigError`` (one line, exit 2)."""
    executor = RayExecutor(cfg, load_options) if cfg.name == "ray" else LocalExecutor()
    _active.append(executor)
    try:
        yield executor
    finally:
        _active.pop()
        executor.close()


def connect(cfg: ExecutorConfig) -> bool:
    """Join (or, with ``address: local``, start) the Ray cluster; True when this process started
    it (and so shuts it down). A process already connected (a test's cluster) is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    options = dict(include_dashboard=False, logging_level="ERROR", configure_logging=True)
    if cfg.address == "local":
        workers = max(cfg.workers, cfg.train_workers)
        ray.init(num_cpus=workers * cfg.cpus_per_worker, num_gpus=workers * cfg.gpus_per_worker or None, **options)
        return True
    if cfg.address != "auto":  # fail in seconds, not after Ray's own minute of retries
        host, _, port = cfg.address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise ConfigError(f"executor.address: no Ray head answers at {cfg.address} ({e})") from None
    try:
        with _native_stderr_quiet():  # Ray's C++ client logs each failed attempt to join there
            ray.init(address=cfg.address, **options)
    except (ConnectionError, RuntimeError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"executor.address: cannot join the Ray cluster at {cfg.address}: {first}") from None
    return False


@contextlib.contextmanager
def _native_stderr_quiet():
    """File descriptor 2 sent to /dev/null for the body (C++ logging bypasses Python's sys.stderr)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _fits(cfg: ExecutorConfig) -> None:
    """The cluster has room for every actor, and every training worker, at once (else they would
    wait for resources forever)."""
    import ray

    have = ray.cluster_resources()
    for what, n in (("workers", cfg.workers), ("train_workers", cfg.train_workers)):
        for key, per in (("CPU", cfg.cpus_per_worker), ("GPU", cfg.gpus_per_worker)):
            if n and per and have.get(key, 0) < n * per:
                raise ConfigError(f"executor.{what}: {n} workers x {per:g} {key} need {n * per:g} {key}s; the Ray "
                                  f"cluster has {have.get(key, 0):g}")


class RayExecutor:
    """The data-parallel stages on Ray actors and tasks (see the module docstring)."""

    distributed = True

    def __init__(self, cfg: ExecutorConfig, load_options: dict):
        self.cfg, self.load_options = cfg, dict(load_options)
        self.owns_cluster = connect(cfg)
        self.actors: list = []
        try:
            _fits(cfg)
        except ConfigError:
            self.close()
            raise

    def model(self, models, path: str):
        # a directory by its absolute path: workers run in other directories (and, across nodes, need
        # the run directory mounted at the same path); a model name is resolved by each worker alike
        return Replicas(self, os.path.abspath(path) if os.path.exists(path) else path), None

    def replicas(self) -> list:
        """The actors, started on first use; each loads the model a call names."""
        import ray

        from ratchet.loop.ray_worker import Replica

        if not self.actors:
            actor = ray.remote(Replica).options(num_cpus=self.cfg.cpus_per_worker, num_gpus=self.cfg.gpus_per_worker,
                                                max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
            self.actors = [actor.remote(self.load_options, self.cfg.cpus_per_worker) for _ in range(self.cfg.workers)]
            ready, _ = ray.wait([a.pid.remote() for a in self.actors], num_returns=len(self.actors),
                                timeout=START_TIMEOUT_S)
            if len(ready) < len(self.actors):  # else every stage would wait for resources forever
                free = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
                self._end_actors()
                raise ConfigError(f"executor.workers: {len(ready)} of {self.cfg.workers} Ray actors started in "
                                  f"{START_TIMEOUT_S:g} s; the cluster has {free} free")
        return self.actors

    def train(self, model: str, reference: str | None, anchor: str | None, pairs, out_dir, cfg, **options) -> bool:
        """With ``train_workers``: ``stages.train_model`` on that many Ray Train workers (``TorchTrainer``:
        it starts the process group, gloo on CPUs, NCCL on GPUs; accelerate finds it and runs DDP),
        each loading the models from their paths; True. Without: the actors free their replicas'
        memory (GPU memory the driver's training needs) and the driver trains; False. A failed
        worker restarts the group, which resumes from the stage's last checkpoint (``resume``)."""
        if not self.cfg.train_workers:
            if self.actors:
                gather([a.unload.remote() for a in self.actors])
            return False
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        from ratchet.loop.ray_worker import train_worker
        from ratchet.train.runtime import accelerate_env

        self._end_actors()  # their CPUs and GPUs go to the trainers (the next stage starts new actors)
        absolute = lambda p: p and (os.path.abspath(p) if os.path.exists(p) else p)  # noqa: E731
        config = {"model": absolute(model), "reference": absolute(reference), "anchor": absolute(anchor),
                  "pairs": os.path.abspath(pairs), "out_dir": os.path.abspath(out_dir), "cfg": cfg,
                  "options": options, "load_options": self.load_options, "threads": self.cfg.cpus_per_worker,
                  "accelerate_env": accelerate_env(self.cfg.train_config) if self.cfg.train_config else {}}
        gpu = self.cfg.gpus_per_worker > 0
        trainer = TorchTrainer(
            train_worker, train_loop_config=config, torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=self.cfg.train_workers, use_gpu=gpu, resources_per_worker={
                "CPU": self.cfg.cpus_per_worker, **({"GPU": self.cfg.gpus_per_worker} if gpu else {})}),
            run_config=RunConfig(name=f"ratchet-train-{os.getpid()}", failure_config=FailureConfig(
                max_failures=MAX_RESTARTS)))
        trainer.fit()
        return True

    def judge(self, rows: list[dict], cfg, *, policy, source: str) -> list[dict]:
        """``stages.judge_rows`` over ``rows`` in Ray, merged in row order."""
        import ray

        from ratchet.loop.ray_worker import judge_rows

        if cfg.name == "llm" and cfg.params.get("model", "policy") == "policy":  # the policy judges: its actors
            path, actors = policy()[0].path, self.replicas()
            refs = [a.judge.remote(path, rows[lo:hi], cfg, source) for a, (lo, hi) in zip(actors, split(len(rows),
                                                                                                     len(actors)))]
        else:
            chunks = split(len(rows), len(rows) if cfg.name in CODE_JUDGES else self.cfg.workers)
            if self.actors and ray.available_resources().get("CPU", 0) < 1:  # the idle actors hold every CPU
                refs = [self.actors[c % len(self.actors)].judge.remote(None, rows[lo:hi], cfg, source)
                        for c, (lo, hi) in enumerate(chunks)]
            else:
                task = ray.remote(judge_rows).options(num_cpus=1, max_retries=MAX_RESTARTS)
                refs = [task.remote(rows[lo:hi], cfg, source) for lo, hi in chunks]
        return [row for part in gather(refs) for row in part]

    def _end_actors(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            self._end_actors()
            if self.owns_cluster:
                ray.shutdown()


class Replicas:
    """Stands where a stage takes its model under ray: the model at ``path``, one replica per actor."""

    def __init__(self, executor: RayExecutor, path: str):
        self.executor, self.path = executor, path

    @property
    def name_or_path(self) -> str:
        return self.path

    def sampler(self, *, batch_size: int, progress, name: str = "cached", vllm: dict | None = None) -> "RaySampler":
        """The stage's sampler ``name`` (``cached``, or ``vllm`` with options ``vllm``) on every actor."""
        return RaySampler(self.executor.replicas(), self.path, batch_size, progress, name, vllm)

    def sequence_logprobs(self, items: list, *, batch_size: int) -> list[tuple[float, int]]:
        """``generate.score.sequence_logprobs`` of ``items``, its local batches dealt round-robin to
        the actors, each batch computed whole (so each float is the local stage's)."""
        actors = self.executor.replicas()
        batches = gather([actors[0].logprob_batches.remote(self.path, items, batch_size)])[0]
        mine = [batches[a::len(actors)] for a in range(len(actors))]
        refs = [actor.logprobs.remote(self.path, [[items[i] for i in b] for b in bs], batch_size)
                for actor, bs in zip(actors, mine) if bs]
        out = [(0.0, 0)] * len(items)  # an empty completion: 0.0 over 0 tokens, as sequence_logprobs says
        for bs, results in zip(mine, gather(refs)):
            for batch, got in zip(bs, results):
                for i, value in zip(batch, got):
                    out[i] = value
        return out


class RaySampler:
    """The ``Sampler`` protocol over actors: contiguous shards of the prompts, one per actor, each
    sampled by the actor's ``CachedSampler`` (or vLLM engine, ``name="vllm"``) with the stage's own
    prompt indices as seeds. ``close`` shuts the actors' vLLM engines down, as a local stage's
    sampler is closed, so the GPUs are free for the next stage."""

    def __init__(self, actors: list, path: str, batch_size: int, progress, name: str = "cached",
                 vllm: dict | None = None):
        self.actors, self.path, self.batch_size, self.progress = actors, path, batch_size, progress
        self.name, self.vllm = name, dict(vllm or {})

    def sample(self, prompts, params) -> list:
        shards = split(len(prompts), len(self.actors))
        refs = [actor.sample.remote(self.path, list(prompts[lo:hi]), params, lo, self.batch_size, self.name, self.vllm)
                for actor, (lo, hi) in zip(self.actors, shards)]
        desc = self.progress if isinstance(self.progress, str) else "generate"
        return [samples for part in gather(refs, desc=desc if self.progress else None) for samples in part]

    def close(self) -> None:
        if self.name == "vllm":
            gather([actor.close_engine.remote() for actor in self.actors])


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``n`` rows as at most ``parts`` contiguous [lo, hi) ranges of near-equal size, none empty."""
    parts = max(1, min(parts, n))
    bounds = [n * p // parts for p in range(parts + 1)]
    return list(zip(bounds, bounds[1:]))


def gather(refs: list, desc: str | None = None) -> list:
    """The results of ``refs`` in order; a worker's ``Failure`` (a user-input error) is raised here,
    as the local stage raises it. ``desc``: a progress bar over the refs as they finish."""
    import ray
    from tqdm.auto import tqdm

    from ratchet.loop.ray_worker import Failure

    if desc:
        with tqdm(total=len(refs), desc=desc, unit="shard") as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
    results = ray.get(refs)
    for r in results:
        if isinstance(r, Failure):
            raise (r.kind(r.message, r.index) if r.index is not None else r.kind(r.message))
    return results
