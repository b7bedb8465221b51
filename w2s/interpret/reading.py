"""Reading the Aligner's correction representation (App. B.6): stimuli, activations, the reading vector V_c per
layer, the LAT scan r(l, k) and a per-layer separation score.

Choices w2s makes where the paper is silent or ambiguous (all documented in the README):

* **Conditions.** The *correction* condition reads the Aligner while it writes its own correction (the prompt
  followed by the first k tokens of c); the *copy* condition reads it on the prompt followed by the first k tokens of
  the original answer a, i.e. as if it were copying. The paper's printed sets put a in A_correction and c in A_copy,
  which reads as swapped (its Fig. 4b, "copy", is the case where the output follows the answer); w2s follows the
  meaning, not the print.
* **Token.** R reads the residual stream (each decoder layer's output) at the last token of the stimulus, so one
  forward pass over prompt + continuation gives every k at once (causal attention).
* **Vector.** Paired differences H_correction - H_copy at the same k, each normalised to unit length, then the first
  principal component (of the uncentred differences: they all point from copy to correction, so their common
  direction is the signal), per layer; the sign makes the mean difference project positively, so a higher score
  means "more correction". Pairs whose correction equals the answer, and the tokens where a correction still
  repeats its answer, have no contrast and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from w2s.interpret.residual import ResidualReader


@dataclass
class Stimulus:
    question: str
    answer: str
    correction: str
    prompt_ids: list[int]
    answer_ids: list[int]
    correction_ids: list[int]

    @property
    def copied(self) -> bool:
        return self.correction.strip() == self.answer.strip()


def activations(model: Any, prompt_ids: list[int], continuation: list[int], tokens: int) -> Any:
    """Residual stream at each of the first ``tokens`` continuation tokens, per layer: a tensor [layers, k, hidden]
    (k = min(tokens, len(continuation)))."""
    import torch

    cont = continuation[:tokens]
    ids = torch.tensor([prompt_ids + cont], dtype=torch.long, device=model.device)
    with torch.inference_mode(), ResidualReader(model) as reader:
        model(input_ids=ids, use_cache=False)
    start = len(prompt_ids)
    return torch.stack([s[0, start:start + len(cont)] for s in reader.states])


def paired_differences(model: Any, stimuli: list[Stimulus], tokens: int) -> tuple[Any, Any, Any]:
    """(correction states, copy states, pair index per row), each [layers, rows, hidden] for the first two: one row
    per (pair, k) where both continuations have a k-th token, from the first token where they differ."""
    import torch

    corr, copy, owner = [], [], []
    for i, s in enumerate(stimuli):
        if s.copied:
            continue
        k = min(tokens, len(s.answer_ids), len(s.correction_ids))
        # Where the correction still repeats the answer, both stimuli are the same text: no contrast to read.
        same = next((j for j in range(k) if s.answer_ids[j] != s.correction_ids[j]), k)
        if same == k:
            continue
        corr.append(activations(model, s.prompt_ids, s.correction_ids, k)[:, same:])
        copy.append(activations(model, s.prompt_ids, s.answer_ids, k)[:, same:])
        owner += [i] * (k - same)
    if not corr:
        from w2s.errors import W2SError

        raise W2SError(f"none of the {len(stimuli)} corrections differs from its answer within the first {tokens} "
                       "tokens: nothing to contrast (use more pairs, more interpret.tokens, or an Aligner that "
                       "corrects)")
    return torch.cat(corr, dim=1), torch.cat(copy, dim=1), torch.tensor(owner)


def reading_vectors(corr: Any, copy: Any) -> tuple[Any, Any, Any]:
    """Per layer: the unit reading vector V_c [layers, hidden], the share of variance of the normalised differences
    its component explains [layers], and the mean norm of the raw differences [layers] (the scale of one step)."""
    import torch

    diffs = corr - copy                                              # [L, N, H]
    norms = diffs.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    unit = diffs / norms
    vectors, explained = [], []
    for layer in range(diffs.shape[0]):
        # Not mean-centred: every difference is oriented correction - copy, so their common direction (the mean)
        # is the signal; centring, as for randomly oriented pairs, would remove it.
        _, sv, vh = torch.linalg.svd(unit[layer], full_matrices=False)
        v = vh[0]
        if (diffs[layer] @ v).mean() < 0:  # positive means "correct"
            v = -v
        vectors.append(v)
        total = (sv ** 2).sum()
        explained.append(float((sv[0] ** 2) / total) if total > 0 else 0.0)
    return torch.stack(vectors), torch.tensor(explained), norms.squeeze(-1).mean(dim=1)


def band_vector(corr: Any, copy: Any, first: int, last: int) -> Any:
    """One reading vector for layers first..last (inclusive): the differences of the band pooled."""
    v, _, _ = reading_vectors(corr[first:last + 1].reshape(1, -1, corr.shape[-1]),
                              copy[first:last + 1].reshape(1, -1, copy.shape[-1]))
    return v[0]


def separation(vectors: Any, corr: Any, copy: Any) -> list[float]:
    """Per layer, the share of rows whose correction state projects above its paired copy state (0.5: chance)."""
    proj = ((corr - copy) * vectors[:, None, :]).sum(dim=-1)  # [L, N]
    return [float(x) for x in (proj > 0).float().mean(dim=1)]


def lat_scan(states: Any, vectors: Any) -> Any:
    """r(l, k) = activation[l, k] . V_c[l]: [layers, k]."""
    return (states * vectors[:, None, :]).sum(dim=-1)
