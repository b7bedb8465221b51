"""Every configured judge (``eval.judges``) over one or more comparisons of two answer sets, paired by prompt id.

Score judges (``embedding``, ``reward-model``, ``cost-model``) score each answer once; a prompt is won when the
candidate's score beats the baseline's by more than ``tie_margin`` (a cost model: when its cost is lower).
Pairwise judges (``pairwise``) judge each pair, through an endpoint from this process or through a local model in
the judge role's workers. Where workers run is the caller's business: ``open_workers(name, cfg)`` returns a context
manager yielding an object with ``score(triples, what=...)`` and ``complete(conversations, what=...)``: the role
services' judge group (:class:`w2s.roles.judge.JudgeGroup`), in a round as in ``w2s eval``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2s.eval.stats import Summary, summarize
from w2s.eval.verdicts import LOSS, TIE, WIN

SCORE_KINDS = ("embedding", "reward-model", "cost-model")
DEFAULT_DIMENSION = {"embedding": "reference match", "reward-model": "helpfulness",
                     "cost-model": "harmlessness"}


@dataclass
class EvalItem:
    id: str
    prompt: str
    reference: str = ""
    category: str = ""

    @classmethod
    def of(cls, prompts: Sequence[Any]) -> list[EvalItem]:
        """The items of prompts read by :func:`w2s.data.prompts.read_prompts`."""
        return [cls(p.id, p.prompt, p.reference, p.category) for p in prompts]


@dataclass
class ComparisonResult:
    outcomes: dict[str, dict[str, str | None]] = field(default_factory=dict)  # judge -> prompt id -> outcome
    judgements: list[dict[str, Any]] = field(default_factory=list)  # pairwise judges' raw outputs, for audit
    pending: dict[str, Callable[[], Summary]] = field(default_factory=dict, repr=False)  # judge -> its summary

    @functools.cached_property
    def summaries(self) -> dict[str, Summary]:
        """Each judge's statistics, computed when first asked for: callers :meth:`write` the verdicts first, so
        that a summary that fails loses no judging."""
        return {name: summary() for name, summary in self.pending.items()}

    def write(self, out_dir: Path) -> None:
        """``outcomes.jsonl`` (judge, prompt id, outcome) and, for pairwise judges, ``judgements.jsonl``."""
        from w2s.data.files import write_jsonl

        out_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(out_dir / "outcomes.jsonl", [{"judge": j, "id": i, "outcome": o}
                                                 for j, per in self.outcomes.items() for i, o in per.items()])
        if self.judgements:
            write_jsonl(out_dir / "judgements.jsonl", self.judgements)


def enabled_judges(judges: Mapping[str, Any]) -> dict[str, Any]:
    return {name: cfg for name, cfg in judges.items() if cfg.enabled}


def fingerprint(cfg: Any) -> str:
    """What decides a judge's scores (its whole config), short: stored with each score so that a changed judge
    under the same name scores again."""
    import hashlib
    import json

    from w2s.config.plain import to_plain

    return hashlib.sha256(json.dumps(to_plain(cfg), sort_keys=True, default=str).encode()).hexdigest()[:12]


def dimension(cfg: Any) -> str:
    if cfg.dimension:
        return cfg.dimension
    if cfg.kind == "pairwise":
        from w2s.eval.presets import judge_prompt

        return judge_prompt(cfg).dimension
    return DEFAULT_DIMENSION[cfg.kind]


def score_answers(judges: Mapping[str, Any], items: Sequence[EvalItem], *answer_sets: Mapping[str, str],
                  open_workers: Callable[[str, Any], Any]) -> list[dict[str, dict[str, float]]]:
    """Each score judge's score of each answer of each set (each judge's workers start once for all sets):
    per set, judge -> prompt id -> score (as the model gives it)."""
    out: list[dict[str, dict[str, float]]] = [{} for _ in answer_sets]
    for name, cfg in enabled_judges(judges).items():
        if cfg.kind not in SCORE_KINDS:
            continue
        rows = [(it.prompt, answers[it.id], it.reference) for answers in answer_sets for it in items]
        with open_workers(name, cfg) as w:
            scores = w.score(rows, what=f"judge {name}")
        for k in range(len(answer_sets)):
            out[k][name] = {it.id: float(s) for it, s in zip(items, scores[k * len(items):(k + 1) * len(items)])}
    return out


def score_outcome(candidate: float, baseline: float, *, margin: float, lower_is_better: bool) -> str:
    diff = (baseline - candidate) if lower_is_better else (candidate - baseline)
    return WIN if diff > margin else LOSS if diff < -margin else TIE


class WorkerChat:
    """A local judge model behind the workers' ``complete`` method, as a :class:`~w2s.eval.pairwise.ChatBackend`.
    The workers start on the first request: a rerun whose judgements are all cached starts none."""

    def __init__(self, open_workers: Callable[[], Any], identity: dict[str, Any], stack: contextlib.ExitStack):
        self.open_workers, self.identity, self.stack = open_workers, identity, stack
        self.workers: Any = None

    def complete(self, conversations: Sequence[list[dict[str, str]]], on_done: Any = None) -> list[str]:
        if self.workers is None:
            self.workers = self.stack.enter_context(self.open_workers())
        texts = self.workers.complete(list(conversations), what="pairwise judge")
        for i, t in enumerate(texts):
            if on_done is not None:
                on_done(i, t)
        return texts


@contextlib.contextmanager
def _chat_backend(name: str, cfg: Any, open_workers: Callable[[str, Any], Any]):
    from w2s.config.plain import to_plain
    from w2s.generation.sampling import resolve_sampling

    if cfg.backend == "endpoint":
        from w2s.eval.endpoint import ChatEndpoint

        s = resolve_sampling(cfg.generate)
        chat = ChatEndpoint(cfg.endpoint, temperature=s["temperature"], max_tokens=int(s["max_new_tokens"]),
                            seed=s["seed"])
        try:
            yield chat
        finally:
            chat.close()
    else:
        with contextlib.ExitStack() as stack:
            yield WorkerChat(lambda: open_workers(name, cfg), {"model": cfg.model, "generate": to_plain(cfg.generate)},
                             stack)


def compare(judges: Mapping[str, Any], items: Sequence[EvalItem], comparisons: Mapping[str, tuple[dict, dict]], *,
            scores: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
            open_workers: Callable[[str, Any], Any], cache_dir: Path, seed: int = 0,
            say: Callable[[str], None] = print) -> dict[str, ComparisonResult]:
    """Judge each comparison ``label -> (candidate answers, baseline answers)`` (answers: prompt id -> text).

    ``scores[label]`` holds ``(candidate scores, baseline scores)`` per score judge when the caller computed them
    already (the loop caches them per policy); otherwise they are computed here.
    """
    from w2s.eval.cache import JudgementCache
    from w2s.eval.pairwise import Pair, PairwiseJudge
    from w2s.eval.presets import judge_prompt

    active = enabled_judges(judges)
    categories = {it.id: it.category for it in items if it.category}
    results = {label: ComparisonResult() for label in comparisons}
    for name, cfg in active.items():
        if cfg.kind in SCORE_KINDS:
            for label, (cand, base) in comparisons.items():
                given = (scores or {}).get(label, {}).get(name)
                if given is None:
                    cand_scores, base_scores = score_answers({name: cfg}, items, cand, base, open_workers=open_workers)
                    given = (cand_scores[name], base_scores[name])
                cs, bs = given
                outcomes = {it.id: score_outcome(cs[it.id], bs[it.id], margin=float(cfg.tie_margin),
                                                 lower_is_better=cfg.kind == "cost-model") for it in items}
                results[label].outcomes[name] = outcomes
                results[label].pending[name] = functools.partial(
                    summarize, name, dimension(cfg), outcomes, candidate=cand, baseline=base, categories=categories,
                    seed=seed)
            continue
        cache_dir.mkdir(parents=True, exist_ok=True)
        with JudgementCache(cache_dir / f"{name}.jsonl") as cache, _chat_backend(name, cfg, open_workers) as chat:
            judge = PairwiseJudge(name, judge_prompt(cfg), chat, both_orders=bool(cfg.both_orders), cache=cache,
                                  seed=seed)
            for label, (cand, base) in comparisons.items():
                before = len(cache)
                judged = judge.judge([Pair(it.id, it.prompt, cand[it.id], base[it.id]) for it in items])
                outcomes = {j.id: j.outcome for j in judged}
                results[label].outcomes[name] = outcomes
                results[label].pending[name] = functools.partial(
                    summarize, name, dimension(cfg), outcomes, candidate=cand, baseline=base, categories=categories,
                    consistency={j.id: j.consistent for j in judged}, seed=seed)
                results[label].judgements += [{"judge": name, "id": j.id, "outcome": j.outcome, **o}
                                              for j in judged for o in j.judgements]
                say(f"  judge {name}: {len(cache) - before} new judgement(s), {len(judged)} pair(s) ({label})")
    return results
