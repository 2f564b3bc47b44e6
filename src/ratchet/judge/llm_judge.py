"""LLM-as-judge: a model, through any ``Sampler``, compares or rates completions.

Pairwise (MT-Bench's protocol, Zheng et al. 2023): every pair is judged in both orders, and the
outcome for the first answer is 1 when both orders prefer it, 0 when both prefer the other, and
0.5 otherwise: a tie, or the two orders disagree (position bias), or a verdict that cannot be
parsed. A prompt's completions are compared round-robin; a completion's score is its mean
outcome. Pointwise: the judge rates each completion 1-10, averaged over ``params.k`` samples.

Prompt templates are data files (``templates/*.txt``, ``string.Template`` syntax with
``$question``, ``$answer_a``, ``$answer_b`` / ``$answer``); pass a name from ``TEMPLATES`` or a
path. The policy itself can be the judge (self-rewarding, Yuan et al. 2024): give it the policy's
sampler. The judge knows nothing about pairing; it only scores.

Yes/no (``YesNoJudge``): no text is sampled; a completion's score is the judge model's probability of
replying "Yes" rather than "No" when asked whether it is correct, P(True) of Kadavath et al. 2022
("Language Models (Mostly) Know What They Know"). It needs no rating format, so even a small
model can judge itself with it.
"""

from __future__ import annotations

import re
import string
from importlib import resources
from pathlib import Path
from typing import Sequence

from ratchet.generate.base import Sampler, SamplingParams
from ratchet.judge.base import Judgment
from ratchet.judge.prompt import question_text

TEMPLATES = {"pairwise": "pairwise.txt", "pointwise": "pointwise.txt", "yes_no": "yes_no.txt"}
_PLACEHOLDERS = {"pairwise": ("question", "answer_a", "answer_b"), "pointwise": ("question", "answer"),
                 "yes_no": ("question", "answer")}
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
DEFAULT_PARAMS = SamplingParams(k=1, temperature=0.0, max_new_tokens=512)


def load_template(name_or_path: str, kind: str) -> string.Template:
    """A bundled template by name, or a file; it must use every placeholder of its ``kind``."""
    if name_or_path in TEMPLATES:
        text = resources.files("ratchet.judge").joinpath("templates", TEMPLATES[name_or_path]).read_text()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"judge template {name_or_path!r}: neither {list(TEMPLATES)} nor a file")
        text = path.read_text()
    template = string.Template(text)
    missing = [p for p in _PLACEHOLDERS[kind] if f"${p}" not in text and f"${{{p}}}" not in text]
    if missing:
        raise ValueError(f"judge template {name_or_path!r} lacks placeholder(s) {['$' + m for m in missing]}")
    return template


def parse_verdict(text: str) -> str | None:
    """"A", "B", "C" (tie) from the last ``[[X]]`` in the judge's text; None if there is none."""
    found = _VERDICT.findall(text)
    return found[-1] if found else None


def combine_orders(first: str | None, swapped: str | None) -> float:
    """Outcome for answer 1, from the verdict with it shown as A and the one with it shown as B."""
    if first == "A" and swapped == "B":
        return 1.0
    if first == "B" and swapped == "A":
        return 0.0
    return 0.5


class PairwiseJudge:
    def __init__(self, sampler: Sampler, params: SamplingParams = DEFAULT_PARAMS, template: str = "pairwise"):
        self.sampler, self.params = sampler, params
        self.template = load_template(template, "pairwise")

    def _ask(self, question: str, answer_a: str, answer_b: str) -> list[dict]:
        text = self.template.substitute(question=question, answer_a=answer_a, answer_b=answer_b)
        return [{"role": "user", "content": text}]

    def compare(self, question: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """For each (x, y): 1.0 if x is better in both orders, 0.0 if y is, else 0.5.
        One sampler call for all pairs and both orders."""
        prompts = []
        for x, y in pairs:
            prompts += [self._ask(question, x, y), self._ask(question, y, x)]
        replies = self.sampler.sample(prompts, self.params) if prompts else []
        verdicts = [parse_verdict(samples[0].text) if samples else None for samples in replies]
        return [combine_orders(verdicts[2 * i], verdicts[2 * i + 1]) for i in range(len(pairs))]

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        n = len(completions)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        outcomes = self.compare(question_text(prompt), [(completions[i], completions[j]) for i, j in pairs])
        wins, games = [0.0] * n, [0] * n
        for (i, j), outcome in zip(pairs, outcomes):
            wins[i] += outcome
            wins[j] += 1.0 - outcome
            games[i] += 1
            games[j] += 1
        return [Judgment(score=wins[i] / games[i] if games[i] else 0.5, correct=None,
                         detail={"wins": wins[i], "comparisons": games[i]}) for i in range(n)]


class PointwiseJudge:
    """Rates each completion 1-10; an unrated completion scores 0, below the scale."""

    def __init__(self, sampler: Sampler, params: SamplingParams = DEFAULT_PARAMS, template: str = "pointwise",
                 scale: tuple[float, float] = (1.0, 10.0)):
        self.sampler, self.params, self.scale = sampler, params, scale
        self.template = load_template(template, "pointwise")

    def rating(self, text: str) -> float | None:
        found = _RATING.findall(text)
        value = float(found[-1]) if found else None
        return value if value is not None and self.scale[0] <= value <= self.scale[1] else None

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        question = question_text(prompt)
        prompts = [[{"role": "user", "content": self.template.substitute(question=question, answer=c)}]
                   for c in completions]
        replies = self.sampler.sample(prompts, self.params) if prompts else []
        out = []
        for samples in replies:
            ratings = [r for r in (self.rating(s.text) for s in samples) if r is not None]
            replies = [s.text[:200] for s in samples]  # kept, so an unparsed or odd rating can be read
            if not ratings:
                out.append(Judgment(score=0.0, correct=None,
                                    detail={"error": "no rating in the judge's reply", "replies": replies}))
                continue
            out.append(Judgment(score=sum(ratings) / len(ratings), correct=None,
                                detail={"ratings": ratings, "replies": replies}))
        return out


class YesNoJudge:
    """Scores each completion P(Yes) / (P(Yes) + P(No)) under the judge model, asked by ``template``
    whether the answer is correct; ``detail`` keeps both log-probabilities."""

    def __init__(self, model, tokenizer, template: str = "yes_no", batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.template = load_template(template, "yes_no")

    def judge(self, prompt: dict, completions: Sequence[str]) -> list[Judgment]:
        import math

        from ratchet.generate.score import sequence_logprobs  # torch; imported when judging

        question = question_text(prompt)
        asks = [[{"role": "user", "content": self.template.substitute(question=question, answer=c)}]
                for c in completions]
        # the reply's first words, not a finished turn: no end-of-turn token after "Yes" / "No"
        scored = sequence_logprobs(self.model, self.tokenizer, [(a, w, False) for w in ("Yes", "No") for a in asks],
                                   batch_size=self.batch_size)
        yes, no = scored[:len(asks)], scored[len(asks):]
        return [Judgment(score=1.0 / (1.0 + math.exp(n - y)), correct=None, detail={"logp_yes": y, "logp_no": n})
                for (y, _), (n, _) in zip(yes, no)]

