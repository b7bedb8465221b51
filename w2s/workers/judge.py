"""Judge actors: score answers (score judges) or write verdicts on pairs of answers (a local pairwise judge)."""

from __future__ import annotations

from typing import Any

from w2s.cluster import RoleActorMixin
from w2s.workers import EngineTurns
from w2s.workers.dispatch import Dispatch, register
from w2s.workers.requests import Complete, Score


def judge_config(cfg: Any) -> Any:
    """A typed :class:`~w2s.config.schema.JudgeConfig` from what crossed the actor boundary (a misspelt field is an
    error here, not a silent default)."""
    from omegaconf import OmegaConf

    from w2s.config.schema import JudgeConfig

    return OmegaConf.merge(OmegaConf.structured(JudgeConfig), cfg)


class LocalChatModel:
    """A chat model on this process's device, for a pairwise judge with ``backend: local``."""

    def __init__(self, cfg: Any):
        from omegaconf import OmegaConf

        from w2s.config.schema import ModelConfig
        from w2s.eval.device import pick_device
        from w2s.generation import make_generator

        self.cfg = cfg
        model_cfg = OmegaConf.structured(ModelConfig(path=cfg.model, dtype=cfg.dtype,
                                                     trust_remote_code=bool(cfg.trust_remote_code),
                                                     prompt_template=cfg.prompt_format if cfg.prompt_format != "chat"
                                                     else ""))
        self.template = model_cfg.prompt_template
        self.generator = make_generator(cfg.model, model_cfg, cfg.generate)
        self.device = str(getattr(self.generator, "device", "")) or pick_device()

    def complete(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        from w2s.generation.chat import render_conversation

        prompts = []
        for messages in conversations:
            if self.template:  # a prompt template has one user turn: the system text goes first in it
                messages = [{"role": "user", "content": "\n\n".join(m["content"] for m in messages)}]
            prompts.append(render_conversation(self.generator.tokenizer, messages, template=self.template,
                                               key="eval.judges.<name>.prompt_format"))
        seed = self.cfg.generate.seed if self.cfg.generate.seed is not None else 0
        return [g.text for g in self.generator.generate(prompts, self.cfg.generate, seed=int(seed))]

    def close(self) -> None:
        self.generator.close()


class JudgeWorker(EngineTurns, RoleActorMixin):
    """A score judge's model, or a local pairwise judge's chat model (whose engine takes turns on a shared GPU as the
    generator's does: checked after every wake-up against its answer before it slept)."""

    def __init__(self, judge_cfg: Any):
        from w2s.eval.judges import make_judge

        cfg = judge_config(judge_cfg)
        # Ray exposes the GPU this actor reserved (cluster.judge) through CUDA_VISIBLE_DEVICES: the judge runs there.
        self.chat = LocalChatModel(cfg) if cfg.kind == "pairwise" else None
        self.judge = None if self.chat else make_judge(cfg)

    @register(Dispatch.ALL)
    def device(self) -> str:
        """Where the judge model runs (``cuda`` or ``cpu``)."""
        return self.judge.device if self.judge else self.chat.device

    @register(Dispatch.ROWS)
    def score(self, request: Score) -> list[float]:
        """Score (prompt, answer, reference) triples; higher is better."""
        rows = request.triples
        return self.judge.score([p for p, _, _ in rows], [a for _, a, _ in rows], [r for _, _, r in rows])

    @register(Dispatch.ROWS)
    def complete(self, request: Complete) -> list[str]:
        """The local judge model's answers to rendered judge prompts (chat messages)."""
        return self.chat.complete(request.conversations)

    def _engine(self) -> Any:
        return self.chat.generator

    def _tolerance(self) -> float:
        return float(self.chat.cfg.generate.refit_tolerance)

    @register(Dispatch.ALL)
    def sleep(self, discard: bool = False) -> bool:
        """Another role takes the GPU this actor shares: a local chat judge's engine sleeps (its probe answer kept
        first), a score model's weights go to host memory (a judge's model is never replaced: kept either way)."""
        if self.chat:
            return super().sleep()
        if getattr(self.judge, "model", None) is None or not str(self.judge.device).startswith("cuda"):
            return False
        import torch

        self.judge.model.to("cpu")
        torch.cuda.empty_cache()
        return True

    @register(Dispatch.ALL)
    def wake_up(self) -> dict[str, Any]:
        """This judge's turn again: a chat judge's engine wakes and answers the probe as before it slept (a
        mismatch raises); a score model's weights return to the GPU."""
        if self.chat:
            return super().wake_up()
        if getattr(self.judge, "model", None) is not None and str(self.judge.device).startswith("cuda"):
            self.judge.model.to(self.judge.device)
        return {"checked": False, "mean_abs_diff": None}

    @register(Dispatch.ALL)
    def close(self) -> None:
        if self.chat:
            self.chat.close()
