"""Correcting answers with a trained Aligner: in memory (:class:`Corrector`) or file to file (:func:`correct_file`).

File correction streams to a JSON Lines output and resumes where it stopped, through the one correction path a
round's correct stage takes too (:class:`w2s.aligner.correction_file.CorrectionFile`): no row lost or written twice,
and a resumed file equal to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2s.aligner import METADATA_FILE
from w2s.aligner.correction_file import PROVENANCE_KEY, CorrectionFile, id_key, scan_output
from w2s.aligner.templates import Template, get_template, render, resolve_instruction, template_from_dict
from w2s.data.files import WriterLock, atomic_write_text
from w2s.data.text import distance_stats, edit_distance, normalized_edit_distance
from w2s.errors import DataError, W2SError

DEFAULT_TEMPLATE = "aligner-v2"


@dataclass
class Correction:
    """One corrected answer and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    answer_cut_tokens: int = 0  # tokens cut from the end of the answer so that the prompt fit max_prompt_tokens


def read_metadata(aligner_path: str | os.PathLike) -> dict[str, Any] | None:
    """The Aligner directory's ``w2s_aligner.json`` (written by training), or None when absent."""
    path = Path(aligner_path) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise W2SError(f"{path}: unreadable Aligner metadata ({e}); fix or delete it and set correct.template") \
            from None


def resolve_template(aligner_path: str, name: str, user_templates: Mapping[str, Any] | None = None, *,
                     allow_mismatch: bool = False) -> tuple[Template, str, str]:
    """The template to correct with, the instruction the Aligner was trained with, and where the choice came from.

    ``auto`` takes the template saved in the Aligner's metadata, else ``aligner-v2``. A named template that
    differs from the one the metadata records is refused (the Aligner would see a format it never learnt) unless
    ``allow_mismatch``; then the source says so and a warning is logged.
    """
    meta = read_metadata(aligner_path) if Path(aligner_path).is_dir() else None
    trained_instruction = str((meta or {}).get("instruction", "") or "")
    if name and name != "auto":
        spec = (meta or {}).get("template_spec")
        trained = (meta or {}).get("template") or (spec.get("name") if isinstance(spec, Mapping) else None)
        if not trained or trained == name:
            return get_template(name, user_templates), trained_instruction, "config"
        if not allow_mismatch:
            raise W2SError(f"{aligner_path}: this Aligner was trained with template {trained!r} ({METADATA_FILE}) but "
                           f"correct.template={name!r}: it would correct prompts in a format it never learnt; use "
                           f"correct.template=auto (or --template {trained}), or allow it explicitly with "
                           "correct.allow_template_mismatch=true (--allow-template-mismatch)")
        import logging

        logging.getLogger("w2s.aligner").warning("correcting with template %r; the Aligner %s was trained with %r",
                                                 name, aligner_path, trained)
        return get_template(name, user_templates), trained_instruction, f"config (trained with {trained})"
    if meta and isinstance(meta.get("template_spec"), Mapping):
        return template_from_dict(meta["template_spec"]), trained_instruction, METADATA_FILE
    if meta and meta.get("template"):
        return get_template(str(meta["template"]), user_templates), trained_instruction, METADATA_FILE
    return get_template(DEFAULT_TEMPLATE), trained_instruction, "default"


# Pieces of the Aligner prompt formats. A small or briefly trained Aligner sometimes runs past its answer and
# starts a new prompt ("...\n##Correction:  ASSISTANT:"). Such a marker ends the correction where it opens a line
# (a correction may well quote "ASSISTANT:" mid-sentence); the conversation header, which no answer contains, ends
# it anywhere.
TEMPLATE_ECHO_ANYWHERE = ("BEGINNING OF CONVERSATION:", "USER: Edit the following")
TEMPLATE_ECHO_LINE_START = ("##Question:", "##Answer:", "##Correction:", "ASSISTANT:", "USER:")
_ECHO = re.compile("|".join([*map(re.escape, TEMPLATE_ECHO_ANYWHERE),
                             *(rf"(?:^|(?<=\n))[ \t]*{re.escape(m)}" for m in TEMPLATE_ECHO_LINE_START)]))


def strip_template_echo(text: str) -> tuple[str, bool]:
    """``text`` cut where the Aligner starts echoing its prompt template; and whether it was cut. A last line that
    is the start of a marker ("\n##Cor", the token limit reached mid-echo) is cut too."""
    m = _ECHO.search(text)
    if m:
        return text[:m.start()], True
    head, sep, last = text.rpartition("\n")
    tail = last.strip()
    if sep and len(tail) >= 3 and any(marker.startswith(tail) for marker in TEMPLATE_ECHO_LINE_START):
        return head + sep, True
    return text, False


class Corrector:
    """A loaded Aligner that corrects (question, answer) pairs.

    Args:
        aligner_path: trained Aligner directory (or any model path / ``asset:NAME``).
        model_cfg: ``ModelConfig`` of the Aligner (dtype, attention kernel, trust_remote_code).
        correct_cfg: ``CorrectConfig``: template, instruction and decoding settings.
        user_templates: config ``aligner.templates``.
        generator: an already loaded generator to use instead of loading one (tests, shared engines).

    The instruction is ``correct_cfg.instruction`` when set, else the one the Aligner was trained with (its
    metadata), else the template's default.
    """

    def __init__(self, aligner_path: str, model_cfg: Any, correct_cfg: Any, *,
                 user_templates: Mapping[str, Any] | None = None, generator: Any = None, shares_gpu: bool = False):
        from w2s.assets import resolve_model_path
        from w2s.generation import make_generator, resolve_sampling

        self.aligner_path = resolve_model_path(aligner_path)
        self.cfg = correct_cfg
        self.template, trained, self.template_source = resolve_template(
            self.aligner_path, str(correct_cfg.template), user_templates,
            allow_mismatch=bool(correct_cfg.allow_template_mismatch))
        self.instruction = resolve_instruction(str(correct_cfg.instruction or "") or trained)
        self.sampling = resolve_sampling(correct_cfg)
        self.generator = generator or make_generator(self.aligner_path, model_cfg, correct_cfg, shares_gpu=shares_gpu)
        self.tokenizer = self.generator.tokenizer
        # Fail now, not after loading data: e.g. an instruction for a template that cannot take one.
        self.render("q", "a")

    @property
    def provenance(self) -> dict[str, Any]:
        """What produced the corrections: Aligner path, template, instruction and resolved decoding settings."""
        return {"aligner": self.aligner_path, "template": self.template.name, "template_source": self.template_source,
                "instruction": self.instruction, "generation": dict(self.sampling)}

    def render(self, question: str, answer: str) -> str:
        """The exact prompt the Aligner sees for one pair."""
        return render(self.template, question, answer, self.instruction, tokenizer=self.tokenizer)

    def correct(self, questions: Sequence[str], answers: Sequence[str], *, seed: int | None = None,
                progress: bool = False) -> list[Correction]:
        """Correct each (question, answer) pair; the correction text is stripped of surrounding whitespace."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        fitted = [self.fit(q, a) for q, a in zip(questions, answers, strict=True)]
        prompts = [p for p, _ in fitted]
        if seed is None:
            seed = self.sampling["seed"] if self.sampling["seed"] is not None else 42
        gens = self.generator.generate(prompts, self.cfg, seed=int(seed), progress=progress)
        out = []
        for g, (_, answer_cut) in zip(gens, fitted, strict=True):
            text, cut = strip_template_echo(g.text)
            # The correction itself ended before the echo: not cut off, but not a plain EOS either.
            reason = "template_echo" if cut else g.finish_reason
            out.append(Correction(text.strip(), g.prompt_tokens, g.completion_tokens, reason, answer_cut))
        return out

    def fit(self, question: str, answer: str) -> tuple[str, int]:
        """The prompt for one pair within ``max_prompt_tokens``, and how many tokens were cut from the answer's
        end to get there. The engines cut an over-long prompt from the left, which would take the template's
        head, the instruction and the question first: here the answer gives way instead."""
        limit = int(self.cfg.max_prompt_tokens)
        prompt = self.render(question, answer)
        if not limit:  # no budget: nothing to tokenise here (the engine encodes the prompt anyway)
            return prompt, 0
        size = lambda text: len(self.tokenizer(text)["input_ids"])  # noqa: E731  (BOS included, as encoded)
        over = size(prompt) - limit
        if over <= 0:
            return prompt, 0
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        keep = max(len(ids) - over, 0)
        while True:  # re-tokenising at the cut can differ by a token or two
            prompt = self.render(question, self.tokenizer.decode(ids[:keep]))
            if keep == 0 or size(prompt) <= limit:
                return prompt, len(ids) - keep
            keep = max(keep - max(size(prompt) - limit, 1), 0)

    def close(self) -> None:
        self.generator.close()


# ----------------------------------------------------------------------------------------------- files
def _weights_hash(aligner_path: str, out: Path) -> str:
    """sha256 of the Aligner's folder (every file), remembered by file stamps beside the output, so a resume
    reads the weights again only when they changed; a name that is not a local folder stands for itself."""
    from w2s.data.files import HashCache

    folder = Path(aligner_path)
    if not folder.is_dir():
        return str(aligner_path)
    cache = HashCache(out.with_name(f".{out.name}.hashes.json"))
    digest = cache.sha256(folder)
    cache.save()
    return digest


def correction_stats(rows: Sequence[Mapping[str, Any]], answer_key: str, output_key: str) -> dict[str, Any]:
    """Copy rate (correction equals answer, whitespace-stripped) and word/character edit distance statistics."""
    copies = 0
    words, chars, norm = [], [], []
    finish: dict[str, int] = {}
    prompt_tokens = completion_tokens = answers_cut = 0
    for row in rows:
        a, c = str(row[answer_key]).strip(), str(row[output_key]).strip()
        copies += a == c
        words.append(edit_distance(a, c, unit="word"))
        norm.append(normalized_edit_distance(a, c, unit="word"))
        # Character distance is quadratic: only for answers of modest length.
        if len(a) * len(c) <= 4_000_000:
            chars.append(edit_distance(a, c, unit="char"))
        prov = row.get(PROVENANCE_KEY) or {}
        finish[prov.get("finish_reason", "")] = finish.get(prov.get("finish_reason", ""), 0) + 1
        prompt_tokens += int(prov.get("prompt_tokens", 0))
        answers_cut += int(prov.get("answer_cut_tokens", 0) or 0) > 0
        completion_tokens += int(prov.get("completion_tokens", 0))
    n = len(rows)
    return {"rows": n, "copy_rate": copies / n if n else 0.0, "copies": copies,
            "edit_distance_words": distance_stats(words), "edit_distance_chars": distance_stats(chars),
            "normalized_edit_distance_words": distance_stats(norm), "finish_reasons": finish,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "answers_cut": answers_cut}


def stats_path(output_path: str | os.PathLike) -> Path:
    """Where the stats report of an output file goes: ``OUTPUT.stats.json`` next to it."""
    out = Path(output_path)
    return out.with_name(out.name + ".stats.json")


def check_aligner(aligner_path: str, model_cfg: Any, correct_cfg: Any,
                  user_templates: Mapping[str, Any] | None = None) -> str:
    """What can be known of an Aligner without loading it, checked before any actor starts: its folder (or hub
    name), code it would run (refused unless ``trust_remote_code``), the template it is asked to correct with
    against the one it was trained with. Returns its resolved path.

    Raises:
        W2SError: as :func:`w2s.assets.resolve_model_path`, :func:`w2s.backends.models.guard_remote_code` and
            :func:`resolve_template` say.
        OSError: a hub name that cannot be loaded (offline, or no such model).
    """
    from w2s.assets import resolve_model_path
    from w2s.backends.models import guard_remote_code

    path = resolve_model_path(aligner_path)
    trust = bool(model_cfg.trust_remote_code)
    if not Path(path).is_dir():  # a hub name: its config, the least that must load
        from transformers import AutoConfig

        AutoConfig.from_pretrained(path, trust_remote_code=trust)
    guard_remote_code(path, trust)
    resolve_template(path, str(correct_cfg.template), user_templates,
                     allow_mismatch=bool(correct_cfg.allow_template_mismatch))
    return path


def cli_correction_seed(cfg: Any) -> int:
    """The base seed of a command's corrections (``w2s aligner correct``, ``w2s eval --aligner``, ``w2s bench
    aligner``): ``correct.seed``, else ``run.seed`` (0 is a seed), so that two runs with other seeds correct with
    other randomness."""
    return int(cfg.correct.seed if cfg.correct.seed is not None else cfg.run.seed)


def _rows_to_correct(input_path: str, output_path: str, correct_cfg: Any, max_rows: int) -> Any:
    """The input's rows (``w2s.data.io.read_rows``' result), refused before anything loads when the output is the
    input, when none is left, when an id repeats (resuming goes by id) or when a row already has a field the
    correction would overwrite."""
    from w2s.data.io import read_rows

    if Path(output_path).resolve() == Path(input_path).resolve():
        raise W2SError(f"--output {output_path} is the input file: corrections go to a new file and the input is "
                       "never modified; give another --output")
    out_key = str(correct_cfg.output_key)
    source = {"path": input_path, "on_bad_row": correct_cfg.on_bad_row, "max_rows": max_rows, "split": "train"}
    data = read_rows(source, required={"question": str(correct_cfg.question_key),
                                       "answer": str(correct_cfg.answer_key)},
                     what="rows to correct", allow_empty=("answer",))
    if not data.rows:
        raise DataError(f"{input_path}: no rows to correct" + (f" ({data.skipped} malformed row(s) skipped)"
                                                               if data.skipped else ""))
    seen: dict[str, int] = {}
    for i, row in enumerate(data.rows):
        key = id_key(row["id"])
        if key in seen:
            raise DataError(f"{input_path}: id {row['id']!r} appears twice (rows {seen[key]} and {i}); ids must be "
                            "unique so an interrupted correction can resume")
        seen[key] = i
    clash = next((i for i, row in enumerate(data.rows) if out_key in row or PROVENANCE_KEY in row), None)
    if clash is not None:
        field = out_key if out_key in data.rows[clash] else PROVENANCE_KEY
        raise DataError(f"{input_path}: row {clash + 1} (id {data.rows[clash]['id']!r}) already has a field {field!r}, "
                        "which the correction would overwrite; write the correction to another field "
                        "(correct.output_key=NAME) or rename the input field")
    return data


def correct_file(aligner_path: str, input_path: str, output_path: str, *, model_cfg: Any, correct_cfg: Any,
                 user_templates: Mapping[str, Any] | None = None, seed: int | None = None,
                 progress: bool = True, corrector: Corrector | None = None,
                 make_corrector: Callable[[], Any] | None = None, max_rows: int = 0, chunk: int = 0,
                 echo: Any = print) -> dict[str, Any]:
    """Correct every (question, answer) row of a file into a JSON Lines output, resuming a previous run.

    Output rows keep every input field and id and add ``correct_cfg.output_key`` (the correction) and
    ``w2s_correction`` (Aligner path, template, instruction, resolved decoding settings, seed, token counts,
    finish reason). A stats report (copy rate, edit distances, throughput) is printed with ``echo`` and
    written to ``OUTPUT.stats.json``.

    Args:
        aligner_path: the Aligner directory.
        input_path: rows with ``correct_cfg.question_key`` and ``answer_key`` (any format ``read_rows`` reads).
        output_path: JSON Lines output; if it exists, the run resumes it.
        model_cfg / correct_cfg / user_templates: as for :class:`Corrector`.
        seed: base sampling seed (each batch adds its first row's index); default ``correct_cfg.seed`` or 42.
        progress: show a progress bar with rows/s and tokens/s.
        corrector: an already loaded :class:`Corrector` (then the aligner path and configs are taken from it).
        make_corrector: builds the corrector once the input is read and checked (the CLIs: the role services'
            corrector, :class:`w2s.roles.corrector.ServedCorrector`); default an in-process :class:`Corrector`.
        max_rows: correct at most this many input rows (0: all).
        chunk: rows per call of the corrector (0: ``correct_cfg.batch_prompts_per_actor``; the CLIs: one batch
            for each of the corrector's actors, as a round's correct stage).

    Returns:
        The stats report.

    Raises:
        DataError: bad input rows (``on_bad_row: error``), duplicate ids, a corrupt output file.
        W2SError: resuming an output written with other Aligner weights, template, instruction, decoding or seed.
    """
    data = _rows_to_correct(input_path, output_path, correct_cfg, max_rows)
    q_key, a_key, out_key = str(correct_cfg.question_key), str(correct_cfg.answer_key), str(correct_cfg.output_key)
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # One writer per output: a second process resuming the same file would duplicate every row it corrects.
    with WriterLock(out.with_name(f".{out.name}.lock"), f"{out}"):
        owned = corrector is None
        if corrector is None:
            corrector = make_corrector() if make_corrector else Corrector(aligner_path, model_cfg, correct_cfg,
                                                                          user_templates=user_templates)
        try:
            own = corrector.sampling["seed"]  # 0 is a seed
            base_seed = int(seed if seed is not None else (own if own is not None else 42))
            provenance = {**corrector.provenance, "weights": _weights_hash(corrector.aligner_path, out),
                          "base_seed": base_seed}
            written = CorrectionFile(
                out, question_key=q_key, answer_key=a_key, output_key=out_key, provenance=provenance,
                chunk=chunk or int(correct_cfg.batch_prompts_per_actor),
            ).write(corrector, data.rows, base_seed=base_seed, progress=progress, echo=echo)
        finally:
            if owned:
                corrector.close()

        all_rows, _ = scan_output(out)
        stats = correction_stats(all_rows, a_key, out_key)
        elapsed = written.seconds
        stats.update({"input": data.source, "output": str(out), "input_rows": len(data.rows),
                      "skipped_input_rows": data.skipped, "input_problems": data.problems[:20],
                      "resumed_rows": written.resumed, "new_rows": written.new, "seconds": round(elapsed, 3),
                      "rows_per_s": written.new / elapsed if elapsed > 0 else 0.0,
                      "tokens_per_s": written.new_tokens / elapsed if elapsed > 0 else 0.0, "provenance": provenance})
        atomic_write_text(stats_path(out), json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
        if echo is not None:
            echo(format_stats(stats))
        return stats


def format_stats(stats: Mapping[str, Any]) -> str:
    """A short human-readable summary of a correction stats report."""
    ed, ned = stats["edit_distance_words"], stats["normalized_edit_distance_words"]
    lines = [
        f"corrected {stats['rows']} rows -> {stats['output']} ({stats['new_rows']} new, {stats['resumed_rows']} "
        f"resumed, {stats['skipped_input_rows']} input rows skipped)",
        f"copy rate {stats['copy_rate']:.1%} ({stats['copies']} corrections equal their answer)",
        f"edit distance (words): mean {ed['mean']:.1f}, median {ed['median']:.1f}, p90 {ed['p90']:.1f}, max "
        f"{ed['max']:.0f}; normalised mean {ned['mean']:.3f}",
        f"throughput {stats['rows_per_s']:.2f} rows/s, {stats['tokens_per_s']:.1f} tokens/s; finish reasons "
        f"{stats['finish_reasons']}",
        *([f"{stats['answers_cut']} answer(s) cut at the end to fit correct.max_prompt_tokens (the question and "
           "instruction kept whole)"] if stats.get("answers_cut") else []),
        f"report: {stats_path(stats['output'])}",
    ]
    return "\n".join(lines)
