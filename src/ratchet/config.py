"""Typed configuration: one dataclass per stage, loaded from a YAML recipe plus ``key=value`` overrides.

Strict by design: an unknown key, a value of the wrong type or a missing file is an error naming
the key (as a dotted path) or the file and what was expected. Every field carries an attribute
docstring, which ``ratchet config [RECIPE] [key=value ...]`` prints beside the key's type, default
and value (``describe``); ``ratchet config --list`` names the bundled recipes. The resolved config
a run saves (``save_config``) is plain YAML, without comments.
Components never receive these objects: ``cli`` and ``loop`` unpack them into flat arguments.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ratchet.data.correction import INSTRUCTION as CORRECTION_INSTRUCTION
from ratchet.typecheck import check_type


class ConfigError(ValueError):
    pass


SAMPLER_NAMES = ("cached", "hf", "vllm")
VLLM_OPTIONS = {"gpu_memory_utilization": float, "tensor_parallel_size": int, "dtype": str, "enforce_eager": bool,
                "max_model_len": int}
"""``generate.vllm`` keys: keyword arguments of ``vllm.LLM`` a recipe may set, with their types."""
"""The keys of ``ratchet.loop.stages.SAMPLERS``, named here because importing stages pulls in
torch; a test keeps the two equal (a test sampler must be added to both)."""


def _at_least(where: str, value: float, low: float) -> None:
    """Refuse ``value < low`` and, for floats, nan and inf (which would pass a plain comparison)."""
    if not (math.isfinite(value) and value >= low):
        kind = "" if isinstance(value, int) else "a finite number "
        raise ConfigError(f"{where}: expected {kind}>= {low}, got {value!r}")


def _check_sampler(where: str, name: str) -> None:
    if name not in SAMPLER_NAMES:
        raise ConfigError(f"{where}: unknown sampler {name!r}; expected one of {', '.join(SAMPLER_NAMES)}")


def _extra_params(fn: Any, fixed: tuple[str, ...]) -> dict[str, Any]:
    """The keyword-only parameters a pair strategy or selection takes beyond those its builder
    passes (``fixed``), each with its annotation (else its default's type; else Any)."""
    hints = typing.get_type_hints(fn)
    return {name: hints.get(name, Any if p.default is p.empty else type(p.default))
            for name, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY and name not in fixed}


def _simple(tp: Any) -> bool:
    """int/float/bool/str, optionally ``| None``: the types a YAML value is checked against."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(a in (int, float, bool, str, type(None)) for a in typing.get_args(tp))
    return tp in (int, float, bool, str)


def _check_pair_param(value: Any, hints: list[Any], where: str) -> Any:
    """``value`` as the first of ``hints`` it fits (a key may belong to the strategy and the selection)."""
    errors = []
    for tp in hints:
        if not _simple(tp):  # nothing we can check from YAML; the function checks it when called
            return value
        try:
            return _check_value(value, tp, where)
        except ConfigError as e:
            errors.append(e)
    raise errors[0]


def _check_pair_params(strategy: str, selection: str, labeller: str, params: dict) -> dict:
    """``params`` checked (and int -> float converted) against what the strategy, the selection or
    the KTO labeller takes: PairConfig does not know the objective, so a key of any is accepted
    (the pair stage hands each only its own keys)."""
    from ratchet.data.pairing import LABELLERS, STRATEGIES
    from ratchet.data.selection import SELECTIONS

    takes = {f"strategy {strategy!r}": _extra_params(STRATEGIES[strategy], ("max_pairs", "rng")),
             f"selection {selection!r}": _extra_params(SELECTIONS[selection].fn, ("max_rows", "rng")),
             f"labeller {labeller!r}": _extra_params(LABELLERS[labeller], ())}
    out = {}
    for key, value in params.items():
        hints = [names[key] for names in takes.values() if key in names]
        if not hints:
            known = "; ".join(f"{who} takes {', '.join(names) or 'none'}" for who, names in takes.items())
            raise ConfigError(f"pair.params.{key}: unknown parameter ({known})")
        out[key] = _check_pair_param(value, hints, f"pair.params.{key}")
    return out


@dataclass
class TaskConfig:
    def __post_init__(self) -> None:
        from ratchet.data.arithmetic import STEPS
        from ratchet.tasks.base import FIELDS  # pure Python: checked here so bad data fails before a model loads
        from ratchet.tasks.builtin import BUILTIN
        from ratchet.tasks.files import source_problem

        if self.source is None and self.name is not None and self.name not in BUILTIN:
            raise ConfigError(f"task.name: unknown built-in task {self.name!r}; expected one of {sorted(BUILTIN)}, "
                              "or give task.source (a .jsonl/.json/.csv/.parquet file, a save_to_disk folder, "
                              "or hf:<dataset>)")
        for key, value in (("source", self.source), ("heldout_source", self.heldout_source)):
            problem = value is not None and source_problem(value)
            if problem:
                raise ConfigError(f"task.{key}: {problem}")
        if self.source is None and (self.fields or self.heldout_source or self.stop or self.template):
            raise ConfigError("task.fields / template / heldout_source / stop: these describe a data file; "
                              "give task.source too")
        if self.template is not None:
            from ratchet.tasks.files import template_columns

            try:
                template_columns(self.template)
            except ValueError as e:
                raise ConfigError(f"task.template: {e}") from None
        for key, column in self.fields.items():
            if key not in FIELDS or not isinstance(column, str):
                raise ConfigError(f"task.fields.{key}: expected one of {list(FIELDS)} mapped to a column name, "
                                  f"got {key}: {column!r}")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"task.heldout_fraction: expected a fraction in (0, 1), got {self.heldout_fraction}")
        for key in ("train_prompts", "heldout_prompts"):
            if getattr(self, key) < 1:
                raise ConfigError(f"task.{key}: expected >= 1, got {getattr(self, key)}")
        if self.steps not in STEPS:
            raise ConfigError(f"task.steps: expected one of {list(STEPS)}, got {self.steps!r}")
        if self.steps != 1 and (self.source is not None or (self.name or "arithmetic") != "arithmetic"):
            raise ConfigError(f"task.steps: only the built-in arithmetic task has steps; got {self.steps} with "
                              f"{'task.source' if self.source is not None else 'task.name ' + repr(self.name)}")

    name: str | None = None
    """Built-in task: ``arithmetic`` (the default), or ``humaneval`` (the 164 HumanEval problems,
    halved once by a hash of the task id: at most 82 train and 82 held out). With ``source``, the
    label written into each row (default: the file's name)."""
    source: str | None = None
    """The task's data instead of a built-in task: a .jsonl, .json, .csv or .parquet file, a folder
    written by ``datasets``' ``save_to_disk``, or ``hf:<dataset>`` (the Hugging Face cache; offline
    with ``HF_HUB_OFFLINE=1``). See ``ratchet.tasks.files``."""
    fields: dict = field(default_factory=dict)
    """ratchet's names -> your columns, e.g. ``{prompt: question, answer: gold}``. Names: ``prompt``
    (one user message) or ``messages`` (a chat), ``system``, ``answer``, ``tests``, ``id``; unmapped
    names are looked up under their own name, and every other column is kept in the row."""
    template: str | None = None
    """The user message made from each row's columns (Python ``str.format``), e.g.
    ``"What is the capital of {country}? End with 'Answer: <city>'."``; instead of a prompt column."""
    heldout_fraction: float = 0.2
    """Share of the distinct prompts held out, chosen by a seeded hash of each prompt's content."""
    heldout_source: str | None = None
    """A separate held-out file or dataset (then every row of ``source`` is for training, less
    those whose prompt is also held out)."""
    subset: str | None = None
    """``hf:`` datasets: the configuration (``datasets.load_dataset``'s ``name``)."""
    split: str = "train"
    """The split of ``source`` (an ``hf:`` dataset or a ``save_to_disk`` folder holding splits)."""
    heldout_split: str | None = None
    """The split of ``heldout_source`` (default: ``split``)."""
    revision: str | None = None
    """``hf:`` datasets: the git revision (a tag, branch or commit) to read."""
    stop: list[str] = field(default_factory=list)
    """Stop strings of a data-file task's answers (besides the model's end of turn)."""
    train_prompts: int = 256
    """Training prompts drawn each round (a data file: the next ones, without repeats until all were used)."""
    heldout_prompts: int = 200
    """Held-out prompts for evaluation (disjoint from training prompts; a data file: at most its held-out split)."""
    seed: int = 0
    """Seed of the task: built-in generators (round r draws with seed + r), a file's split and draw order."""
    steps: int = 1
    """Built-in ``arithmetic``: operations per problem. 1: the original one-step mix (the same problems
    for a seed as before this key existed); 2 or 3: word problems chaining that many of + - x /."""


@dataclass
class GenerateConfig:
    def __post_init__(self) -> None:
        _check_sampler("generate.sampler", self.sampler)
        for key, value in self.vllm.items():
            if key not in VLLM_OPTIONS:
                raise ConfigError(f"generate.vllm.{key}: unknown option; expected some of {sorted(VLLM_OPTIONS)}")
            self.vllm[key] = _check_value(value, VLLM_OPTIONS[key], f"generate.vllm.{key}")
        for key in ("k", "max_new_tokens", "batch_size"):
            _at_least(f"generate.{key}", getattr(self, key), 1)
        _at_least("generate.temperature", self.temperature, 0)  # 0 is greedy
        if self.temperature == 0 and self.k > 1:
            raise ConfigError(f"generate.temperature: 0 (greedy) gives {self.k} identical completions per prompt; "
                              "use a temperature > 0, or generate.k=1")
        if not 0 < self.top_p <= 1:  # top_p 0 keeps no token
            raise ConfigError(f"generate.top_p: expected a probability in (0, 1], got {self.top_p!r}")
        if any(t <= 0 for t in self.temperature_grid):  # greedy would give k copies of one answer
            raise ConfigError(f"generate.temperature_grid: expected temperatures > 0, got {self.temperature_grid}")
        if self.tests < 0 or self.max_tests < 1:
            raise ConfigError(f"generate.tests / max_tests: expected >= 0 / >= 1, got {self.tests} / {self.max_tests}")
        if self.temperature_probe_prompts < 1:
            raise ConfigError(f"generate.temperature_probe_prompts: expected >= 1, "
                              f"got {self.temperature_probe_prompts}")

    sampler: str = "cached"
    """``cached`` (one prefill per prompt, finished rows leave the batch; ratchet's own decode
    loop), ``hf`` (transformers' ``generate``), or ``vllm`` (GPU, if installed)."""
    vllm: dict = field(default_factory=dict)
    """Options of the vLLM engine (``sampler: vllm``, and ``evaluate.sampler: vllm``): ``gpu_memory_utilization``,
    ``tensor_parallel_size``, ``dtype``, ``enforce_eager``, ``max_model_len``. The engine loads the
    round's model directory and is shut down when the stage ends, before training needs the GPU."""
    k: int = 8
    """Completions sampled per prompt."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 disables it)."""
    max_new_tokens: int = 64
    """Cap on generated tokens per completion."""
    batch_size: int = 64
    """Sequences decoded together (prompts per batch = batch_size // k)."""
    stop: list[str] | None = None
    """Stop strings (kept in the text); None means the task's own (arithmetic: a blank line)."""
    seed: int = 0
    """Sampling seed."""
    tests: int = 0
    """DSTC (Liu et al. 2024; ``docs/algorithms.md#dstc``): test-writing samples per code prompt, from
    ``tests_template``; their asserts, parsed into single tests, are stored in each completions row
    as ``tests`` (the samples as ``test_samples``) for the ``dstc`` judge. 0: no tests."""
    tests_template: str = "write_tests"
    """Test-writing prompt: a bundled name (``write_tests``) or a file using $prompt and $entry_point."""
    max_tests: int = 16
    """Cap on the parsed tests kept per prompt (first come), which bounds the pass matrix's runs."""
    temperature_grid: list[float] = field(default_factory=list)
    """B-STaR's temperature search (Zeng et al. 2024; docs/algorithms.md section 9.5): if set, each round first samples
    its first ``temperature_probe_prompts`` prompts with ``k`` samples at every temperature here,
    judges them, and samples the round at the one with the highest balance score (eq. 3; ties: the
    lowest), recorded in the round's metrics.json. Empty (default): always ``temperature``."""
    temperature_probe_prompts: int = 32
    """Prompts (the round's first n) sampled at each ``temperature_grid`` temperature."""


@dataclass
class JudgeConfig:
    def __post_init__(self) -> None:
        _check_metric("judge.metric", self.metric)
        if self.name is not None:
            _check_judge("judge", self.name, self.params)

    name: str | None = None
    """Judge that scores completions (``ratchet.judge.JUDGES``); None: the task's own (arithmetic:
    ``answer``, humaneval: ``unit_tests``, a data file: ``exact``). Verifiers: ``answer`` (a number),
    ``math`` (math-verify), ``exact``, ``regex``, ``choice``, ``unit_tests``, ``dstc``; scorers:
    ``reward_model``, ``llm`` (``model: policy``: the model judges itself); or a function of yours,
    ``python:package.module:function``."""
    params: dict = field(default_factory=dict)
    """The judge's parameters (its factory's keyword arguments), e.g. ``{match: contains}`` for
    ``exact``, ``{mode: pairwise, model: policy}`` for ``llm``, ``{model: <path>}`` for ``reward_model``."""
    metric: str = "auto"
    """Held-out metric: ``accuracy``, ``mean_score`` or ``win_rate`` (pairwise judges, against the
    reference answers, else the round-0 model's); ``auto``: the judge's own (verifiers: accuracy)."""


def _check_metric(where: str, metric: str) -> None:
    if metric not in ("auto", "accuracy", "mean_score", "win_rate"):
        raise ConfigError(f"{where}: expected auto, accuracy, mean_score or win_rate, got {metric!r}")


def _check_judge(where: str, name: str, params: dict) -> None:
    from ratchet.judge import check_judge  # no torch: judges import their models only when built

    try:
        check_judge(name, params)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


@dataclass
class PairConfig:
    def __post_init__(self) -> None:
        from ratchet.data.pairing import LABELLERS, STRATEGIES  # pure Python; checked here so a typo fails at load
        from ratchet.data.selection import SELECTIONS

        if self.selection not in SELECTIONS:
            raise ConfigError(f"pair.selection: unknown SFT selection {self.selection!r}; "
                              f"expected one of {sorted(SELECTIONS)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"pair.strategy: unknown pair strategy {self.strategy!r}; "
                              f"expected one of {sorted(STRATEGIES)}")
        if self.labeller not in LABELLERS:
            raise ConfigError(f"pair.labeller: unknown KTO labeller {self.labeller!r}; "
                              f"expected one of {sorted(LABELLERS)}")
        _at_least("pair.max_pairs_per_prompt", self.max_pairs_per_prompt, 1)
        self.params = _check_pair_params(self.strategy, self.selection, self.labeller, self.params)

    strategy: str = "correct_vs_incorrect"
    """How judged completions become pairs (see ``ratchet.data.pairing.STRATEGIES``)."""
    selection: str = "all_correct"
    """For objectives that train on single answers (``LOSSES[loss].data == "sft"``), which samples
    to fine-tune on instead of pairs (``ratchet.data.selection.SELECTIONS``): ``all_correct``
    (STaR / rejection-sampling fine-tuning), ``best_of_n`` (highest judge score), ``self_loglik``
    (SFT-sharpening: highest log-likelihood under the model itself)."""
    labeller: str = "correct"
    """For objectives on unpaired data (KTO), which samples are desirable
    (``ratchet.data.pairing.LABELLERS``): ``correct`` (the judge's verdict, else score > 0.5) or
    ``threshold`` (score >= ``pair.params.threshold``, default 0.5). With ``strategy: dstc`` the
    rows are DSTC's chosen (desirable) and rejected (undesirable) responses instead, so only the
    self-written tests decide."""
    max_pairs_per_prompt: int = 2
    """Cap on pairs (or unpaired / SFT rows) built from one prompt's completions."""
    seed: int = 0
    """Seed for choosing which pairs to keep when there are more than the cap (and for ties)."""
    drop_truncated: bool = True
    """Leave out completions cut by ``generate.max_new_tokens`` before pairing or selecting: a cut
    answer as the rejected one teaches the model to end its turn early, as the chosen one it is
    right by luck (``ratchet.data.pairing.drop_truncated`` has the measurement)."""
    params: dict = field(default_factory=dict)
    """Extra parameters of the strategy (e.g. ``margin`` for ``score_margin``, ``beta`` for ``rso``),
    of the selection for SFT objectives (e.g. ``length_normalized`` for ``self_loglik``), or of
    the labeller for KTO (``threshold``)."""


@dataclass
class LossConfig:
    name: str = "dpo"
    """Objective, a key of ``ratchet.losses.LOSSES``."""
    params: dict = field(default_factory=dict)
    """The objective's parameters (checked against its params dataclass); in YAML they sit beside
    ``name``: ``loss: {name: dpo, beta: 0.1}``."""


@dataclass
class AdapterConfig:
    def __post_init__(self) -> None:
        if self.r < 0 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f"train.lora: expected r >= 0, alpha > 0, 0 <= dropout < 1, got r={self.r}, "
                              f"alpha={self.alpha}, dropout={self.dropout}")

    r: int = 0
    """LoRA rank (Hu et al. 2021); 0 means full fine-tuning."""
    alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA branch."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get an adapter: ``all-linear`` (every linear layer but the output head) or names,
    e.g. ``[q_proj, v_proj]``."""
    merge: bool = True
    """After training, merge the adapter into a full model for the next stages (sampling at full
    speed); ``false`` keeps the adapter directory, loaded with PEFT on its base model, and the next
    round goes on training it. Either way the reference of a LoRA round is the adapter disabled."""


@dataclass
class TrainConfig:
    def __post_init__(self) -> None:
        if self.reference not in ("previous", "initial"):
            raise ConfigError(f"train.reference: expected 'previous' or 'initial', got {self.reference!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):  # lr 0 trains nothing, a negative one unlearns
            raise ConfigError(f"train.lr: expected a finite number > 0, got {self.lr!r}")
        for key in ("epochs", "batch_size", "grad_accum", "max_length"):
            _at_least(f"train.{key}", getattr(self, key), 1)
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"train.warmup_ratio: expected a fraction in [0, 1], got {self.warmup_ratio!r}")
        for key in ("weight_decay", "max_grad_norm", "checkpoint_every"):  # max_grad_norm / checkpoint_every 0: off
            _at_least(f"train.{key}", getattr(self, key), 0)

    loss: LossConfig = field(default_factory=LossConfig)
    """Objective and its parameters."""
    lr: float = 1e-5
    """Peak learning rate (AdamW)."""
    epochs: int = 1
    """Passes over the pairs."""
    batch_size: int = 8
    """Pairs per optimizer step (per process, before gradient accumulation)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_length: int = 256
    """Longest prompt + completion in tokens; longer completions are truncated (and counted)."""
    warmup_ratio: float = 0.1
    """Fraction of steps of linear warm-up; then linear decay to zero."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    lora: AdapterConfig = field(default_factory=lambda: AdapterConfig())
    """LoRA instead of full fine-tuning (``lora.r > 0``)."""
    reference: str = "previous"
    """Reference model of each round: ``previous`` (the model the round starts from, as in DNO,
    INPO and SELM) or ``initial`` (the starting model, fixed for all rounds)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    share_prompt: bool = True
    """Compute each prompt once per pair: an example's sequences packed as a prefix tree in one row
    with a 4D attention mask (``train.batches.pack``; log-probs equal to one row per sequence, tested
    to 1e-5). ``false``: one row per sequence; attention kernels without custom masks
    (flash-attention) get that anyway."""
    checkpoint_every: int = 50
    """Optimizer steps between checkpoints (``<out>/checkpoints``, removed when training finishes),
    from which ``ratchet train --resume`` and a restarted loop continue; 0 disables them."""
    seed: int = 0
    """Seed for data order and initialisation of adapters."""


@dataclass
class EvalConfig:
    def __post_init__(self) -> None:
        _check_sampler("evaluate.sampler", self.sampler)
        _at_least("evaluate.max_new_tokens", self.max_new_tokens, 1)
        _at_least("evaluate.batch_size", self.batch_size, 1)
        if self.gate_on not in GATE_ON:
            raise ConfigError(f"evaluate.gate_on: expected one of {', '.join(GATE_ON)}, got {self.gate_on!r}")

    sampler: str = "cached"
    """Sampler for the greedy held-out answers (see ``generate.sampler``)."""
    max_new_tokens: int = 96
    """Cap on generated tokens of each greedy held-out answer."""
    batch_size: int = 64
    """Held-out prompts decoded together."""
    judge: str | None = None
    """Judge of the held-out answers; None: the training judge (``judge.name``). DSTC trains on
    the model's own tests and evaluates with the real ones (``unit_tests``); a self-rewarding run
    trains on its own ratings and is evaluated by the task's verifier."""
    judge_params: dict = field(default_factory=dict)
    """Parameters of ``judge`` (as ``judge.params``)."""
    metric: str = "auto"
    """Held-out metric of ``judge`` (as ``judge.metric``)."""
    gate_on: str = "draft"
    """Which held-out number the gate compares when ``revise.revisions`` > 0 (each round's answers
    are then revised that many times): ``draft`` (revision 0, the plain answer), ``best_revision``
    (the revision step with the best metric in this round: optimistic, it is picked on the held-out
    set) or ``last_revision`` (revision N: the model as deployed with N self-revisions). With no
    revisions every choice is the draft."""


GATE_ON = ("draft", "best_revision", "last_revision")
"""The values of ``evaluate.gate_on``."""


@dataclass
class ReviseConfig:
    def __post_init__(self) -> None:
        if self.revisions < 0:
            raise ConfigError(f"revise.revisions: expected >= 0, got {self.revisions}")
        if self.train_drafts < 0:
            raise ConfigError(f"revise.train_drafts: expected >= 0, got {self.train_drafts}")

    revisions: int = 0
    """Revision steps after the draft (SRPO, Choi et al. 2024). ``ratchet revise``, ``ratchet
    evaluate``, ``compare-revisions`` and the loop's held-out evaluation (every round, round 0 too)
    report every step; ``evaluate.gate_on`` says which one the gate reads. 0: the draft only."""
    template: str = "revision"
    """Revision prompt: a bundled name (``revision``) or a file using $prompt and $draft. Training
    (SRPO's revise_* sequences) and revising read this one template."""
    train_drafts: int = 0
    """Objectives on revision data (SRPO, PIT): the loop also revises the first ``train_drafts``
    distinct samples of each training prompt once with the round's model (generate's sampling),
    judges the revisions, and adds a pair (draft, its revision) wherever the judge tells them apart,
    the better one chosen (an improved revision over its draft, a kept draft over a revision that
    broke it; ``data.revision.draft_revision_pairs``). 0: off, pairs from the samples only."""


@dataclass
class OnlineConfig:
    """On-policy objectives (``LOSSES[name].data`` ``online``: RLOO; ``two_turn``: SCoRe) train on the
    round's prompts directly, with no generate/judge/pair stages: each optimizer step takes
    ``train.batch_size * train.grad_accum`` prompts, samples ``generate.k`` completions of each from
    the current policy (``generate``'s sampler, temperature, top_p, max_new_tokens, stop) and
    rewards them, so a round of ``task.train_prompts`` prompts draws train_prompts x k samples, as
    an offline round does (``ratchet.loop.online_round``)."""

    def __post_init__(self) -> None:
        if self.reward not in ("judge", "self_loglik", "win_rate"):
            raise ConfigError(f"online.reward: expected 'judge', 'self_loglik' or 'win_rate', got {self.reward!r}")
        if self.stage_one_rounds < 0:
            raise ConfigError(f"online.stage_one_rounds: expected >= 0, got {self.stage_one_rounds}")
        if not self.correction_instruction.strip():
            raise ConfigError("online.correction_instruction: expected a non-empty instruction")

    reward: str = "judge"
    """``judge``: the ``judge`` section's score (``answer``: 1.0 for a correct final answer);
    ``self_loglik``: the sample's log-likelihood under the round's reference model, Sharpening's
    self-reward log pi_base(y|x) (Huang et al. 2024); the latter reads no ground truth; ``win_rate``:
    SPO (Swamy et al. 2024, arXiv 2401.04056): each sample's win rate against the prompt's other
    k - 1 samples under the ``judge`` (a verifier or score: 1 win, 1/2 tie, 0 loss; a pairwise
    ``llm`` judge: its comparisons), so the reward is a preference, not a score's scale."""
    length_normalized: bool = True
    """With ``self_loglik``: the log-likelihood per completion token, so an answer is not preferred
    for being short."""
    correction_instruction: str = CORRECTION_INSTRUCTION
    """SCoRe: the user turn between attempt 1 and attempt 2, in training and evaluation (default: the
    paper's MATH instruction, first two sentences)."""
    stage_one_rounds: int = 1
    """SCoRe: rounds 1..n train Stage I (reward on attempt 2, attempt 1 held to the reference by
    beta2), later rounds Stage II (both attempts rewarded, bonus alpha * (r2 - r1)); the loop sets
    the objective's ``stage`` parameter from it."""


@dataclass
class ModelConfig:
    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(f"model.dtype: expected auto, bfloat16, float16 or float32, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"model.device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")

    path: str = "smollm2-135m"
    """Known model name (``ratchet models``), local model directory, or hub id ``org/name`` (from the
    Hugging Face cache; downloaded when the hub is reachable). In a recipe, ``model: <path>`` is short
    for ``model: {path: <path>}``."""
    dtype: str = "auto"
    """Weights' dtype in every stage: ``auto`` (bfloat16 on a GPU that supports it, else float32),
    ``bfloat16``, ``float16`` or ``float32``."""
    device: str = "auto"
    """Where every stage runs its models: ``auto`` (the first GPU if any, else the CPU), ``cpu``,
    ``cuda`` or ``cuda:N``."""
    revision: str | None = None
    """Hub models: the git revision (a tag, branch or commit)."""
    attn_implementation: str | None = None
    """transformers' attention kernel, e.g. ``sdpa``, ``flash_attention_2``, ``eager``; None: its default."""
    trust_remote_code: bool = False
    """Run a hub model's own modelling code (only for models you trust)."""

    def load_options(self) -> dict:
        """Keyword arguments of ``ratchet.models.load_model`` besides the path."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "path"}


@dataclass
class LogConfig:
    def __post_init__(self) -> None:
        from ratchet.loop.trackers import TRACKERS  # pure Python: the names only

        unknown = [t for t in self.report_to if t not in TRACKERS]
        if unknown:
            raise ConfigError(f"log.report_to: unknown tracker(s) {unknown}; expected some of {list(TRACKERS)}")

    report_to: list[str] = field(default_factory=list)
    """Experiment trackers (accelerate's): ``tensorboard`` (files in ``<run>/logs`` and each round's
    ``train/``; offline), ``wandb``, ``mlflow``, ``trackio``... Training metrics per step, the loop's
    metrics per round (held-out metric, pass@k, B-STaR numbers, pairs kept, stage seconds)."""


GATE_RULES = ("no_regression", "significant_gain")
"""The gate's rules (``gate.rule``); ``ratchet.loop.gate`` applies them."""


@dataclass
class GateConfig:
    """Whether a round's model is kept (the next round starts from it) or rolled back, from its
    held-out metric against the best round so far on the same held-out problems (``ratchet.loop.gate``)."""

    def __post_init__(self) -> None:
        if self.rule not in GATE_RULES:
            raise ConfigError(f"gate.rule: expected one of {', '.join(GATE_RULES)}, got {self.rule!r}")
        if not (math.isfinite(self.confidence) and 0 < self.confidence < 1):
            raise ConfigError(f"gate.confidence: expected a probability in (0, 1), e.g. 0.95, got {self.confidence!r}")
        _at_least("gate.min_delta", self.min_delta, 0)
        _at_least("gate.tolerance", self.tolerance, 0)

    rule: str = "no_regression"
    """``no_regression``: keep the round if its metric >= the best so far - ``tolerance`` (the gate
    before this section existed); ``significant_gain``: keep it only if it beats the best round by
    at least ``min_delta`` and a paired one-sided test on the same held-out problems says so at
    ``confidence`` (exact McNemar test for accuracy, paired bootstrap for mean scores and win rates).
    Either way the round's delta, p-value and decision are recorded."""
    confidence: float = 0.95
    """``significant_gain``: the test's confidence; the gain must have a one-sided p-value <= 1 - confidence."""
    min_delta: float = 0.0
    """``significant_gain``: the smallest gain in the metric (e.g. 0.02 accuracy) worth keeping a round for."""
    tolerance: float = 0.0
    """``no_regression``: how far below the best so far a round may fall and still be kept (also
    settable as the older top-level ``gate_tolerance``)."""


EXECUTORS = ("local", "ray")
"""Where the data-parallel stages run (``executor.name``); ``ratchet.loop.executor`` runs them."""


@dataclass
class ExecutorConfig:
    """Where the loop's data-parallel stages run (``ratchet.loop.executor``, docs/scaling.md):
    ``local`` in this process, ``ray`` split row-wise over Ray actors that each hold one replica of
    the round's model, read from the round directory (shared storage), merged in row order into
    the same files a local run writes. Checked here; the cluster is reached when the loop starts."""

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ConfigError(f"executor.name: expected one of {', '.join(EXECUTORS)}, got {self.name!r}")
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        if self.address not in ("auto", "local") and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"executor.address: expected auto, local or HOST:PORT (a Ray head), got {self.address!r}")
        _at_least("executor.workers", self.workers, 1)
        _at_least("executor.cpus_per_worker", self.cpus_per_worker, 1)
        _at_least("executor.gpus_per_worker", self.gpus_per_worker, 0)
        _at_least("executor.train_workers", self.train_workers, 0)
        if self.train_config is not None:
            if not self.train_workers:
                raise ConfigError("executor.train_config: it configures the Ray Train workers; set executor.train_workers "
                                  "too (for training in this process, run it under accelerate launch --config_file)")
            from ratchet.train.runtime import accelerate_env

            try:
                accelerate_env(self.train_config)
            except ValueError as e:
                raise ConfigError(f"executor.train_config: {e}") from None
        if self.name == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ConfigError("executor.name: ray needs the optional extra: pip install 'ratchet[ray]'")

    name: str = "local"
    """``local``: every stage in this process (as before this section existed); ``ray``: generate,
    evaluate, self-score, the temperature probe and judging split over ``workers`` Ray actors."""
    address: str = "auto"
    """The Ray cluster: ``auto`` (the one ``ray start`` runs on this node), ``local`` (start one
    inside this process, on this machine), or ``HOST:PORT`` of a head node (``ray://HOST:PORT``
    for Ray Client). Unreachable: the loop stops at once, before any model loads."""
    workers: int = 2
    """Ray actors, each holding one model replica (one per GPU on a GPU cluster)."""
    cpus_per_worker: int = 1
    """CPUs reserved per actor, and its torch thread count (outputs repeat only at one thread count)."""
    gpus_per_worker: float = 0.0
    """GPUs reserved per actor (1 for one replica per GPU; 0 on CPU-only clusters)."""
    train_workers: int = 0
    """0: the train stage runs in the loop's own process, as without Ray. N: on N Ray Train workers
    (``TorchTrainer``), DDP through accelerate, each with ``cpus_per_worker`` CPUs and
    ``gpus_per_worker`` GPUs, across the cluster's nodes."""
    train_config: str | None = None
    """An accelerate config file (``accelerate config`` writes one; ``recipes/accelerate/fsdp.yaml``,
    ``deepspeed.yaml``): the Ray Train workers train with what ``accelerate launch --config_file``
    would set up (FSDP, DeepSpeed, mixed precision) instead of DDP; Ray Train still places the
    processes. Read on the driver when the recipe loads; the workers need no copy."""


SEEDED_SECTIONS = ("task", "generate", "pair", "train")
"""The sections with a ``seed`` that the top-level ``seed`` sets (``section_seed``)."""


def section_seed(seed: int, section: str) -> int:
    """A section's seed derived from the run's ``seed``: 31 bits of sha256("ratchet-seed/<seed>/<section>"),
    so the sections draw unrelated streams (seed + offset would make run S's train stream run S+1's
    generate stream) and every consumer (``random``, numpy, torch) accepts it."""
    import hashlib

    digest = hashlib.sha256(f"ratchet-seed/{seed}/{section}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1


def _derive_seeds(data: dict) -> dict:
    """``data`` (a recipe) with each seeded section's ``seed`` derived from the top-level ``seed``
    where the recipe does not set that section's seed itself (an explicit section seed wins)."""
    seed = _check_value(data["seed"], int, "seed")
    out = dict(data)
    for section in SEEDED_SECTIONS:
        part = out.get(section)
        if part is None or (isinstance(part, dict) and "seed" not in part):
            out[section] = {**(part or {}), "seed": section_seed(seed, section)}
    return out


@dataclass
class RunConfig:
    name: str = "demo"
    """Run name; files go to ``<runs_dir>/<name>/``."""
    runs_dir: str = "runs"
    """Directory holding all runs."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model every stage starts from, and how it is loaded (see ``ModelConfig``)."""
    rounds: int = 1
    """Self-improvement rounds."""
    seed: int | None = None
    """One seed for every random choice of the run: when set, ``task.seed`` (prompts), ``generate.seed``
    (sampling), ``pair.seed`` (which pairs are kept) and ``train.seed`` (data order, init of LoRA
    adapters) are each derived from it (``section_seed``: a hash of seed and section name), except
    a section seed the recipe or an override sets itself, which wins. None: each section's own seed."""
    gate: GateConfig = field(default_factory=GateConfig)
    """Which rounds are kept (see ``GateConfig``)."""
    gate_tolerance: float = 0.0
    """Deprecated spelling of ``gate.tolerance`` (kept so older recipes load): a round is kept if its
    held-out metric >= best so far - gate_tolerance. Setting both to different values is an error."""
    task: TaskConfig = field(default_factory=TaskConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pair: PairConfig = field(default_factory=PairConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    revise: ReviseConfig = field(default_factory=ReviseConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    log: LogConfig = field(default_factory=LogConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where the data-parallel stages run: this process or a Ray cluster (see ``ExecutorConfig``)."""

    def __post_init__(self) -> None:
        """Check the counts, fill in the task's default judge, then check the judges against it."""
        _at_least("rounds", self.rounds, 1)
        _at_least("gate_tolerance", self.gate_tolerance, 0)
        if self.gate_tolerance and self.gate.tolerance and self.gate_tolerance != self.gate.tolerance:
            raise ConfigError(f"gate_tolerance: {self.gate_tolerance} differs from gate.tolerance "
                              f"{self.gate.tolerance}; set only gate.tolerance (gate_tolerance is its older name)")
        if self.gate_tolerance != self.gate.tolerance:  # one value under both names, so a saved config reloads
            tolerance = self.gate_tolerance or self.gate.tolerance
            self.gate, self.gate_tolerance = dataclasses.replace(self.gate, tolerance=tolerance), tolerance
        if self.judge.name is None:
            from ratchet.tasks.builtin import BUILTIN

            default = BUILTIN[self.task.name or "arithmetic"]["default_judge"] if self.task.source is None else "exact"
            self.judge = dataclasses.replace(self.judge, name=default)
        if self.evaluate.judge is not None:
            _check_judge("evaluate.judge", self.evaluate.judge, self.evaluate.judge_params)
            _check_metric("evaluate.metric", self.evaluate.metric)
        elif self.evaluate.judge_params:
            raise ConfigError("evaluate.judge_params: set evaluate.judge too (else the training judge's params apply)")
        from ratchet.losses import LOSSES  # pure registry; imports nothing of ours

        if self.revise.train_drafts and LOSSES[self.train.loss.name].data != "revision":
            raise ConfigError(f"revise.train_drafts: revision pairs train objectives on revision data (srpo, pit), "
                              f"not {self.train.loss.name!r}; set revise.train_drafts: 0")
        if self.executor.name == "ray":
            self._check_ray_samplers()

    def _check_ray_samplers(self) -> None:
        """Under ray, a stage's sampler runs on every actor: ``cached`` (its per-sample seeds make
        shards exact) or ``vllm`` (one engine per actor, on the actor's own GPUs)."""
        executor, tensor_parallel = self.executor, self.generate.vllm.get("tensor_parallel_size", 1)
        for where, sampler in (("generate.sampler", self.generate.sampler),
                               ("evaluate.sampler", self.evaluate.sampler)):
            if sampler not in ("cached", "vllm"):  # hf draws per batch: a shard could not draw what the whole draws
                raise ConfigError(f"{where}: executor.name: ray shards sampling with the cached sampler or vllm "
                                  f"(one engine per GPU actor), got {sampler!r}")
            # a whole GPU per engine at least (a fraction fails: tensor_parallel_size is at least 1)
            if sampler == "vllm" and (executor.gpus_per_worker <= 0 or executor.gpus_per_worker < tensor_parallel):
                raise ConfigError(f"{where}: vllm on Ray runs one engine per actor on the actor's GPUs: set "
                                  f"executor.gpus_per_worker (> 0, and at least generate.vllm.tensor_parallel_size "
                                  f"{tensor_parallel}), got {executor.gpus_per_worker:g}")

    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


# ---------------------------------------------------------------------------------------------
# Loading


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise a ConfigError naming ``where``."""
    try:
        return check_type(value, tp)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def _build_loss(data: Any, where: str) -> LossConfig:
    if isinstance(data, LossConfig):
        return data
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping like {{name: dpo, beta: 0.1}}, got {data!r}")
    from ratchet.losses import LOSSES  # config checks loss params; losses import nothing of ours
    from ratchet.losses._core import ParamError

    params = dict(data)
    name = params.pop("name", LossConfig.name)
    params.update(params.pop("params", None) or {})
    if name not in LOSSES:
        raise ConfigError(f"{where}.name: unknown objective {name!r}; expected one of {sorted(LOSSES)}")
    try:
        made = LOSSES[name].make_params(**params)
    except ParamError as e:  # a wrong type: name the dotted key, as the other sections do
        raise ConfigError(f"{where}.{e.param}: {e.problem}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    # keep the checked values (3e-6 read as a string by YAML 1.1 is saved as a float)
    return LossConfig(name=name, params={key: getattr(made, key) for key in params})


def build(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, strictly."""
    if cls is LossConfig:
        return _build_loss(data, where.rstrip("."))
    if cls is ModelConfig and isinstance(data, str):
        data = {"path": data}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    if cls is RunConfig and data.get("seed") is not None:
        data = _derive_seeds(data)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{where}{key}: unknown key; expected one of {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value, f"{where}{key}.")
        else:
            kwargs[key] = _check_value(value, tp, f"{where}{key}")
    return cls(**kwargs)


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=1e-5")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if part == "model" and isinstance(node.get(part), str):  # model: <path>, then model.dtype=...
            node[part] = {"path": node[part]}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = value


RECIPES = Path(__file__).with_name("recipes")
"""The bundled recipes (``recipes/`` in a checkout links here), usable by name: ``ratchet loop arithmetic-dpo``."""


def bundled_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def recipe_path(path: str | Path) -> Path:
    """A recipe file, or a bundled recipe's name (with or without ``.yaml``)."""
    p = Path(path)
    if not p.is_file() and p.parent == Path(".") and (RECIPES / f"{p.stem}.yaml").is_file():
        return RECIPES / f"{p.stem}.yaml"
    return p


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls: type = RunConfig) -> Any:
    """Load ``cls`` from a YAML file or bundled recipe name (optional) and ``key=value`` overrides (dotted keys)."""
    data: dict = {}
    if path is not None:
        p = recipe_path(path)
        if not p.is_file():
            raise ConfigError(f"recipe file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"recipe file {p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"recipe file {p}: expected a mapping at the top level")
    for item in overrides:
        _apply_override(data, item)
    return build(cls, data)


def to_dict(cfg: Any) -> dict:
    """A plain dict of ``cfg`` in recipe form (loss params inline beside ``name``)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, LossConfig):
            out[f.name] = {"name": value.name, **value.params}
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML, atomically (``records.atomic_open``)."""
    from ratchet.data.records import atomic_open

    with atomic_open(path) as f:
        f.write(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# Describing: every key with its type, default, value and doc (``ratchet config``)


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass: the string literal right after each field."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body, docs = tree.body[0].body, {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe(cfg: Any, prefix: str = "") -> str:
    """Every leaf key of ``cfg`` as ``key: type = default  (now: value)`` and its doc, in recipe order."""
    lines = []
    defaults, docs, hints = type(cfg)(), field_docs(type(cfg)), typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, LossConfig):
            lines.append(describe(value, f"{prefix}{f.name}."))
            continue
        shown = {"name": value.name, **value.params} if isinstance(value, LossConfig) else value
        default = getattr(defaults, f.name)
        default = {"name": default.name, **default.params} if isinstance(default, LossConfig) else default
        kind = getattr(hints[f.name], "__name__", str(hints[f.name])).replace("typing.", "")
        now = "" if shown == default else f"  (now: {shown!r})"
        lines.append(f"{prefix}{f.name}: {kind} = {default!r}{now}")
        if docs.get(f.name):
            lines.append(f"    {docs[f.name]}")
    return "\n".join(lines)
