"""The five stages of a round as functions from files to files; the CLI calls each one alone.

This is where config objects are unpacked into the flat arguments of the components
(``generate``, ``judge``, ``data.pairing``, ``train``). Every stage reads and writes plain files
in a round directory, so any stage can be re-run by itself. A stage checks every row of its input
files before it writes anything (``data.records``: a bad row is a ``RecordError`` naming the file
and row, and an empty input file is one too), then writes each output atomically, so a failed
stage leaves what a finished one wrote as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from ratchet.config import (EvalConfig, GenerateConfig, JudgeConfig, PairConfig, ReviseConfig, TaskConfig,
                            TrainConfig)
from ratchet.data.pairing import (LABELLERS, STRATEGIES, attach_win_rates, build_pairs, build_unpaired, drop_truncated,
                                  is_complete, unpaired_from_pairs)
from ratchet.data.records import (chat_completions_problem, completions_problem, judgments_problem, match_rows,
                                  prompt_problem, read_jsonl, self_scores_problem, staged, write_json, write_jsonl)
from ratchet.data.selection import SELECTIONS, attach_logprobs, build_sft
from ratchet.evaluate.bstar import balance_score, choose_temperature
from ratchet.evaluate.metrics import heldout_metric
from ratchet.generate.base import PromptTooLongError, SamplingParams
from ratchet.generate.engine import CachedSampler
from ratchet.generate.hf import HFSampler
from ratchet.judge import build_judge, judge_metric
from ratchet.loop.executor import Replicas, current_executor
from ratchet.tasks import BUILTIN, Task, load_task


def _vllm(model, tokenizer, *, batch_size: int, progress: bool, **options):
    """vLLM on the directory the model was loaded from (each round's own), with ``generate.vllm``."""
    from ratchet.generate.vllm import VLLMSampler  # optional extra; imported only when asked for

    return VLLMSampler(model.name_or_path, tokenizer, progress=progress, **options)


SAMPLERS = {"cached": CachedSampler, "hf": HFSampler, "vllm": _vllm}


@contextlib.contextmanager
def open_sampler(name: str, model, tokenizer, *, batch_size: int, progress: bool, vllm: dict | None = None):
    """The sampler ``name``; an engine that holds its own copy of the model (vLLM) is shut down on
    exit, so its GPU memory is free for the next stage."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    extra = (vllm or {}) if name == "vllm" else {}
    if isinstance(model, Replicas):  # executor ray: the rows split over the actors holding the model
        sampler = model.sampler(batch_size=batch_size, progress=progress, name=name, vllm=extra)
    else:
        sampler = SAMPLERS[name](model, tokenizer, batch_size=batch_size, progress=progress, **extra)
    try:
        yield sampler
    finally:
        if hasattr(sampler, "close"):
            sampler.close()


def make_task(cfg: TaskConfig) -> Task:
    """The recipe's task (a data file is not read until the task is first asked for rows)."""
    return load_task(cfg.name, source=cfg.source, seed=cfg.seed, steps=cfg.steps, fields=cfg.fields,
                     template=cfg.template, heldout_fraction=cfg.heldout_fraction, heldout_source=cfg.heldout_source,
                     stop=tuple(cfg.stop), subset=cfg.subset, split=cfg.split, heldout_split=cfg.heldout_split,
                     revision=cfg.revision)


def make_prompts(task: Task, split: str, out: Path, n: int, *, round: int = 0) -> Path:
    """``n`` prompt rows of ``split``: the held-out ones, or round ``round``'s training draw."""
    return write_jsonl(out, task.heldout(n) if split == "heldout" else task.train(n, round))


def stop_strings(explicit: list[str] | None, task: Task | None, rows: list[dict]) -> tuple[str, ...]:
    """``generate.stop`` if set, else the task's; without a task, that of the built-in task the rows
    name (a stage run alone from the CLI on a prompts file)."""
    if explicit is not None:
        return tuple(explicit)
    if task is not None:
        return tuple(task.stop)
    name = rows[0].get("task") if rows else None
    return tuple(BUILTIN[name]["stop"]) if name in BUILTIN else ()


def sampling_params(cfg: GenerateConfig, task: Task | None, rows: list[dict]) -> SamplingParams:
    """The sampling parameters ``generate`` names (stop strings by ``stop_strings``), for the sample
    stage and the on-policy trainer's rollouts alike."""
    return SamplingParams(k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                          stop=stop_strings(cfg.stop, task, rows), seed=cfg.seed)


def generate(model, tokenizer, prompts: Path, out: Path, cfg: GenerateConfig, *, task: Task | None = None,
             progress: bool | str = True) -> Path:
    """``cfg.k`` completions of every prompt; ``progress``: a bar (named by a string, else "sampling")."""
    rows = read_jsonl(prompts, required=("id", "messages"), check=prompt_problem, empty_ok=False)
    progress = "sampling" if progress is True else progress
    params = sampling_params(cfg, task, rows)
    with open_sampler(cfg.sampler, model, tokenizer, batch_size=cfg.batch_size, progress=progress,
                      vllm=cfg.vllm) as sampler:
        try:
            samples = sampler.sample([r["messages"] for r in rows], params)
        except PromptTooLongError as e:  # name the file and the row's id
            where = f"id {rows[e.index]['id']!r}: " if e.index is not None else ""
            raise PromptTooLongError(f"{prompts}: {where}{e}", e.index) from None
        tests = _write_tests(sampler, rows, params, cfg) if cfg.tests > 0 else [{} for _ in rows]
    sampling = dataclasses.asdict(params)
    return write_jsonl(out, ({**row, "completions": [dataclasses.asdict(s) for s in ss], "sampling": sampling, **t}
                             for row, ss, t in zip(rows, samples, tests)))


def _write_tests(sampler, rows: list[dict], params: SamplingParams, cfg: GenerateConfig) -> list[dict]:
    """DSTC: ``cfg.tests`` test-writing samples per code prompt (seed + 1, so their randomness is not
    the code samples'), parsed into at most ``cfg.max_tests`` distinct single-assert tests."""
    from ratchet.data.self_tests import load_template, writing_messages
    from ratchet.judge.dstc import parse_tests

    template = load_template(cfg.tests_template)
    test_params = dataclasses.replace(params, k=cfg.tests, seed=params.seed + 1)
    samples = sampler.sample([writing_messages(r, template) for r in rows], test_params)
    out = []
    for row, ss in zip(rows, samples):
        parsed = dict.fromkeys(t for s in ss for t in parse_tests(s.text, row["code"]["entry_point"]))
        out.append({"test_samples": [dataclasses.asdict(s) for s in ss], "tests": list(parsed)[:cfg.max_tests]})
    return out


def probe_temperature(model, tokenizer, prompts: Path, out_dir: Path, cfg: GenerateConfig, judge_cfg: JudgeConfig,
                      *, task: Task | None = None, progress: bool = True) -> dict:
    """B-STaR's temperature for a round (Zeng et al. 2024; docs/algorithms.md section 9.5): sample the first
    ``cfg.temperature_probe_prompts`` prompts at every ``cfg.temperature_grid`` temperature (k
    each), judge them, and pick by balance score (``evaluate.bstar.choose_temperature``). Writes
    the samples and judgments per temperature and ``temperature.json``:
    ``{"temperature", "balance_scores": {str(t): score}, "probe_prompts"}``."""
    out_dir = Path(out_dir)
    probe = write_jsonl(out_dir / "probe_prompts.jsonl", read_jsonl(prompts)[:cfg.temperature_probe_prompts])
    candidates = {}
    for t in cfg.temperature_grid:
        c = generate(model, tokenizer, probe, out_dir / f"completions_t{t}.jsonl",
                     dataclasses.replace(cfg, temperature=t), task=task, progress=progress)
        candidates[t] = (read_jsonl(c), read_jsonl(judge(c, out_dir / f"judgments_t{t}.jsonl", judge_cfg,
                                                         policy=lambda: (model, tokenizer))))
    try:
        chosen = choose_temperature(candidates)
    except ValueError as e:
        raise ValueError(f"generate.temperature_grid: {e}; the judge {judge_cfg.name!r} must say which samples "
                         "are correct") from None
    result = {"temperature": chosen, "balance_scores": {str(t): balance_score(*cj) for t, cj in candidates.items()},
              "probe_prompts": len(read_jsonl(probe))}
    write_json(out_dir / "temperature.json", result)
    return result


def judge(completions: Path, out: Path, cfg: JudgeConfig, *, policy=None, progress: bool = False,
          source: Path | None = None) -> Path:
    """Every completion scored by ``cfg``'s judge; ``policy`` () -> (model, tokenizer) for a judge that
    is the policy itself (``llm`` with ``model: policy``). A row the judge cannot read (no answer to
    compare with, say) is a ``JudgeInputError`` naming ``source`` (default: ``completions``) and its id."""
    rows = read_jsonl(completions, required=("id", "completions"), check=completions_problem, empty_ok=False)
    executor = current_executor()
    if executor.distributed:  # executor ray: rows judged by Ray tasks, or by the actors holding the policy
        return write_jsonl(out, executor.judge(rows, cfg, policy=policy, source=str(source or completions)))
    return write_jsonl(out, judge_rows(rows, cfg, policy=policy, progress=progress, source=source or completions))


def judge_rows(rows: list[dict], cfg: JudgeConfig, *, policy=None, progress: bool = False, source=None) -> list[dict]:
    """``judge``'s output rows for ``rows`` (each row is judged alone, so any split of the rows
    judged apart and put back in order gives the same list)."""
    from tqdm.auto import tqdm

    from ratchet.judge.base import JudgeInputError

    judge_ = build_judge(cfg.name, cfg.params, policy=policy)
    out_rows = []
    for row in tqdm(rows, desc="judging", unit="prompt", disable=not progress):
        try:
            verdicts = judge_.judge(row, [c["text"] for c in row["completions"]])
        except JudgeInputError as e:  # the judge names the prompt; this, the file it came from
            raise JudgeInputError(f"{source}: {e}") from None
        out_rows.append({"id": row["id"], "scores": [v.score for v in verdicts],
                         "correct": [v.correct for v in verdicts], "details": [v.detail for v in verdicts]})
    return out_rows


def pair(completions: Path, judgments: Path, out: Path, cfg: PairConfig, *, loss: str = "dpo",
         self_scores: Path | None = None) -> Path:
    """Pairs for paired objectives, with each sample's win rate for ``scored`` ones (SPPO,
    ``pairing.attach_win_rates``); unpaired (desirable/undesirable) rows for ``unpaired`` ones (KTO,
    labelled by ``cfg.labeller``; with ``strategy: dstc``, DSTC's pairs split, so only the
    self-written tests decide); the selected samples (``cfg.selection``) for ``sft`` ones,
    self-scored by ``self_scores`` if given. Each of strategy, labeller and selection gets its own
    keys of ``cfg.params``. Judgments (and self-scores) must be the completions', matched by id.
    Besides ``out``, writes ``pair_metrics_path(out)``: ``{"rows", "pairs_dropped_identical"}``
    (pairs whose chosen text equals the rejected one, left out)."""
    from ratchet.losses import LOSSES

    rows = read_jsonl(completions, required=("id", "messages", "completions"), check=chat_completions_problem,
                      empty_ok=False)
    judged = read_jsonl(judgments, required=("id", "scores"), check=judgments_problem, empty_ok=False)
    match_rows(completions, rows, judgments, judged, "scores")
    if self_scores is not None:
        scored = read_jsonl(self_scores, required=("id", "logprobs", "num_tokens"), check=self_scores_problem,
                            empty_ok=False)
        match_rows(completions, rows, self_scores, scored, "logprobs")
        rows = attach_logprobs(rows, scored)
    if cfg.drop_truncated:
        rows, judged = drop_truncated(rows, judged)
    counts, data = {"identical": 0}, LOSSES[loss].data
    if data == "sft":
        out_rows = build_sft(rows, judged, selection=cfg.selection, max_per_prompt=cfg.max_pairs_per_prompt,
                             seed=cfg.seed, **_own_params(SELECTIONS[cfg.selection].fn, cfg.params))
    elif data == "unpaired" and cfg.strategy != "dstc":
        if any(isinstance(d, dict) and "passed" in d for j in judged for d in j.get("details") or []):
            raise ValueError(f"{judgments}: judged by dstc, whose `correct` is the real tests' verdict; KTO rows "
                             "from self-written tests need pair.strategy: dstc")
        out_rows = build_unpaired(rows, judged, labeller=cfg.labeller, max_per_prompt=cfg.max_pairs_per_prompt,
                                  seed=cfg.seed, **_own_params(LABELLERS[cfg.labeller], cfg.params))
    else:
        out_rows = build_pairs(rows, judged, strategy=cfg.strategy, max_pairs_per_prompt=cfg.max_pairs_per_prompt,
                               seed=cfg.seed, counts=counts, **_own_params(STRATEGIES[cfg.strategy], cfg.params))
        if data == "unpaired":  # DSTC for KTO (docs/algorithms.md section 6): chosen desirable, rejected not;
            out_rows = unpaired_from_pairs(out_rows)  # the judge's `correct` is the real tests', never read
        elif data == "scored":  # SPPO: P(y > pi_t | x) of both samples, from the same judgments
            out_rows = attach_win_rates(out_rows, rows, judged)
        if "ref_response" in LOSSES[loss].reads.policy:  # SELM: the reference model's own answer
            _attach_ref_responses(out_rows, rows, seed=cfg.seed)
    write_jsonl(out, out_rows)
    write_json(pair_metrics_path(out), {"rows": len(out_rows), "pairs_dropped_identical": counts["identical"]})
    return Path(out)


def _own_params(fn, params: dict) -> dict:
    """The keys of ``params`` that are keyword-only parameters of ``fn`` (``pair.params`` is shared
    by the strategy, the selection and the labeller; config.PairConfig checked each key is someone's)."""
    import inspect

    sig = inspect.signature(fn).parameters
    return {k: v for k, v in params.items() if k in sig and sig[k].kind is sig[k].KEYWORD_ONLY}


def pair_metrics_path(out: Path) -> Path:
    """The pair stage's counts, beside its output: ``pairs.jsonl`` -> ``pairs.metrics.json``."""
    return Path(out).with_name(f"{Path(out).stem}.metrics.json")


def self_score(model, tokenizer, completions: Path, out: Path, *, batch_size: int = 32) -> Path:
    """The model's own log-likelihood of each of its samples, log pi(y|x) at temperature 1 (the
    self-reward of SFT-sharpening): rows ``{"id", "logprobs": [float], "num_tokens": [int]}``."""
    from ratchet.generate.score import sequence_logprobs  # torch-heavy; import when scoring

    rows = read_jsonl(completions, required=("id", "messages", "completions"), check=chat_completions_problem,
                      empty_ok=False)
    items = [(r["messages"], c["text"], is_complete(c)) for r in rows
             for c in r["completions"]]
    scored = iter(model.sequence_logprobs(items, batch_size=batch_size) if isinstance(model, Replicas)
                  else sequence_logprobs(model, tokenizer, items, batch_size=batch_size))
    out_rows = []
    for r in rows:
        got = [next(scored) for _ in r["completions"]]
        out_rows.append({"id": r["id"], "logprobs": [lp for lp, _ in got], "num_tokens": [n for _, n in got]})
    return write_jsonl(out, out_rows)


def _attach_ref_responses(pairs: list[dict], rows: list[dict], *, seed: int) -> None:
    """SELM's y_ref ~ pi_ref(.|x): one of the round's own samples of the same prompt, drawn at random.

    The round's samples come from the model the round starts from, which is the reference under
    the default ``train.reference: previous`` schedule (SELM, Zhang et al. 2024, section 4)."""
    import random

    rng = random.Random(seed)
    by_id = {r["id"]: r["completions"] for r in rows}
    for p in pairs:
        sample = rng.choice(by_id[p["id"]])
        p["ref_response"], p["ref_response_complete"] = sample["text"], is_complete(sample)


def train_model(model, tokenizer, pairs: Path, out_dir: Path, cfg: TrainConfig, *, skip_invalid: bool = False,
                reference_model=None, reference_id: str = "policy-at-start", anchor_model=None,
                anchor_id: str = "policy-at-start", revision_template: str = "revision",
                resume: bool = False, report_to: list[str] = (), progress: bool = True,
                invalid_hint: str | None = None) -> dict:
    """Train on ``pairs``; ``reference_model`` and ``anchor_model`` (INPO's fixed pi_ref) are, when
    None, the model as it starts (round 1 of a loop, or ``ratchet train``); ``revision_template``
    (``revise.template``) makes SRPO's revision prompts, so training and ``revise`` use one template
    (objectives without revise_* sequences ignore it);
    ``resume`` continues from the newest checkpoint in ``out_dir/checkpoints`` (every
    ``cfg.checkpoint_every`` steps), if there is one; ``invalid_hint`` ends an invalid row's error
    where the caller offers a way to skip such rows (``ratchet train --skip-invalid``)."""
    from ratchet.train.adapters import lora_training

    with lora_training(model, tokenizer, cfg.lora, gradient_checkpointing=cfg.gradient_checkpointing,
                       model_dir=Path(out_dir) / "model", seed=cfg.seed) as model:
        return _train_pairs(model, tokenizer, pairs, out_dir, cfg, skip_invalid=skip_invalid,
                            reference_model=reference_model, reference_id=reference_id,
                            anchor_model=model if anchor_model is None else anchor_model, anchor_id=anchor_id,
                            revision_template=revision_template, resume=resume, progress=progress,
                            log_with=list(report_to) or None, invalid_hint=invalid_hint)


def _train_pairs(model, tokenizer, pairs: Path, out_dir: Path, cfg: TrainConfig, **kwargs) -> dict:
    """``train.offline.train_offline`` with ``cfg`` unpacked into its flat arguments."""
    from ratchet.train.offline import train_offline  # torch-heavy; import when training

    return train_offline(model, tokenizer, pairs, out_dir, loss=cfg.loss.name, loss_params=cfg.loss.params, lr=cfg.lr,
                      epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                      max_length=cfg.max_length, warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                      max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, checkpoint_every=cfg.checkpoint_every,
                      share_prompt=cfg.share_prompt, **kwargs)


def revise(model, tokenizer, prompts: Path, out: Path, cfg: ReviseConfig, eval_cfg: EvalConfig, *,
           task: Task | None = None, vllm: dict | None = None, progress: bool = True) -> Path:
    """Greedy draft, then ``cfg.revisions`` revisions by the same model (SRPO's inference)."""
    from ratchet.data.revision import load_template
    from ratchet.generate.revise import revise as revise_loop

    rows = read_jsonl(prompts, required=("id", "messages"), check=prompt_problem, empty_ok=False)
    params = SamplingParams(k=1, temperature=0.0, max_new_tokens=eval_cfg.max_new_tokens,
                            stop=stop_strings(None, task, rows))
    with open_sampler(eval_cfg.sampler, model, tokenizer, batch_size=eval_cfg.batch_size, progress=progress,
                      vllm=vllm) as sampler:
        revised = revise_loop(sampler, rows, revisions=cfg.revisions, params=params,
                              template=load_template(cfg.template))
    return write_jsonl(out, revised)


def eval_judge(cfg: EvalConfig, judge_cfg: JudgeConfig) -> JudgeConfig:
    """The judge of held-out answers: ``evaluate.judge`` with its params and metric, else the training one."""
    return JudgeConfig(name=cfg.judge, params=cfg.judge_params, metric=cfg.metric) if cfg.judge else judge_cfg


def evaluate_revisions(model, tokenizer, prompts: Path, out_dir: Path, cfg: ReviseConfig, eval_cfg: EvalConfig,
                       judge_cfg: JudgeConfig, *, task: Task | None = None, progress: bool = True) -> dict:
    """Accuracy at every revision step (0 = the draft); writes revisions.jsonl, metrics.json, a plot
    (all or nothing: ``records.staged``)."""
    from ratchet.evaluate.revisions import plot_revisions, score_revisions

    with staged(out_dir) as tmp:
        rows = read_jsonl(revise(model, tokenizer, prompts, tmp / "revisions.jsonl", cfg, eval_cfg, task=task,
                                 progress=progress))
        j = eval_judge(eval_cfg, judge_cfg)
        acc = score_revisions(rows, build_judge(j.name, j.params, policy=lambda: (model, tokenizer)))
        metrics = {"metric": "accuracy", "accuracy": acc[0], "accuracy_per_revision": acc, "n": len(rows)}
        write_json(tmp / "metrics.json", metrics)
        try:
            plot_revisions({"accuracy": acc}, tmp / "revisions.png")
        except ImportError:  # matplotlib is the optional [plot] extra
            pass
    return metrics


def revise_answers(model, tokenizer, out_dir: Path, cfg: ReviseConfig, eval_cfg: EvalConfig, judge_cfg: JudgeConfig,
                   *, task: Task | None = None, vllm: dict | None = None, progress: bool = True) -> dict:
    """The loop's held-out evaluation with SRPO's inference: ``evaluate``'s greedy answers in
    ``out_dir`` (revision 0) revised ``cfg.revisions`` times, greedily, by the same model; revision k
    judged as the answers are, into ``out_dir/revision_<k>/`` (answers.jsonl, its rows marked
    ``"revision": k``; judgments.jsonl; metrics.json: the files of ``out_dir`` itself, so the gate
    reads a revision as it reads the draft).
    Writes and returns ``out_dir/revisions.json``: ``{"metric", "revision_0": value, ..., "revision_N":
    value, "revision_intervals": [[low, high] or None per revision]}``."""
    import json

    from ratchet.data.revision import load_template
    from ratchet.generate.revise import revise as revise_loop

    out_dir = Path(out_dir)
    draft = json.loads((out_dir / "metrics.json").read_text())
    metric = draft["metric"]
    if metric not in ("accuracy", "mean_score"):
        raise ValueError(f"revise.revisions: the held-out metric {metric!r} is not scored per revision; revisions "
                         "are evaluated with a verifier (accuracy) or a scoring judge (mean_score)")
    rows = read_jsonl(out_dir / "answers.jsonl", required=("id", "messages", "completions"))
    prompts = [{k: v for k, v in r.items() if k not in ("completions", "sampling")} for r in rows]
    params = SamplingParams(k=1, temperature=0.0, max_new_tokens=eval_cfg.max_new_tokens,
                            stop=stop_strings(None, task, prompts))
    with open_sampler(eval_cfg.sampler, model, tokenizer, batch_size=eval_cfg.batch_size,
                      progress="revising" if progress else False, vllm=vllm) as sampler:
        revised = revise_loop(sampler, prompts, revisions=cfg.revisions, params=params,
                              template=load_template(cfg.template), drafts=[r["completions"][0] for r in rows])
    j = eval_judge(eval_cfg, judge_cfg)
    out, intervals = {"metric": metric, "revision_0": draft[metric]}, [draft.get("interval")]
    for k in range(1, cfg.revisions + 1):
        with staged(out_dir / f"revision_{k}") as tmp:
            answers = write_jsonl(tmp / "answers.jsonl", (
                {**p, "revision": k, "sampling": r["sampling"],
                 "completions": [{"text": r["answers"][k], "finish_reason": r["finish_reasons"][k]}]}
                for p, r in zip(prompts, revised)))
            judged = read_jsonl(judge(answers, tmp / "judgments.jsonl", j, policy=lambda: (model, tokenizer),
                                      source=out_dir / "answers.jsonl"))
            m = heldout_metric(metric, [jj["correct"][0] for jj in judged], [jj["scores"][0] for jj in judged],
                               judge=j.name)
            write_json(tmp / "metrics.json", m)
        out[f"revision_{k}"] = m[metric]
        intervals.append(m.get("interval"))
    out["revision_intervals"] = intervals
    write_json(out_dir / "revisions.json", out)
    return out


def revise_samples(model, tokenizer, completions: Path, out: Path, cfg: ReviseConfig, gen_cfg: GenerateConfig, *,
                   task: Task | None = None, progress: bool = True) -> Path:
    """The first ``cfg.train_drafts`` distinct samples of each prompt revised once by the model that
    drew them, sampled as ``gen_cfg`` samples (one revision each; the revision step's seed is
    ``gen_cfg.seed + 1``). Rows: the prompt's fields, ``completions`` (one revision per draft) and
    ``draft_indices`` (the sample each one revises), ready for ``judge`` and ``revision_pairs``."""
    from ratchet.data.pairing import completion_texts, distinct
    from ratchet.data.revision import load_template
    from ratchet.generate.revise import revise as revise_loop

    rows = read_jsonl(completions, required=("id", "messages", "completions"), check=chat_completions_problem,
                      empty_ok=False)
    picked = [(row, i) for row in rows
              for i in distinct(list(range(len(row["completions"]))), completion_texts(row))[:cfg.train_drafts]]
    params = dataclasses.replace(sampling_params(gen_cfg, task, rows), k=1)
    with open_sampler(gen_cfg.sampler, model, tokenizer, batch_size=gen_cfg.batch_size,
                      progress="revising drafts" if progress else False, vllm=gen_cfg.vllm) as sampler:
        revised = revise_loop(sampler, [{"messages": row["messages"]} for row, _ in picked], revisions=1,
                              params=params, template=load_template(cfg.template),
                              drafts=[row["completions"][i] for row, i in picked])
    grouped: dict = {}
    for (row, i), r in zip(picked, revised):
        g = grouped.setdefault(row["id"], {**{k: v for k, v in row.items() if k not in ("completions", "sampling")},
                                           "completions": [], "draft_indices": []})
        g["completions"].append({"text": r["answers"][1], "finish_reason": r["finish_reasons"][1]})
        g["draft_indices"].append(i)
    return write_jsonl(out, grouped.values())


def revision_pairs(pairs: Path, completions: Path, judgments: Path, revised: Path, revised_judgments: Path,
                   out: Path, *, drop_truncated: bool = True) -> Path:
    """``pairs`` followed by the (draft, revision) pairs of every revised prompt
    (``data.revision.draft_revision_pairs``); ``pair_metrics_path(out)`` holds the pair stage's
    counts plus ``revision_pairs``, how many were added."""
    import json

    from ratchet.data.revision import draft_revision_pairs

    rows = {r["id"]: r for r in read_jsonl(completions, required=("id", "messages", "completions"))}
    judged = {r["id"]: r for r in read_jsonl(judgments, required=("id", "scores"))}
    revised_rows = read_jsonl(revised, required=("id", "completions", "draft_indices"))
    revised_judged = read_jsonl(revised_judgments, required=("id", "scores"), check=judgments_problem)
    match_rows(revised, revised_rows, revised_judgments, revised_judged, "scores")
    revised_by_id = {r["id"]: r for r in revised_judged}
    added = [p for r in revised_rows
             for p in draft_revision_pairs(rows[r["id"]], judged[r["id"]], r, revised_by_id[r["id"]],
                                           drop_truncated=drop_truncated)]
    write_jsonl(out, read_jsonl(pairs) + added)
    counts_path = pair_metrics_path(pairs)
    counts = json.loads(counts_path.read_text()) if counts_path.exists() else {}
    write_json(pair_metrics_path(out), {**counts, "rows": counts.get("rows", 0) + len(added),
                                        "revision_pairs": len(added)})
    return Path(out)


def evaluate(model, tokenizer, prompts: Path, out_dir: Path, cfg: EvalConfig, judge_cfg: JudgeConfig, *,
             task: Task | None = None, reference: Path | None = None, vllm: dict | None = None,
             progress: bool = True) -> dict:
    """Greedy answers to held-out prompts, judged by ``cfg.judge`` (else ``judge_cfg``); writes
    answers, judgments and metrics.json: ``{"metric": name, name: value, ...}`` where the metric is
    the judge's (``accuracy``, ``mean_score``, or ``win_rate`` against the rows' ``answer``, else
    against ``reference``: an answers.jsonl of another model; None: these answers are the reference).
    ``vllm``: the engine's options when ``cfg.sampler`` is vllm (``generate.vllm``). The three files
    replace a finished evaluation's only when all were written (``records.staged``)."""
    gen = GenerateConfig(sampler=cfg.sampler, k=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens,
                         batch_size=cfg.batch_size, vllm=dict(vllm or {}))
    with staged(out_dir) as tmp:
        answers = generate(model, tokenizer, prompts, tmp / "answers.jsonl", gen, task=task,
                           progress="evaluating" if progress else False)
        j = eval_judge(cfg, judge_cfg)
        metric = j.metric if j.metric != "auto" else judge_metric(j.name, j.params)
        policy = lambda: (model, tokenizer)  # noqa: E731  (a judge that is the policy judges the model evaluated)
        if metric == "win_rate":
            metrics = _win_rate(read_jsonl(answers), reference, build_judge(j.name, j.params, policy=policy), tmp)
        else:
            judged = read_jsonl(judge(answers, tmp / "judgments.jsonl", j, policy=policy, source=prompts))
            metrics = heldout_metric(metric, [jj["correct"][0] for jj in judged], [jj["scores"][0] for jj in judged],
                                     judge=j.name)
        write_json(tmp / "metrics.json", metrics)
    return metrics


def _win_rate(rows: list[dict], reference: Path | None, judge_, out_dir: Path) -> dict:
    """Each answer against the reference answer of its prompt, by a pairwise judge in both orders."""
    from ratchet.evaluate.metrics import win_rate

    if not hasattr(judge_, "compare"):
        raise ValueError("metric win_rate needs a pairwise judge (judge llm with mode: pairwise)")
    answers = [r["completions"][0]["text"] for r in rows]
    if all(isinstance(r.get("answer"), str) for r in rows):
        against, refs = "answer", [r["answer"] for r in rows]
    elif reference is not None:
        by_id = {r["id"]: r["completions"][0]["text"] for r in read_jsonl(reference, required=("id", "completions"))}
        against, refs = str(reference), [by_id[r["id"]] for r in rows]
    else:  # this model is the reference: every comparison is with itself, a tie by definition
        against, refs = "itself", answers
    from ratchet.judge.prompt import question_text

    outcomes = [0.5 if a == b else judge_.compare(question_text(r), [(a, b)])[0]
                for r, a, b in zip(rows, answers, refs)]
    write_jsonl(out_dir / "judgments.jsonl", ({"id": r["id"], "outcome": o, "reference": b}
                                              for r, o, b in zip(rows, outcomes, refs)))
    w = win_rate(outcomes)
    return {"metric": "win_rate", "win_rate": w.rate, "low": w.low, "high": w.high, "wins": w.wins, "ties": w.ties,
            "losses": w.losses, "n": w.n, "reference": against}
