"""The generator role: the strong policy's engine (vLLM or transformers), kept for the whole run.

After a train stage it takes the new policy's weights in place (the policy's model slot, lineage ``policy``) and is
started afresh only when the new checkpoint is another architecture. Other models (PopAlign's model ranks) get
slots of their own lineage.
"""

from __future__ import annotations

from typing import Any

from w2s.config.plain import to_plain
from w2s.roles.groups import HeldGroup, ModelSlot, RoleGroups, slot_key, without_path
from w2s.workers.generator import GeneratorWorker
from w2s.workers.requests import Generate, RenderConversations, SampleChat

# The sampling fields an engine is started with; the rest (temperature, lengths, ...) are per call.
ENGINE_FIELDS = ("backend", "tensor_parallel_size", "gpu_memory_utilization", "kv_cache_gib", "enforce_eager")


def engine_sampling(*sections: Any) -> dict[str, Any]:
    """The sampling config an engine serving every one of ``sections`` starts with: the first section's, with
    the longest prompt and answer of all (vLLM fixes its context length when it starts)."""
    plain = [to_plain(s) for s in sections]
    out = dict(plain[0])
    for name in ("max_prompt_tokens", "max_new_tokens"):
        out[name] = max(int(p.get(name) or 0) for p in plain)
    return out


def engine_fields(sampling: Any) -> dict[str, Any]:
    s = to_plain(sampling)
    return {k: s.get(k) for k in ENGINE_FIELDS}


class GeneratorService:
    def __init__(self, groups: RoleGroups):
        self.groups, self.cfg = groups, groups.cfg

    def hold(self, model_path: str, model_cfg: Any, sampling: Any, *, lineage: str = "policy") -> HeldGroup:
        """The generator group holding ``model_path``. ``lineage``: models that replace one another in place
        (the round loop's policy); another lineage gets its own engine. ``sampling``: the engine's settings."""
        key = slot_key(role="generator", lineage=lineage, model=without_path(model_cfg),
                       engine=engine_fields(sampling))
        slot = ModelSlot("generator", key, GeneratorWorker.load_weights, GeneratorWorker,
                         (to_plain(model_cfg), to_plain(sampling), self.groups.shares_gpu("generator")))
        return self.groups.hold(slot, model_path)

    def replaced_next(self, lineage: str = "policy") -> None:
        """The model of ``lineage`` gets new weights before it answers again (the round loop's policy, once the
        round's answers are in): sharing its GPUs, it sleeps without keeping them (:meth:`RoleGroups.replaced_next`)."""
        self.groups.replaced_next("generator", lineage)

    def generate(self, model_path: str, prompts: list[str], sampling: Any, seed: int, *,
                 what: str) -> tuple[list[Any], dict[str, str]]:
        """The policy ``model_path``'s answers to user prompts (``sampling``: this call's decoding), and the engine
        that served them. The round loop's answers (``generate``) and evaluation answers (``eval.generate``)
        share one engine when their engine settings agree."""
        h = self.hold(model_path, self.cfg.model.strong, self._policy_engine(sampling))
        with self.groups.timed_work():
            outs = h.group.call(GeneratorWorker.generate, Generate(prompts=prompts, seed=seed,
                                                                   sampling=to_plain(sampling)), what=what)
        if not h.info:
            h.info = h.group.call(GeneratorWorker.engine)[0]
        return outs, h.info

    def _policy_engine(self, sampling: Any) -> Any:
        cfg = self.cfg
        shared = [cfg.generate] + ([cfg.eval.generate] if "eval" in cfg and cfg.eval.enabled else [])
        if all(engine_fields(s) == engine_fields(sampling) for s in shared):
            return engine_sampling(*shared)
        return sampling

    def sample_chat(self, model_path: str, model_cfg: Any, conversations: list[tuple[list[dict], int]],
                    sampling: Any, *, what: str) -> tuple[list[str], list[Any]]:
        """Whole conversations answered by ``model_path`` (its own engine), each with its seed: the rendered
        prompts and the generations."""
        h = self.hold(model_path, model_cfg, sampling, lineage=f"model:{model_path}")
        with self.groups.timed_work():
            rendered = h.group.call(GeneratorWorker.render_conversations,
                                    RenderConversations(conversations=[c for c, _ in conversations]), what=what)
            outs = h.group.call(GeneratorWorker.sample_chat,
                                SampleChat(conversations=conversations, sampling=to_plain(sampling)), what=what)
        return rendered, outs
