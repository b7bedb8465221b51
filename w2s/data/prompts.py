"""Prompt sets: the prompts a policy answers, with an optional reference answer and category per prompt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from w2s.errors import DataError


@dataclass
class Prompt:
    id: str
    prompt: str
    reference: str = ""
    category: str = ""


def read_prompts(source: Any, *, with_reference: bool, what: str,
                 echo: Callable[[str], None] = print) -> list[Prompt]:
    """Prompts (and reference answers) from a prompt file; malformed rows name file, line and field (skipped
    rows, with ``on_bad_row=skip``, are counted through ``echo``)."""
    from w2s.data.io import read_rows

    required = [source.prompt_key] + ([source.reference_key] if with_reference else [])
    try:
        result = read_rows(source, required=required, what=what, unique_ids=True)
    except DataError as e:
        if with_reference and source.reference_key in str(e):
            raise DataError(f"{e} (the embedding judge compares answers with a reference answer per prompt; without "
                            "references, turn it off: eval.judges.similarity.enabled=false, and use another judge)"
                            ) from None
        raise
    if result.skipped:
        echo(f"{what}: skipped {result.skipped} malformed row(s) (on_bad_row=skip)")
    category_key = getattr(source, "category_key", "")
    prompts = [Prompt(str(r["id"]), r[source.prompt_key], r.get(source.reference_key, "") if with_reference else "",
                      str(r.get(category_key) or "") if category_key else "") for r in result.rows]
    if not prompts:
        raise DataError(f"{what}: {source.path} holds no usable prompts")
    return prompts
