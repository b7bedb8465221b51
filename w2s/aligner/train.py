"""Training the Aligner: SFT on (question, answer) -> correction through OpenRLHF, after an optional identity warm-up.

The stages (paper §2, "residual correction"):

1. Read and check the triples, split train/eval deterministically by ``run.seed``, report duplicate questions.
2. Identity warm-up (``warmup_fraction > 0``): SFT from the base model on a seeded ``warmup_fraction`` of the
   training rows with the answer as its own target, i.e. (question, answer) -> answer: the Aligner first
   learns to copy, then to correct.
3. SFT on (question, answer) -> correction over the whole training split, starting from the warm-up output
   (or the base model).
4. Write ``w2s_aligner.json`` into the model directory, so correction later picks the same template, and the
   digests of its training questions (:mod:`w2s.aligner.trained_questions`), so that an evaluation on them is
   caught.

Raw templates (``aligner-v1``/``aligner-v2``/user templates) train on ``prompt + correction + EOS`` with the
prompt masked from the loss (OpenRLHF ``chat=False``); the ``chat`` template sends the user message through the
model's chat template (``chat=True``).

Every rank of the trainer world (:meth:`w2s.roles.trainer.TrainerService.train`) runs :func:`train_aligner`: each
reads the same triples and writes the same training files (atomically), while only rank 0 reports, writes the
held-out split and the metadata, and removes the warm-up model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2s.aligner import METADATA_FILE, trained_questions
from w2s.aligner.dataset import Triple, TripleSplit, load_triples, warmup_subset
from w2s.aligner.templates import INSTRUCTION_PRESETS, get_template, render, render_body, resolve_instruction
from w2s.backends import checkpoint
from w2s.config.plain import to_plain
from w2s.data.files import atomic_write_json, atomic_write_text, write_jsonl

log = logging.getLogger(__name__)


def _backend() -> Any:
    """What Aligner training needs of the OpenRLHF backend (one seam, so tests can record the calls)."""
    from types import SimpleNamespace

    from w2s.backends import openrlhf
    from w2s.backends.data import write_sft_rows

    return SimpleNamespace(train_sft=openrlhf.train_sft, write_sft_rows=write_sft_rows)


def training_prompt(tokenizer: Any, rendered: str) -> str:
    """A raw template's prompt as training text: with the tokenizer's BOS in front where the tokenizer adds one
    (Llama 2, Gemma). OpenRLHF tokenizes training text without special tokens while correction encodes the prompt
    with them, so without it the Aligner would learn on one token sequence and correct on another."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or rendered.startswith(bos):
        return rendered
    ids = tokenizer("x")["input_ids"]
    return bos + rendered if ids and ids[0] == tokenizer.bos_token_id else rendered


def count_overlong(pairs: list[tuple[str, str]], tokenizer: Any, max_len: int) -> int:
    """How many (rendered prompt, target) examples exceed ``max_len`` tokens with the EOS token."""
    if not pairs or not max_len:
        return 0
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    targets = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    return sum(len(p) + len(t) + 1 > max_len for p, t in zip(prompts, targets, strict=True))


def train_aligner(cfg: Any, output_dir: str | os.PathLike, *, progress: bool = True,
                  work_dir: str | os.PathLike | None = None, tensorboard_dir: str | None = None,
                  keep_warmup: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train an Aligner as ``cfg`` says and write it (with its metadata) to ``output_dir``.

    Args:
        cfg: the whole config: ``aligner.train`` (data, template, instruction, warm-up, trainer settings),
            ``aligner.templates``, ``model.aligner`` (base model) and ``run.seed``.
        output_dir: the Hugging Face model directory to write (replaced if it exists).
        progress: show OpenRLHF's progress bars.
        work_dir: where training files, the held-out split and the warm-up model go (default
            ``OUTPUT_DIR.work`` next to the output).
        tensorboard_dir: also write TensorBoard logs here.
        keep_warmup: keep the warm-up model directory (by default deleted once the final model is written).
        echo: where progress messages go.

    Returns:
        The metadata written to ``w2s_aligner.json`` (template, instruction, data hash and report, sizes, losses).

    Raises:
        DataError: bad triples. W2SError: unknown template, instruction for a template without one.
    """
    from transformers import AutoTokenizer

    from w2s.assets import resolve_model_path

    a = cfg.aligner.train
    seed = int(cfg.run.seed)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # set by the trainer world; a lone process is rank 0
    if not rank0:
        echo = _quiet
    out = Path(output_dir).resolve()
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_model_path(str(cfg.model.aligner.path))
    trust = bool(cfg.model.aligner.trust_remote_code)
    attn = str(cfg.model.aligner.attn_implementation)
    user_templates = dict(cfg.aligner.templates or {})
    template = get_template(str(a.template), user_templates)
    instruction = resolve_instruction(str(a.instruction or ""))
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=trust)
    render_body(template, "q", "a", instruction)  # fail fast on an instruction the template cannot take

    split = load_triples(a.data, eval_fraction=float(a.eval_fraction), seed=seed)
    report = split.report()
    echo(f"Aligner triples: {report['train']} train, {report['eval']} eval, {report['skipped']} skipped, "
         f"{report['duplicate_question_rows']} rows in {report['duplicate_question_groups']} duplicate-question "
         f"groups (from {split.source})")
    for problem in split.problems[:5]:
        echo(f"  skipped: {problem}")

    def pairs(triples: list[Triple]) -> list[tuple[str, str]]:
        # chat=True: the backend applies the chat template to the user message itself.
        body = render_body if template.chat else (lambda t, q, ans, i: training_prompt(
            tokenizer, render(t, q, ans, i, tokenizer=tokenizer)))
        return [(body(template, t.question, t.answer, instruction), t.correction) for t in triples]

    sft = _SFT(a, seed, template.chat, attn, trust, tensorboard_dir)
    warm = warmup_subset(split.train, float(a.warmup_fraction), seed)
    main = [t for t in split.train if not t.identity]  # identity rows of preference data train the warm-up only
    if not main:
        from w2s.errors import DataError

        raise DataError(f"Aligner triples ({split.source}): every training row is an identity row; there is nothing "
                        "to correct (aligner.train.data.identity)")
    rendered_main = [(render(template, t.question, t.answer, instruction, tokenizer=tokenizer), t.correction)
                     for t in main]
    overlong = count_overlong(rendered_main, tokenizer, int(a.max_len))
    if overlong:
        echo(f"  {overlong} training examples exceed max_len={a.max_len} tokens and will be {a.overlong}"
             f"{'ped' if a.overlong == 'drop' else 'd'} (aligner.train.overlong)")
    if rank0:  # the held-out triples, for later evaluation
        write_jsonl(work / "eval.jsonl", ({"id": t.id, "question": t.question, "answer": t.answer,
                                           "correction": t.correction} for t in split.eval))

    stages: list[dict[str, Any]] = []
    start_model = base
    start = time.monotonic()
    if warm:
        stages.append(_warm_up(sft, pairs(warm), base, work, echo, write_record=rank0))
        start_model = str(work / "warmup")
    main_data = work / "train_sft.jsonl"
    sft.backend.write_sft_rows(main_data, pairs(main), chat=sft.chat)
    echo(f"correction SFT: {len(main)} (question, answer) -> correction rows, from {start_model}")
    stages.append(sft.run("correction", start_model, main_data, out, len(main)))
    if warm and not keep_warmup and rank0:  # every rank is past the final save's barrier: nobody reads it now
        shutil.rmtree(work / "warmup", ignore_errors=True)
        (work / "warmup.json").unlink(missing_ok=True)

    meta = _metadata(cfg, template, instruction, base, split, warm=warm, overlong=overlong, stages=stages,
                     work=work, seconds=time.monotonic() - start)
    if rank0:
        trained_questions.write(out, [t.question for t in split.train])  # before the metadata, which ends the work
        atomic_write_text(out / METADATA_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    last = stages[-1]
    echo(f"Aligner written to {out} ({last['steps']} steps, loss {last['loss_first']} -> {last['loss_last']})")
    return meta


@dataclass(frozen=True)
class _SFT:
    """One SFT run of the Aligner's training through the backend: what its two stages share."""

    train: Any  # aligner.train
    seed: int
    chat: bool
    attn: str
    trust_remote_code: bool
    tensorboard_dir: str | None
    backend: Any = field(default_factory=lambda: _backend())  # looked up when made: tests replace _backend

    def run(self, name: str, start_model: str, data: Path, output: Path, rows: int) -> dict[str, Any]:
        result = self.backend.train_sft(self.train, start_model, str(data), str(output), seed=self.seed,
                                        chat=self.chat, tensorboard_dir=_sub(self.tensorboard_dir, name),
                                        attn_implementation=self.attn, trust_remote_code=self.trust_remote_code)
        return _stage(name, start_model, result, rows)


def _warm_up(sft: _SFT, pairs: list[tuple[str, str]], base: str, work: Path, echo: Callable[[str], None], *,
             write_record: bool) -> dict[str, Any]:
    """The identity warm-up into ``work/warmup``: (question, answer) -> answer rows from the base model. One
    finished earlier from the same inputs is kept (a rerun after a kill or a requeue goes on with the correction
    SFT, and from its checkpoint when checkpoint_every is set). Returns its stage record."""
    data, output, done = work / "warmup_sft.jsonl", work / "warmup", work / "warmup.json"
    sft.backend.write_sft_rows(data, pairs, chat=sft.chat)
    record = checkpoint.training_record("aligner-warmup", {"train": to_plain(sft.train), "seed": sft.seed,
                                                           "chat": sft.chat},
                                        model_path=base, data_paths=(str(data),))
    earlier = json.loads(done.read_text()) if done.is_file() and output.is_dir() else {}
    if earlier.get("record") == record:
        echo(f"identity warm-up: finished earlier, kept ({output})")
        return earlier["stage"]
    echo(f"identity warm-up: {len(pairs)} (question, answer) -> answer rows, from {base}")
    stage = sft.run("warmup", base, data, output, len(pairs))
    if write_record:
        atomic_write_json(done, {"record": record, "stage": stage})
    return stage


def _metadata(cfg: Any, template: Any, instruction: str, base: str, split: TripleSplit, *, warm: list[Triple],
              overlong: int, stages: list[dict[str, Any]], work: Path, seconds: float) -> dict[str, Any]:
    """What ``w2s_aligner.json`` records: how to prompt the Aligner, what it was trained on and how."""
    import w2s

    a = cfg.aligner.train
    return {
        "format": "w2s-aligner/1",
        "w2s_version": w2s.__version__,
        "template": template.name,
        "template_spec": template.to_dict(),
        "instruction": instruction,
        "instruction_presets": dict(INSTRUCTION_PRESETS),
        "chat": template.chat,
        "base_model": str(cfg.model.aligner.path),
        "base_model_resolved": base,
        "data": {**split.report(), "path": str(a.data.path), "question_key": a.data.question_key,
                 "answer_key": a.data.answer_key, "correction_key": a.data.correction_key},
        "data_sha256": split.sha256,
        "seed": int(cfg.run.seed),
        "warmup_fraction": float(a.warmup_fraction),
        "sizes": {"train": len(split.train), "eval": len(split.eval), "warmup": len(warm), "overlong": overlong},
        "train": _training_summary(a),
        "stages": stages,
        "world_size": int(stages[-1]["world_size"]),
        "attn_implementation": stages[-1]["attn_implementation"],
        "work_dir": str(work),
        "seconds": round(seconds, 2),
    }


def _training_summary(a: Any) -> dict[str, Any]:
    """``aligner.train``'s settings as the metadata records them."""
    return {"epochs": int(a.epochs), "max_len": int(a.max_len), "overlong": str(a.overlong),
            "lr": float(a.optim.lr), "scheduler": str(a.optim.scheduler),
            "warmup_ratio": float(a.optim.warmup_ratio), "betas": [float(b) for b in a.optim.betas],
            "global_batch_samples": int(a.global_batch_samples), "zero_stage": int(a.zero_stage),
            "lora_rank": int(a.lora.rank), "packing_samples": bool(a.packing_samples)}


def _quiet(_message: str) -> None:
    """Where the other ranks' progress messages go (rank 0 reports for the world)."""


def _sub(path: str | None, name: str) -> str | None:
    return str(Path(path) / name) if path else None


def _stage(name: str, start_model: str, result: Any, rows: int) -> dict[str, Any]:
    losses = [float(x) for x in result.losses]
    return {"stage": name, "from": start_model, "output_dir": str(result.output_dir), "rows": rows,
            "steps": int(result.steps), "samples": int(result.samples), "seconds": round(float(result.seconds), 2),
            "world_size": int(getattr(result, "world_size", 1)),
            "attn_implementation": str(getattr(result, "attn_implementation", "")),
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "losses": losses, "metrics": {k: float(v) for k, v in dict(result.metrics).items()}}
