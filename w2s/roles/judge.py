"""The judge role: score models and local pairwise judges, each kept for the run once started."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from w2s.cluster import RoleGroup
from w2s.config.plain import to_plain
from w2s.console import say
from w2s.roles.groups import HeldGroup, RoleGroups, slot_key
from w2s.workers.judge import JudgeWorker
from w2s.workers.requests import Complete, Score


class JudgeGroup:
    """One judge's actors, as :mod:`w2s.eval.panel` asks them: scores of triples, completions of judge prompts."""

    def __init__(self, group: RoleGroup):
        self.group = group

    def score(self, triples: list[tuple[str, str, str]], *, what: str) -> list[float]:
        return self.group.call(JudgeWorker.score, Score(triples=triples), what=what)

    def complete(self, conversations: list[list[dict[str, str]]], *, what: str) -> list[str]:
        return self.group.call(JudgeWorker.complete, Complete(conversations=conversations), what=what)


class JudgeService:
    def __init__(self, groups: RoleGroups):
        self.groups = groups

    @contextlib.contextmanager
    def open(self, name: str, judge_cfg: Any) -> Iterator[JudgeGroup]:
        """The judge group holding ``judge_cfg``'s model (as :mod:`w2s.eval.panel`'s ``open_workers`` wants it:
        a context manager; the group outlives it)."""
        plain = to_plain(judge_cfg)
        key = slot_key(role="judge", judge=plain)

        def start() -> HeldGroup:
            say(f"judge {name}: {plain.get('kind')}")
            return self.groups.start("judge", key, JudgeWorker, plain)

        h = self.groups.use("judge", key, start)
        with self.groups.timed_work():
            yield JudgeGroup(h.group)
