"""Text comparison helpers shared by correction reports, the weak-to-strong loop and PopAlign.

Edit distances are Levenshtein distances over characters or whitespace-separated words. Word level is
the default for reports: it is what "how much did the Aligner change" means to a reader, and it keeps
the quadratic cost small on long answers.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections.abc import Hashable, Iterable, Sequence

_WS = re.compile(r"\s+")


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1) between two sequences."""
    if a == b:
        return 0
    # Strip the common prefix and suffix: corrections often keep most of the answer.
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        append = current.append
        for j, cb in enumerate(b, start=1):
            append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def tokens(text: str, unit: str = "word") -> Sequence[str]:
    """The units edit distance counts: characters (``char``) or whitespace-separated words (``word``)."""
    if unit == "char":
        return text
    if unit == "word":
        return text.split()
    raise ValueError(f"unit must be 'char' or 'word', got {unit!r}")


def edit_distance(a: str, b: str, *, unit: str = "word") -> int:
    """Levenshtein distance between two texts, counted in ``unit`` (``word`` or ``char``)."""
    return levenshtein(tokens(a, unit), tokens(b, unit))


def normalized_edit_distance(a: str, b: str, *, unit: str = "word") -> float:
    """Edit distance divided by the longer text's length in ``unit``: 0 for equal texts, 1 for disjoint ones."""
    ta, tb = tokens(a, unit), tokens(b, unit)
    longest = max(len(ta), len(tb))
    return levenshtein(ta, tb) / longest if longest else 0.0


def normalize_text(text: str) -> str:
    """Casefolded, NFKC-normalised text with runs of whitespace collapsed: the key for duplicate checks."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def duplicate_groups(texts: Iterable[str]) -> list[list[int]]:
    """Groups (of size >= 2) of indices whose texts are equal after :func:`normalize_text`."""
    seen: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        seen.setdefault(normalize_text(text), []).append(i)
    return [group for group in seen.values() if len(group) > 1]


def distance_stats(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, min, max and 90th percentile of a list of numbers (zeros when empty)."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0, "p90": 0.0}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"mean": float(statistics.fmean(ordered)), "median": float(statistics.median(ordered)),
            "min": float(ordered[0]), "max": float(ordered[-1]), "p90": float(p90)}
