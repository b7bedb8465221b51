"""The Aligner's representation, read and used (``w2s interpret``), in a corrector actor: the forward hooks need the
model in the process that runs it (on transformers), so the model-bound half of :mod:`w2s.interpret.pipeline` runs
here and the driver writes the files, plots and report."""

from __future__ import annotations

from typing import Any

from w2s.workers import typed
from w2s.workers.corrector import CorrectorWorker
from w2s.workers.dispatch import Dispatch, register


class InterpreterWorker(CorrectorWorker):
    """A corrector actor holding one Aligner (or the base model it was trained from) with the interpret decoding on
    transformers; it starts, sleeps, wakes and closes as the corrector does."""

    @register(Dispatch.ALL)
    def lat(self, pairs: list[tuple[str, str]], cfg: dict[str, Any]) -> dict[str, Any]:
        """The stimuli (the Aligner's corrections of ``pairs``), the reading vectors found on half of them with the
        held-out separation per layer, and the two LAT scans (see :func:`w2s.interpret.pipeline.run_lat`)."""
        from w2s.config.schema import W2SConfig
        from w2s.console import say
        from w2s.interpret.pipeline import build_stimuli, find_reading, lat_cases

        whole = typed(W2SConfig, cfg)
        stimuli = build_stimuli(self.corrector, pairs, whole, say)
        model = self.corrector.generator.model
        reading = find_reading(model, stimuli, whole)
        return {"reading": reading, "cases": lat_cases(model, stimuli, reading, int(whole.interpret.tokens)),
                "copied": sum(s.copied for s in stimuli)}

    @register(Dispatch.ALL)
    def control(self, pairs: list[tuple[str, str]], directions: dict[int, Any], alphas: list[float],
                seed: int) -> list[dict[str, Any]]:
        """Corrections with ``alpha`` x the direction added at its layer, for each alpha (see
        :func:`w2s.interpret.control.control_grid`)."""
        from w2s.console import say
        from w2s.interpret.control import control_grid

        return control_grid(self.corrector, pairs, directions, alphas, seed=seed, progress=say)
