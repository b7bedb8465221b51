"""Pairwise LLM judges: the judge reads a question and two answers and names the better (or the worse) one.

Each pair is judged in both orders by default (candidate as responseA, then as responseB): the paper does not
control for position bias, w2s does. Orders that disagree make a tie and lower the reported position-consistency
rate. Two identical answers are a tie without a judgement. With ``both_orders=false`` the paper's single
judgement is made, the candidate's position drawn per prompt from the seed so that neither position is favoured
on average.

The judge model is behind a :class:`ChatBackend`: an OpenAI-compatible endpoint (:mod:`w2s.eval.endpoint`) or a
local model in the judge role's actors. Raw judge outputs are cached on disk (:mod:`w2s.eval.cache`) and written
beside the results, so every verdict can be audited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from w2s.eval.cache import JudgementCache, cache_key
from w2s.eval.presets import PairwisePrompt
from w2s.eval.verdicts import TIE, candidate_outcome, combine_orders, parse_verdict


class ChatBackend(Protocol):
    identity: dict[str, Any]  # what decides the judge's outputs (model, decoding), for cache keys

    def complete(self, conversations: Sequence[list[dict[str, str]]],
                 on_done: Callable[[int, str], None] | None = None) -> list[str]: ...


@dataclass
class Pair:
    id: str
    prompt: str
    candidate: str
    baseline: str


@dataclass
class PairJudgement:
    id: str
    outcome: str | None        # the candidate's win/loss/tie; None when a verdict was unparseable
    consistent: bool | None    # both orders agreed (None: one order only, or undecided)
    judgements: list[dict[str, Any]]  # per order: candidate position, verdict, the judge's text


def _candidate_first(pair_id: str, seed: int) -> bool:
    return hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()[0] % 2 == 0


class PairwiseJudge:
    def __init__(self, name: str, prompt: PairwisePrompt, backend: ChatBackend, *, both_orders: bool = True,
                 cache: JudgementCache | None = None, seed: int = 0):
        self.name, self.prompt, self.backend = name, prompt, backend
        self.both_orders, self.cache, self.seed = both_orders, cache, seed

    def _orders(self, pair: Pair) -> list[bool]:
        return [True, False] if self.both_orders else [_candidate_first(pair.id, self.seed)]

    def judge(self, pairs: Sequence[Pair]) -> list[PairJudgement]:
        """Judge every pair (cached judgements are not asked again)."""
        jobs = []  # (pair index, candidate is A, messages, cache key)
        for i, p in enumerate(pairs):
            if p.candidate.strip() == p.baseline.strip():
                continue  # the same answer twice (an Aligner that copied): a tie, without asking
            for cand_a in self._orders(p):
                a, b = (p.candidate, p.baseline) if cand_a else (p.baseline, p.candidate)
                messages = self.prompt.render(p.prompt, a, b)
                jobs.append((i, cand_a, messages, cache_key(self.backend.identity, messages)))
        texts: dict[str, str] = {}
        if self.cache is not None:
            texts = {key: t for *_, key in jobs if (t := self.cache.get(key)) is not None}
        todo = list({key: messages for _, _, messages, key in jobs if key not in texts}.items())
        if todo:
            def save(j: int, text: str) -> None:
                if self.cache is not None:
                    self.cache.put(todo[j][0], text)

            for (key, _), text in zip(todo, self.backend.complete([m for _, m in todo], on_done=save)):
                texts[key] = text
        per_pair: list[list[dict[str, Any]]] = [[] for _ in pairs]
        for i, cand_a, _, key in jobs:
            verdict = parse_verdict(texts[key])
            per_pair[i].append({"candidate": "A" if cand_a else "B", "verdict": verdict, "text": texts[key],
                                "outcome": candidate_outcome(verdict, candidate_is_a=cand_a, picks=self.prompt.picks)})
        results = []
        for p, js in zip(pairs, per_pair):
            if not js:
                results.append(PairJudgement(p.id, TIE, None, [{"candidate": None, "verdict": None, "text": "",
                                                                "outcome": TIE, "identical_answers": True}]))
                continue
            if len(js) == 2:
                outcome, consistent = combine_orders(js[0]["outcome"], js[1]["outcome"])
            else:
                outcome, consistent = js[0]["outcome"], None
            results.append(PairJudgement(p.id, outcome, consistent, js))
        return results
