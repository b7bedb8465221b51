"""The typed requests the driver sends to role actors: every argument named, so none can travel in the wrong place
(a DPO's policy and reference, say). Row requests name the field :class:`~w2s.workers.dispatch.Dispatch` ``ROWS``
shards over the ranks (``rows``); config sections travel as plain dicts and are re-typed in the actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

Conversation = list[dict[str, str]]


# ------------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True, kw_only=True)
class Generate:
    """The policy's answers to user prompts (chat or prompt template applied by the actor)."""

    rows: ClassVar[str] = "prompts"
    prompts: list[str]
    seed: int
    sampling: dict[str, Any] | None = None  # this call's decoding; None: the engine's own


@dataclass(frozen=True, kw_only=True)
class SampleChat:
    """Whole conversations (each ends with a user turn) answered, each with its own seed."""

    rows: ClassVar[str] = "conversations"
    conversations: list[tuple[Conversation, int]]
    sampling: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class RenderConversations:
    """Conversations rendered as the engine will see them (its chat or prompt template)."""

    rows: ClassVar[str] = "conversations"
    conversations: list[Conversation]


@dataclass(frozen=True, kw_only=True)
class Correct:
    """The Aligner's corrections of (question, answer) pairs."""

    rows: ClassVar[str] = "pairs"
    pairs: list[tuple[str, str]]
    seed: int | None = None  # None: the correct section's


@dataclass(frozen=True, kw_only=True)
class Score:
    """A score model's scores of (prompt, answer, reference) triples; higher is better."""

    rows: ClassVar[str] = "triples"
    triples: list[tuple[str, str, str]]


@dataclass(frozen=True, kw_only=True)
class Complete:
    """A local judge model's answers to judge prompts (chat messages)."""

    rows: ClassVar[str] = "conversations"
    conversations: list[Conversation]


# ------------------------------------------------------------------------------------------------- training
@dataclass(frozen=True, kw_only=True)
class Training:
    """One training on the trainer ranks (every rank runs it; rank 0's result is the answer). ``section``: the
    config section of :attr:`schema`'s type (sent as a plain dict); ``attn_implementation`` and
    ``trust_remote_code``: the strong model section's, for the trainings of :attr:`trains_policy` (the trainer
    service fills them)."""

    schema: ClassVar[str]
    trains_policy: ClassVar[bool] = True  # loads model.strong's kind of model (the Aligner reads model.aligner)
    section: Any
    output: str
    seed: int = 42
    tensorboard_dir: str | None = None
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False

    def run(self, section: Any) -> Any:
        """Call the back-end with ``section`` (typed by the actor)."""
        raise NotImplementedError

    def _model(self) -> dict[str, Any]:
        return {"seed": self.seed, "tensorboard_dir": self.tensorboard_dir,
                "attn_implementation": self.attn_implementation, "trust_remote_code": self.trust_remote_code}


@dataclass(frozen=True, kw_only=True)
class TrainSFT(Training):
    schema: ClassVar[str] = "SFTConfig"
    policy: str
    data: str
    chat: bool = True

    def run(self, section: Any) -> Any:
        from w2s.backends.openrlhf import train_sft

        return train_sft(section, self.policy, self.data, self.output, chat=self.chat, **self._model())


@dataclass(frozen=True, kw_only=True)
class TrainDPO(Training):
    schema: ClassVar[str] = "DPOConfig"
    policy: str
    reference: str  # the frozen KL anchor
    data: str
    chat: bool = True

    def run(self, section: Any) -> Any:
        from w2s.backends.openrlhf import train_dpo

        return train_dpo(section, self.policy, self.reference, self.data, self.output, chat=self.chat,
                         **self._model())


@dataclass(frozen=True, kw_only=True)
class TrainRewardModel(Training):
    schema: ClassVar[str] = "RewardModelConfig"
    base: str  # a causal LM; a value head is added
    data: str
    chat: bool = True

    def run(self, section: Any) -> Any:
        from w2s.backends.openrlhf import train_reward_model

        return train_reward_model(section, self.base, self.data, self.output, chat=self.chat, **self._model())


@dataclass(frozen=True, kw_only=True)
class TrainAligner(Training):
    """The weak Aligner (identity warm-up, then corrections); ``section`` is the whole config (it reads
    ``aligner.train``, ``model.aligner`` and ``run.seed`` itself)."""

    schema: ClassVar[str] = "W2SConfig"
    trains_policy: ClassVar[bool] = False
    progress: bool = True
    keep_warmup: bool = False

    def run(self, section: Any) -> Any:
        from w2s.aligner.train import train_aligner

        return train_aligner(section, self.output, progress=self.progress, keep_warmup=self.keep_warmup,
                             tensorboard_dir=self.tensorboard_dir)


@dataclass(frozen=True, kw_only=True)
class CheckLoads:
    """The rows of a training file OpenRLHF's dataset keeps, read as training will read them."""

    data: str
    tokenizer: str
    kind: str  # sft, dpo or rm
    chat: bool
    max_len: int
    trust_remote_code: bool = False
