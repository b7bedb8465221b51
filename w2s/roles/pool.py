"""The GPUs that colocated roles share for a run (``cluster.colocate``): placed once, on first use, and kept; which
GPUs a new group of a colocated role starts at. See :class:`w2s.placement.GpuPool` for the layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from w2s.errors import ClusterError
from w2s.placement import fits_on_nodes, gpu_pool, place_pool, remove_placement_groups


class SharedGpus:
    """The colocated roles' placement group for one run's services (none when nothing is colocated)."""

    def __init__(self, cluster_cfg: Any):
        self.pool = gpu_pool(cluster_cfg)
        self.pg: Any = None

    def shares(self, role: str) -> bool:
        return self.pool is not None and role in self.pool.roles

    def placed(self, free_per_node: Callable[[], list[dict[str, float]]], make_room: Callable[[], bool]) -> Any:
        """The pool's placement group, placed now when it is not yet (``make_room`` stops a group of its own
        placement, False when none is left, while the pool does not fit what is free)."""
        if self.pg is None:
            while not fits_on_nodes(self.pool.groups, free_per_node()) and make_room():
                pass
            self.pg = place_pool(self.pool)
        return self.pg

    def seat(self, role: str, actors: int, held: list[tuple[str, set[int], float]]) -> tuple[int, str]:
        """Where a new group of ``actors`` actors of ``role`` starts, given the role's groups in the pool (``held``:
        key, pool GPUs, last used): (the first GPU of a free span, ""), or, when no span is free, (-1, the key of the
        least recently used group, for the caller to stop before asking again)."""
        span = actors * self.pool.width(role)
        if span > len(self.pool.bundles):
            raise ClusterError(f"cluster.{role}: {actors} actor(s) x {self.pool.width(role)} GPU(s) need {span} GPUs; "
                               f"cluster.colocate shares {len(self.pool.bundles)}")
        taken = {b for _, gpus, _ in held for b in gpus}
        for offset in range(0, len(self.pool.bundles) - span + 1, span):
            if taken.isdisjoint(range(offset, offset + span)):
                return offset, ""
        return -1, min(held, key=lambda g: g[2])[0]

    def release(self) -> None:
        if self.pg is not None:
            remove_placement_groups([self.pg])
            self.pg = None
