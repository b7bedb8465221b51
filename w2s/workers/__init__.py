"""Ray role actors. Each exposes a few coarse methods; the driver (w2s.roles, w2s.controller) owns all data flow."""

from __future__ import annotations

from typing import Any

from w2s.workers.dispatch import Dispatch, register


def typed(schema: type, data: Any) -> Any:
    """A config section that crossed the actor boundary, back as its schema's typed config: a misspelt or unknown
    field is an error here rather than a silent default."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.structured(schema), data)


class EngineTurns:
    """Taking new weights in place and taking turns on shared GPUs, checked, for actors holding one engine
    (:class:`w2s.generation.Generator`): the generator and the corrector. Subclasses say which engine
    (:meth:`_engine`) and which tolerance (:meth:`_tolerance`, ``refit_tolerance`` of their sampling section)."""

    _wake_check: Any = None

    def _engine(self) -> Any:
        raise NotImplementedError

    def _tolerance(self) -> float:
        raise NotImplementedError

    def _take_in_place(self, path: str) -> dict[str, Any]:
        """``path``'s weights into the running engine, then the refit check (:func:`w2s.generation.refit.verify`:
        a mismatch raises, naming both sets of numbers)."""
        import time

        from w2s.generation.refit import verify

        t0 = time.perf_counter()
        self._engine().load_weights(path)  # (wakes an engine asleep: the refit check below replaces the wake check)
        self._wake_check = None
        seconds = time.perf_counter() - t0
        return {"loaded": True, "seconds": seconds, "refit": verify(self._engine(), path, self._tolerance())}

    @register(Dispatch.ALL)
    def sleep(self, discard: bool = False) -> bool:
        """Another role takes the GPU this actor shares: the engine's probe answer is kept, then it sleeps (see the
        engines' ``sleep``; ``discard``: its next weights are new ones); whether GPU memory was freed."""
        from w2s.generation.refit import WakeCheck

        self._wake_check = WakeCheck(self._engine(), self._tolerance())
        self._wake_check.before_sleep()
        return self._engine().sleep(discard=discard)

    @register(Dispatch.ALL)
    def wake_up(self) -> dict[str, Any]:
        """Awake again, and answering as before it slept (the probe's log-probabilities; a mismatch raises)."""
        self._engine().wake_up()
        diff = self._wake_check.after_wake() if self._wake_check is not None else None
        self._wake_check = None
        return {"checked": diff is not None, "mean_abs_diff": diff}
