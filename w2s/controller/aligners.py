"""The loop's Aligner stages: one Aligner for every round (trained first, or given), or a new Aligner each round
(``aligner.per_round``: Aligner_k trained on round k's preference data, from the base or from Aligner_{k-1}, as
the paper's §4 does). Each training is a cached stage; its held-out triples feed the Aligner's own evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from w2s.console import say
from w2s.rundir import StageRecord, source_file
from w2s.stages import ALIGNER
from w2s.workers.requests import TrainAligner

if TYPE_CHECKING:
    from w2s.controller.context import RunContext

def _train(run: RunContext, cfg: Any, inputs: dict[str, Any], round_index: int | None, what: str
           ) -> tuple[str, Path | None]:
    def work(stage_dir: Path, rec: StageRecord) -> None:
        say(f"{what}: training the weak Aligner on {cfg.aligner.train.data.path} from {cfg.model.aligner.path} (SFT "
            "through OpenRLHF)")
        result = run.services.trainer.train(TrainAligner(section=cfg, output=str(stage_dir / "model")))
        rec.outputs["model"] = stage_dir / "model"
        rec.outputs["heldout"] = Path(result["work_dir"]) / "eval.jsonl"  # whole questions, never trained on
        rec.metrics = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        for part in result.get("stages", []):  # the identity warm-up, then the corrections
            rec.metrics.update({f"{part['stage']}_{k}": part[k] for k in ("steps", "loss_first", "loss_last")
                                if part.get(k) is not None})
        say(f"{what}: " + ", ".join(f"{p['stage']} {p.get('steps')} steps, loss {p.get('loss_first', 0):.3f} -> "
                                    f"{p.get('loss_last', 0):.3f}" for p in result.get("stages", [])))

    outputs = run.rd.run(ALIGNER, round_index, inputs, work)
    return str(outputs["model"]), outputs.get("heldout")


def aligner_stage(run: RunContext, *, force: bool = False) -> tuple[str, Path | None]:
    """Train the Aligner first when asked (or forced: ``job: aligner``), cached in the run dir; else use
    model.aligner.path as it is. Returns the Aligner and its held-out triples (None when it was not trained)."""
    from w2s.assets import resolve_model_path

    cfg = run.cfg
    if not (cfg.aligner.train.enabled or force):
        return resolve_model_path(cfg.model.aligner.path, progress=say), None
    inputs = {"triples": source_file(cfg.aligner.train.data.path),
              "base": resolve_model_path(cfg.model.aligner.path, progress=say)}
    return _train(run, cfg, inputs, None, "aligner")


def round_aligner_stage(run: RunContext, k: int, previous: str) -> tuple[str, Path | None]:
    """Aligner_k: trained on ``aligner.per_round[k - 1]`` (read as ``aligner.train.data`` says), from the base
    Aligner model or from Aligner_{k-1} (``aligner.per_round_init``)."""
    from w2s.assets import resolve_model_path

    cfg = run.cfg
    data = str(cfg.aligner.per_round[k - 1])
    init = previous if (cfg.aligner.per_round_init == "previous" and previous) else \
        resolve_model_path(cfg.model.aligner.path, progress=say)
    round_cfg = OmegaConf.merge(cfg, {"aligner": {"train": {"data": {"path": data}}},
                                      "model": {"aligner": {"path": init}}})
    inputs = {"triples": source_file(data), "base": init}
    return _train(run, round_cfg, inputs, k, f"round {k} aligner")
