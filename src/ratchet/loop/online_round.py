"""A round of an on-policy objective: prompts -> train (sampling while training) -> evaluate.

Objectives whose ``LOSSES[name].data`` is ``online`` (RLOO) or ``two_turn`` (SCoRe) train on the
round's prompts directly (``train.online``): the round has no generate, judge or pair stage, and
its samples are in ``train/rollouts.jsonl`` (a completions row and its judgments, per prompt and
step). Stages go through ``manifest.run_stage`` as in an offline round, so a killed loop skips
finished stages and the trainer resumes from its last checkpoint; a changed recipe that
invalidates a finished stage is reported. For ``two_turn`` objectives the held-out evaluation also
answers a second time after the self-correction instruction (``evaluate_correction``); the gate's
``accuracy`` stays attempt 1, the plain greedy answer. This is where ``online``, ``generate``,
``judge`` and ``train`` are unpacked into the trainer's flat arguments.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path

from ratchet.config import ConfigError, EvalConfig, JudgeConfig, RunConfig, to_dict
from ratchet.data.correction import correction_messages
from ratchet.data.records import read_jsonl, write_json, write_jsonl
from ratchet.evaluate.correction import correction_metrics
from ratchet.generate.base import SamplingParams
from ratchet.judge import build_judge
from ratchet.loop import stages
from ratchet.loop.manifest import claim, run_stage
from ratchet.loop.model_cache import ModelCache
from ratchet.loop.rollouts import judge_reward, self_loglik_reward, single_turn, two_turn, win_rate_reward
from ratchet.losses import LOSSES

EPISODES = {"online": single_turn, "two_turn": two_turn}
"""Objective data kind -> how a rollout samples (one answer; SCoRe's answer, instruction, answer)."""


def is_online(cfg: RunConfig) -> bool:
    return LOSSES[cfg.train.loss.name].on_policy


def objective_params(cfg: RunConfig, r: int) -> dict:
    """The objective's parameters in round ``r``: SCoRe's ``stage`` comes from ``online.stage_one_rounds``."""
    params = dict(cfg.train.loss.params)
    if LOSSES[cfg.train.loss.name].data == "two_turn":
        if "stage" in params:
            raise ConfigError("train.loss.stage: SCoRe's stage is set per round; use online.stage_one_rounds")
        params["stage"] = 1 if r <= cfg.online.stage_one_rounds else 2
    return params


def train_online_stage(model, tokenizer, prompts: Path, out_dir: Path, cfg: RunConfig, *, loss_params: dict,
                       reference_model=None, task=None, progress: bool = True) -> dict:
    """On-policy training of ``model`` on the prompts file; ``reference_model`` None: the model as given."""
    from ratchet.train.adapters import lora_training

    gen, t = cfg.generate, cfg.train
    if gen.sampler == "vllm":
        raise ConfigError("generate.sampler: on-policy objectives sample the model being trained; use cached or hf")
    rows = read_jsonl(prompts, required=("id", "messages"))
    if cfg.online.reward == "self_loglik" and reference_model is None:  # the base, frozen before any update
        reference_model = copy.deepcopy(model).requires_grad_(False).eval()
    params = stages.sampling_params(gen, task, rows)
    with lora_training(model, tokenizer, t.lora, gradient_checkpointing=t.gradient_checkpointing,
                       model_dir=Path(out_dir) / "model", seed=t.seed) as model:
        return _train_online(model, tokenizer, rows, out_dir, cfg, params, loss_params=loss_params,
                             reference_model=reference_model, progress=progress)


def _train_online(model, tokenizer, rows: list[dict], out_dir: Path, cfg: RunConfig, params: SamplingParams, *,
                  loss_params: dict, reference_model, progress: bool) -> dict:
    """``train.online.train_online`` on ``rows`` with the rollout, reward and sampler ``cfg`` names."""
    from ratchet.train.online import train_online  # torch-heavy; import when training

    gen, t = cfg.generate, cfg.train
    if cfg.online.reward == "self_loglik":
        reward = self_loglik_reward(reference_model, tokenizer, length_normalized=cfg.online.length_normalized)
    else:  # judge: its score; win_rate: SPO, each sample's win rate against the prompt's others
        judge = build_judge(cfg.judge.name, cfg.judge.params, policy=lambda: (model, tokenizer))
        reward = (win_rate_reward if cfg.online.reward == "win_rate" else judge_reward)(judge)
    episodes = EPISODES[LOSSES[t.loss.name].data]
    if episodes is two_turn:
        episodes = functools.partial(two_turn, instruction=cfg.online.correction_instruction)
    sampler = stages.SAMPLERS[gen.sampler](model, tokenizer, batch_size=gen.batch_size, progress=False)  # not vllm
    return train_online(model, tokenizer, rows, out_dir, rollout=episodes(sampler, params, reward), loss=t.loss.name,
                        loss_params=loss_params, lr=t.lr, epochs=t.epochs, batch_size=t.batch_size,
                        grad_accum=t.grad_accum, max_length=t.max_length, warmup_ratio=t.warmup_ratio,
                        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, seed=t.seed,
                        reference_model=reference_model, progress=progress, resume=True,
                        checkpoint_every=t.checkpoint_every,
                        rollout_config={"sampling": dataclasses.asdict(params), "online": to_dict(cfg.online),
                                        "judge": to_dict(cfg.judge)})


def _step_means(path: Path, keys: tuple[str, ...]) -> dict:
    """Each metric key's value at the first and last step and its mean over the round's steps, e.g.
    ``rewards_first``, ``rewards_last``, ``rewards_mean`` (one step's few prompts are a noisy sample)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = {f"{k}_{end}": row[k] for k in keys for end, row in (("first", rows[0]), ("last", rows[-1])) if k in row}
    return out | {f"{k}_mean": sum(r[k] for r in rows) / len(rows) for k in keys if all(k in r for r in rows)}


def run_online_round(cfg: RunConfig, task, round_dir: Path, model_path: str, reference_path: str, r: int,
                     models: ModelCache, *, evaluate, progress: bool = True) -> dict:
    """One on-policy round from ``model_path``; ``evaluate(model_path)`` gives the held-out metrics."""
    p, train_dir = round_dir / "prompts.jsonl", round_dir / "train"
    run_stage(round_dir, "prompts", {"task": to_dict(cfg.task), "data": task.fingerprint(), "round": r}, [], [p],
              lambda: stages.make_prompts(task, "train", p, cfg.task.train_prompts, round=r))
    params = objective_params(cfg, r)

    key = {"train": to_dict(cfg.train), "loss_params": params, "online": to_dict(cfg.online),
           "generate": to_dict(cfg.generate), "judge": to_dict(cfg.judge), "model": models.id(model_path),
           "reference": models.id(reference_path)}

    def train_model():
        claim(train_dir, key)  # a training killed under this same recipe resumes from its last checkpoint
        reference = None if reference_path == model_path else models.load(reference_path).model
        train_online_stage(*models.get(model_path), p, train_dir, cfg, loss_params=params, reference_model=reference,
                           task=task, progress=progress)
        models.forget()  # the object in memory is now the trained model, not model_path's

    run_stage(round_dir, "train", key, [p], [train_dir / "model"], train_model)
    summary = json.loads((train_dir / "train_summary.json").read_text())
    metrics = {"round": r, "train_loss": summary["final"].get("loss"), "samples": summary["samples"],
               "temperature": cfg.generate.temperature,
               **({"score_stage": params["stage"]} if "stage" in params else {}),
               **_step_means(train_dir / "train_metrics.jsonl", ("rewards", "first_rewards", "second_rewards", "kl"))}
    metrics.update(evaluate(str(train_dir / "model")))
    write_json(round_dir / "metrics.json", metrics)
    return metrics


def evaluation(cfg: RunConfig):
    """(evaluate function, extra manifest config) of the held-out evaluation for this objective."""
    if LOSSES[cfg.train.loss.name].data == "two_turn":
        instruction = cfg.online.correction_instruction
        return functools.partial(evaluate_correction, instruction=instruction), {"instruction": instruction}
    return stages.evaluate, {}


def evaluate_correction(model, tokenizer, prompts: Path, out_dir: Path, cfg: EvalConfig, judge_cfg: JudgeConfig, *,
                        instruction: str, task=None, reference=None, vllm=None, progress: bool = True) -> dict:
    """Greedy attempt 1 (``stages.evaluate``), then greedy attempt 2 after ``instruction``; metrics.json
    holds attempt 1's ``accuracy`` plus ``evaluate.correction.correction_metrics``."""
    out_dir = Path(out_dir)
    first = stages.evaluate(model, tokenizer, prompts, out_dir, cfg, judge_cfg, task=task, vllm=vllm,
                            progress=progress)
    answers = read_jsonl(out_dir / "answers.jsonl")
    second_prompts = write_jsonl(out_dir / "second_prompts.jsonl", [
        {**{k: v for k, v in row.items() if k not in ("completions", "sampling")},
         "messages": correction_messages(row["messages"], row["completions"][0]["text"], instruction)}
        for row in answers])
    stages.evaluate(model, tokenizer, second_prompts, out_dir / "second", cfg, judge_cfg, task=task, vllm=vllm,
                    progress=progress)
    correct1 = [bool(j["correct"][0]) for j in read_jsonl(out_dir / "judgments.jsonl")]
    correct2 = [bool(j["correct"][0]) for j in read_jsonl(out_dir / "second" / "judgments.jsonl")]
    metrics = {**first, **correction_metrics(correct1, correct2)}
    write_json(out_dir / "metrics.json", metrics)
    return metrics
