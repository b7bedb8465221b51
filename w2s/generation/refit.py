"""Is the engine computing with the weights it was given? A cheap check after every in-place reload and wake-up.

NeMo-RL's ``refit_verifier`` idea: the trainer, right after saving a checkpoint, computes the log-probabilities
of a few fixed tokens (:data:`PROBE_TEXT`) with the model it saved and writes them beside the weights
(:data:`PROBE_FILE`); after an engine takes those weights in place it computes the same log-probabilities and
compares (:func:`verify`). A reload that copied nothing, copied into the wrong tensors or left a stale cache
behind shows as a difference far above the tolerance; different kernels and dtypes (vLLM against DeepSpeed, bf16)
stay well below it. A wake-up is checked against the engine's own answer before it slept (:class:`WakeCheck`).

The measure is the mean over the probe's tokens of |engine log p - trainer log p| (nats);
``SamplingConfig.refit_tolerance`` bounds it (0: no check).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from w2s.errors import W2SError

PROBE_FILE = "w2s_refit_probe.json"
# Ordinary words, digits and punctuation: tokens every tokenizer has, few enough to cost one short forward pass.
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. Counting: one, two, three, 4, 5, 6!"
MAX_PROBE_TOKENS = 32


class RefitError(W2SError):
    """The engine's log-probabilities differ from the expected ones by more than the tolerance."""


def probe_ids(tokenizer: Any) -> list[int]:
    """The probe's token ids (at most :data:`MAX_PROBE_TOKENS`), led by the BOS token when the tokenizer has one."""
    ids = list(tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"])[:MAX_PROBE_TOKENS]
    bos = getattr(tokenizer, "bos_token_id", None)
    return ([int(bos)] if bos is not None else []) + [int(i) for i in ids]


def hf_token_logprobs(model: Any, ids: list[int]) -> list[float]:
    """log p(ids[t] | ids[:t]) for t >= 1 from a transformers causal LM (float32 log-softmax of its logits)."""
    import torch

    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, x[0, 1:, None].to(logits.device))[:, 0]
    return [float(v) for v in logp.cpu()]


def write_probe(model_dir: str | os.PathLike, ids: list[int], logprobs: list[float], dtype: str) -> None:
    """Keep the trainer's log-probabilities of the probe beside the weights it saved."""
    record = {"text": PROBE_TEXT, "ids": ids, "logprobs": logprobs, "dtype": dtype}
    Path(model_dir, PROBE_FILE).write_text(json.dumps(record), encoding="utf-8")


def read_probe(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(model_dir, PROBE_FILE)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def compare(expected: list[float], got: list[float], tolerance: float, what: str) -> float:
    """The mean |difference|; raises :class:`RefitError` with both sets of numbers when it exceeds ``tolerance``."""
    if len(expected) != len(got) or not expected:
        raise RefitError(f"{what}: {len(got)} log-probabilities against {len(expected)} expected")
    diff = sum(abs(a - b) for a, b in zip(expected, got)) / len(expected)
    if tolerance > 0 and diff > tolerance:
        show = lambda xs: "[" + ", ".join(f"{x:.4f}" for x in xs[:6]) + (", ...]" if len(xs) > 6 else "]")  # noqa: E731
        raise RefitError(f"{what}: the engine's log-probabilities of the {len(got)} probe tokens differ from the "
                         f"expected ones by {diff:.4f} nats on average (tolerance {tolerance:g}): engine {show(got)}, "
                         f"expected {show(expected)}. The weights in the engine are not those of the checkpoint: "
                         "stop and look at the reload (or raise refit_tolerance if only the kernels differ)")
    return diff


def verify(engine: Any, model_dir: str, tolerance: float) -> dict[str, Any]:
    """After ``engine`` (a :class:`w2s.generation.Generator`) took ``model_dir``'s weights in place: its probe
    log-probabilities against the trainer's. A checkpoint without a probe (not written by w2s's trainer) is not
    checked, and the answer says so."""
    probe = read_probe(model_dir)
    if tolerance <= 0:
        return {"checked": False, "why": "refit_tolerance=0"}
    if probe is None:
        return {"checked": False, "why": f"no {PROBE_FILE} in {model_dir}"}
    got = engine.token_logprobs(probe["ids"])
    diff = compare(probe["logprobs"], got, tolerance, f"refit check of {model_dir}")
    return {"checked": True, "mean_abs_diff": diff, "tokens": len(got), "tolerance": tolerance}


class WakeCheck:
    """An engine's probe log-probabilities before it sleeps, compared after it wakes up (same weights: equal)."""

    def __init__(self, engine: Any, tolerance: float):
        self.engine, self.tolerance = engine, tolerance
        self.before: list[float] | None = None
        self.ids: list[int] = []

    def before_sleep(self) -> None:
        if self.tolerance > 0:
            self.ids = probe_ids(self.engine.tokenizer)
            self.before = self.engine.token_logprobs(self.ids)

    def after_wake(self) -> float | None:
        if self.before is None:
            return None
        before, self.before = self.before, None
        return compare(before, self.engine.token_logprobs(self.ids), self.tolerance, "after waking up")
