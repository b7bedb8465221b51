"""How a call on a role group reaches its actors, declared once beside the worker method (verl's ``@register``).

A driver never names a worker method as a string: it passes the method itself, ``group.call(GeneratorWorker.generate,
Generate(...))``, and :meth:`w2s.cluster.RoleGroup.call` reads here how to spread it over the ranks.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Dispatch(enum.Enum):
    ALL = "all"  # the same call on every rank; one result per rank, in rank order
    ROWS = "rows"  # the request's rows split into contiguous shards, one per rank; results concatenated in row order


def register(mode: Dispatch) -> Callable[[F], F]:
    """Declare how ``group.call(method, ...)`` spreads a call of the decorated worker method over the ranks."""

    def mark(method: F) -> F:
        method.dispatch = mode  # type: ignore[attr-defined]
        return method

    return mark


def dispatch_of(method: Callable[..., Any]) -> Dispatch:
    mode = getattr(method, "dispatch", None)
    if not isinstance(mode, Dispatch):
        raise TypeError(f"{method.__qualname__} declares no dispatch: decorate it with @register(Dispatch...)")
    return mode


def shard(request: Any, ranks: int) -> list[Any]:
    """``request`` split for ``ranks`` ranks: its rows (the field its class names in ``rows``) in contiguous
    shards, every other field the same."""
    rows = getattr(request, request.rows)
    bounds = [(len(rows) * i // ranks, len(rows) * (i + 1) // ranks) for i in range(ranks)]
    return [dataclasses.replace(request, **{request.rows: rows[lo:hi]}) for lo, hi in bounds]
