"""Typed configuration: one dataclass per stage, loaded from a YAML recipe plus ``key=value`` overrides.

Strict by design: an unknown key, a value of the wrong type or a missing file is an error naming
the key (as a dotted path) or the file and what was expected. Every field carries an attribute
docstring; ``ratchet config --help``-style docs and the YAML comments come from those.
Components never receive these objects: ``cli`` and ``loop`` unpack them into flat arguments.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ratchet.data.correction import INSTRUCTION as CORRECTION_INSTRUCTION


class ConfigError(ValueError):
    pass


@dataclass
class TaskConfig:
    name: str = "arithmetic"
    """Built-in task that makes the prompts: ``arithmetic``, or ``humaneval`` (the 164 HumanEval
    problems, halved once by a hash of the task id: at most 82 train and 82 held out)."""
    train_prompts: int = 256
    """Training prompts sampled from the task each round."""
    heldout_prompts: int = 200
    """Held-out prompts for evaluation (disjoint from training prompts)."""
    seed: int = 0
    """Seed of the task generator; round r draws its training prompts with seed + r."""


@dataclass
class GenerateConfig:
    def __post_init__(self) -> None:
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
    """DSTC (Liu et al. 2024; ALGORITHMS.md section 6): test-writing samples per code prompt, from
    ``tests_template``; their asserts, parsed into single tests, are stored in each completions row
    as ``tests`` (the samples as ``test_samples``) for the ``dstc`` judge. 0: no tests."""
    tests_template: str = "write_tests"
    """Test-writing prompt: a bundled name (``write_tests``) or a file using $prompt and $entry_point."""
    max_tests: int = 16
    """Cap on the parsed tests kept per prompt (first come), which bounds the pass matrix's runs."""
    temperature_grid: list[float] = field(default_factory=list)
    """B-STaR's temperature search (Zeng et al. 2024, section 9.5): if set, each round first samples
    its first ``temperature_probe_prompts`` prompts with ``k`` samples at every temperature here,
    judges them, and samples the round at the one with the highest balance score (eq. 3; ties: the
    lowest), recorded in the round's metrics.json. Empty (default): always ``temperature``."""
    temperature_probe_prompts: int = 32
    """Prompts (the round's first n) sampled at each ``temperature_grid`` temperature."""


@dataclass
class JudgeConfig:
    name: str = "answer"
    """Judge that scores completions (``ratchet.judge.JUDGES``): ``answer`` (final-answer match
    against the gold answer), ``unit_tests`` (the code task's real tests in the sandbox), ``dstc``
    (each code sample against the model's own tests, ``generate.tests``)."""


@dataclass
class PairConfig:
    def __post_init__(self) -> None:
        from ratchet.data.selection import SELECTIONS  # pure Python; checked here so a typo fails at load

        if self.selection not in SELECTIONS:
            raise ConfigError(f"pair.selection: unknown SFT selection {self.selection!r}; "
                              f"expected one of {sorted(SELECTIONS)}")

    strategy: str = "correct_vs_incorrect"
    """How judged completions become pairs (see ``ratchet.data.pairing.STRATEGIES``)."""
    selection: str = "all_correct"
    """For objectives that train on single answers (``LOSSES[loss].data == "sft"``), which samples
    to fine-tune on instead of pairs (``ratchet.data.selection.SELECTIONS``): ``all_correct``
    (STaR / rejection-sampling fine-tuning), ``best_of_n`` (highest judge score), ``self_loglik``
    (SFT-sharpening: highest log-likelihood under the model itself)."""
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
    or of the selection for SFT objectives (e.g. ``length_normalized`` for ``self_loglik``)."""


@dataclass
class LossConfig:
    name: str = "dpo"
    """Objective, a key of ``ratchet.losses.LOSSES``."""
    params: dict = field(default_factory=dict)
    """The objective's parameters (checked against its params dataclass); in YAML they sit beside
    ``name``: ``loss: {name: dpo, beta: 0.1}``."""


@dataclass
class TrainConfig:
    def __post_init__(self) -> None:
        if self.reference not in ("previous", "initial"):
            raise ConfigError(f"train.reference: expected 'previous' or 'initial', got {self.reference!r}")

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
    lora_r: int = 0
    """LoRA rank; 0 means full fine-tuning."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch."""
    reference: str = "previous"
    """Reference model of each round: ``previous`` (the model the round starts from, as in DNO,
    INPO and SELM) or ``initial`` (the starting model, fixed for all rounds)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    checkpoint_every: int = 50
    """Optimizer steps between checkpoints (``<out>/checkpoints``, removed when training finishes),
    from which ``ratchet train --resume`` and a restarted loop continue; 0 disables them."""
    seed: int = 0
    """Seed for data order and initialisation of adapters."""


@dataclass
class EvalConfig:
    sampler: str = "cached"
    """Sampler for the greedy held-out answers (see ``generate.sampler``)."""
    max_new_tokens: int = 96
    """Cap on generated tokens of each greedy held-out answer."""
    batch_size: int = 64
    """Held-out prompts decoded together."""
    judge: str | None = None
    """Judge of the held-out answers; None: the training judge (``judge.name``). DSTC trains on
    the model's own tests and evaluates with the real ones (``unit_tests``)."""


@dataclass
class ReviseConfig:
    def __post_init__(self) -> None:
        if self.revisions < 0:
            raise ConfigError(f"revise.revisions: expected >= 0, got {self.revisions}")

    revisions: int = 0
    """Revision steps after the draft (SRPO, Choi et al. 2024); ``ratchet revise`` and evaluation
    report every step. 0: the draft only (plain evaluation)."""
    template: str = "revision"
    """Revision prompt: a bundled name (``revision``) or a file using $prompt and $draft. Training
    (SRPO's revise_* sequences) and revising read this one template."""


@dataclass
class OnlineConfig:
    """On-policy objectives (``LOSSES[name].data`` ``online``: RLOO; ``two_turn``: SCoRe) train on the
    round's prompts directly, with no generate/judge/pair stages: each optimizer step takes
    ``train.batch_size * train.grad_accum`` prompts, samples ``generate.k`` completions of each from
    the current policy (``generate``'s sampler, temperature, top_p, max_new_tokens, stop) and
    rewards them, so a round of ``task.train_prompts`` prompts draws train_prompts x k samples, as
    an offline round does (``ratchet.loop.online``)."""

    def __post_init__(self) -> None:
        if self.reward not in ("judge", "self_loglik"):
            raise ConfigError(f"online.reward: expected 'judge' or 'self_loglik', got {self.reward!r}")
        if self.stage_one_rounds < 0:
            raise ConfigError(f"online.stage_one_rounds: expected >= 0, got {self.stage_one_rounds}")
        if not self.correction_instruction.strip():
            raise ConfigError("online.correction_instruction: expected a non-empty instruction")

    reward: str = "judge"
    """``judge``: the ``judge`` section's score (``answer``: 1.0 for a correct final answer);
    ``self_loglik``: the sample's log-likelihood under the round's reference model, Sharpening's
    self-reward log pi_base(y|x) (Huang et al. 2024); the latter reads no ground truth."""
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
class RunConfig:
    name: str = "demo"
    """Run name; files go to ``<runs_dir>/<name>/``."""
    runs_dir: str = "runs"
    """Directory holding all runs."""
    model: str = "smollm2-135m"
    """Known model name (``ratchet models``), local model directory, or hub id (online only)."""
    rounds: int = 1
    """Self-improvement rounds."""
    gate_tolerance: float = 0.0
    """A round is kept if its held-out accuracy >= best so far - gate_tolerance."""
    task: TaskConfig = field(default_factory=TaskConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pair: PairConfig = field(default_factory=PairConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    revise: ReviseConfig = field(default_factory=ReviseConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)

    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


# ---------------------------------------------------------------------------------------------
# Loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise a ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return origin(_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 3e-6 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is dict and isinstance(value, dict):
        return value
    if isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build_loss(data: Any, where: str) -> LossConfig:
    if isinstance(data, LossConfig):
        return data
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping like {{name: dpo, beta: 0.1}}, got {data!r}")
    from ratchet.losses import LOSSES  # config checks loss params; losses import nothing of ours

    params = dict(data)
    name = params.pop("name", LossConfig.name)
    params.update(params.pop("params", None) or {})
    if name not in LOSSES:
        raise ConfigError(f"{where}.name: unknown objective {name!r}; expected one of {sorted(LOSSES)}")
    try:
        LOSSES[name].make_params(**params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    return LossConfig(name=name, params=params)


def build(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, strictly."""
    if cls is LossConfig:
        return _build_loss(data, where.rstrip("."))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
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
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls: type = RunConfig) -> Any:
    """Load ``cls`` from a YAML file (optional) and ``key=value`` overrides (dotted keys)."""
    data: dict = {}
    if path is not None:
        p = Path(path)
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
    """Write the resolved config (every default filled in) as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
