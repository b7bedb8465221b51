"""The stages of one weak-to-strong round, each a function over the run it works for (a
:class:`~w2s.controller.context.RunContext`), declared in :mod:`w2s.stages` and run by :meth:`w2s.rundir.RunDir.run`:
the policy answers (generate), the Aligner corrects (correct), the corrections become training rows (data), the
policy is trained on them (train; RLHF's reward model and PPO in :mod:`w2s.controller.rlhf`). The ceiling track
(:mod:`w2s.controller.ceiling`) runs the same functions on its own stages.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from w2s.console import say
from w2s.controller.context import RunContext
from w2s.controller.rlhf import rlhf
from w2s.data.files import read_jsonl, write_jsonl
from w2s.data.partial import PartialRows, rows_per_call
from w2s.data.prompts import Prompt
from w2s.errors import DataError
from w2s.generation.sampling import stage_seed
from w2s.rundir import StageRecord, say_losses, source_file, training_metrics
from w2s.stages import CORRECT, DATA, GENERATE, TRAIN, Stage
from w2s.workers.requests import CheckLoads, TrainDPO, TrainSFT


def generate_stage(run: RunContext, k: int, policy: str, prompts: list[Prompt], stage: Stage = GENERATE
                   ) -> list[dict[str, Any]]:
    """Round k's answers of ``policy`` (the ceiling track's too: ``stage``), seeded alike, made in chunks that a
    stopped stage keeps (:mod:`w2s.data.partial`)."""
    cfg = run.cfg
    seed = stage_seed(cfg.generate.seed, cfg.run.seed, "generate", k)

    def answer(start: int, chunk: list[Prompt], rec: StageRecord) -> list[dict[str, Any]]:
        outs = run.generate(policy, chunk, cfg.generate, seed + start,
                             f"round {k} {stage.name} ({start + len(chunk)}/{len(prompts)})", rec)
        return [{"id": p.id, "prompt": p.prompt, "answer": o.text, "completion_tokens": o.completion_tokens,
                 "finish_reason": o.finish_reason, "policy": policy} for p, o in zip(chunk, outs)]

    def work(stage_dir: Path, rec: StageRecord) -> None:
        t0 = time.time()
        partial = PartialRows(stage_dir / "answers.partial.jsonl", rec.fingerprint,
                              rows_per_call(cfg.generate, cfg.cluster.generator))
        rows, rec.resumed_rows = partial.make(prompts, lambda start, chunk: answer(start, chunk, rec),
                                              what=f"round {k} {stage.name}")
        write_jsonl(stage_dir / "answers.jsonl", rows)
        partial.remove()
        rec.outputs["answers"] = stage_dir / "answers.jsonl"
        rec.metrics = {"answers": len(rows), "tokens": sum(r["completion_tokens"] for r in rows),
                       "seconds": round(time.time() - t0, 2)}

    inputs = {"prompts": source_file(run.cfg.loop.prompts.path), "policy": policy}
    return read_jsonl(run.rd.run(stage, k, inputs, work)["answers"])


def correct_stage(run: RunContext, k: int, aligner: str, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Round k's corrections of the policy's answers, made through the one correction path
    (:class:`~w2s.aligner.correction_file.CorrectionFile`, as ``w2s aligner correct``): chunks seeded by the stage's
    seed plus their first row, kept in ``corrections.partial.jsonl`` as they are made, so that a stopped stage
    corrects only the chunks it lacks; rows made from another attempt's inputs or settings are set aside."""
    from w2s.aligner.correction_file import PROVENANCE_KEY, RESUME_KEYS, CorrectionFile
    from w2s.data.text import normalized_edit_distance
    from w2s.roles.corrector import ServedCorrector

    cfg = run.cfg
    seed = stage_seed(cfg.correct.seed, cfg.run.seed, "correct", k)

    def work(stage_dir: Path, rec: StageRecord) -> None:
        t0 = time.time()
        say(f"round {k} correct: the Aligner corrects {len(answers)} answers")
        served = ServedCorrector(run.services.corrector, aligner, what=f"round {k} correct")
        chunk = rows_per_call(cfg.correct, cfg.cluster.corrector)
        # The stage's fingerprint (its config values, the Aligner's and the answers' contents) and the chunk size
        # decide its rows too: kept rows made under others are set aside, never mixed in.
        provenance = {**served.provenance, "aligner": aligner, "weights": run.rd.sha256(aligner),
                      "base_seed": seed, "stage": rec.fingerprint, "chunk": chunk}
        partial = stage_dir / "corrections.partial.jsonl"
        written = CorrectionFile(partial, question_key="prompt", answer_key="answer", output_key="correction",
                                 provenance=provenance, chunk=chunk, must_match=(*RESUME_KEYS, "stage", "chunk"),
                                 other_settings="set_aside").write(served, answers, base_seed=seed, echo=say)
        if written.resumed:
            say(f"round {k} correct: {written.resumed} of {len(answers)} rows kept from before the stop")
        rows = [{**r, "correction_finish_reason": r[PROVENANCE_KEY]["finish_reason"]} for r in written.rows]
        write_jsonl(stage_dir / "corrections.jsonl", [{k2: v for k2, v in r.items() if k2 != PROVENANCE_KEY}
                                                      for r in rows])
        partial.unlink()
        dists = [normalized_edit_distance(r["answer"], r["correction"]) for r in rows]
        rec.outputs["corrections"] = stage_dir / "corrections.jsonl"
        rec.resumed_rows = written.resumed
        rec.provenance = {"aligner": aligner, **served.provenance}
        rec.metrics = {"corrections": len(rows), "copy_rate": sum(d == 0 for d in dists) / len(rows),
                       "answers_cut": sum(r[PROVENANCE_KEY]["answer_cut_tokens"] > 0 for r in rows),
                       "mean_edit_distance": sum(dists) / len(rows), "seconds": round(time.time() - t0, 2),
                       "tokens": sum(r[PROVENANCE_KEY]["completion_tokens"] for r in rows)}
        say(f"round {k} correct: copy rate {rec.metrics['copy_rate']:.2f}, mean normalised edit distance "
            f"{rec.metrics['mean_edit_distance']:.3f}")

    inputs = {"answers": run.rd.stage_dir(k, GENERATE.name) / "answers.jsonl", "aligner": aligner}
    return read_jsonl(run.rd.run(CORRECT, k, inputs, work)["corrections"])


def data_stage(run: RunContext, k: int, corrections: list[dict[str, Any]]) -> Path:
    """SFT rows (prompt -> correction) or preference pairs (correction > answer) in OpenRLHF's format."""
    from w2s.backends.data import write_pair_rows, write_sft_rows
    from w2s.data.text import normalized_edit_distance

    method = run.cfg.train.method
    inputs = {"corrections": run.rd.stage_dir(k, CORRECT.name) / "corrections.jsonl"}
    if method == "dpo" and run.cfg.train.dpo.pair_source != "aligner":
        inputs["extra_pairs"] = source_file(run.cfg.train.dpo.extra_pairs)

    def work(stage_dir: Path, rec: StageRecord) -> None:
        path = stage_dir / ("sft.jsonl" if method == "sft" else "pairs.jsonl")
        rows, dropped = drop_truncated(corrections, method, run.cfg.loop.on_truncated)
        # The policy is trained in the format it answers in: its chat template, or model.strong.prompt_template
        # (rows then hold the rendered prompt as raw text).
        chat, prompt_of, reply = prompt_format(run.cfg)
        rows = [{**r, "prompt": prompt_of(r["prompt"]), "correction": reply(r["correction"]),
                 "answer": reply(r["answer"])} for r in rows]
        if method == "sft":
            kept = [r for r in rows if r["correction"].strip()]
            n = write_sft_rows(path, [(r["prompt"], r["correction"]) for r in kept], chat=chat)
            dropped["empty_correction"] = len(rows) - len(kept)
        else:
            threshold = float(run.cfg.train.dpo.min_pair_distance)
            kept = []
            dropped.update({"identical": 0, "near_identical": 0, "empty": 0})
            for r in rows:
                d = normalized_edit_distance(r["answer"], r["correction"])
                if not r["correction"].strip():
                    dropped["empty"] += 1
                elif d == 0:
                    dropped["identical"] += 1
                elif d < threshold:
                    dropped["near_identical"] += 1
                else:
                    kept.append(r)
            pairs = [(r["prompt"], r["correction"], r["answer"]) for r in kept]
            if method == "dpo" and run.cfg.train.dpo.pair_source != "aligner":
                extra = [(prompt_of(p), reply(c), reply(r)) for p, c, r in extra_pairs(run.cfg, k)]
                pairs = extra if run.cfg.train.dpo.pair_source == "extra" else pairs + extra
                random.Random(int(run.cfg.run.seed) + k).shuffle(pairs)
                dropped["aligner_pairs_unused"] = len(kept) if run.cfg.train.dpo.pair_source == "extra" else 0
                say(f"round {k} data: {len(extra)} extra pairs from {run.cfg.train.dpo.extra_pairs}")
            n = write_pair_rows(path, pairs, chat=chat)
        if n == 0:
            truncated = dropped.get("truncated_correction", 0) + dropped.get("truncated_answer", 0)
            fix = ("most answers or corrections were cut off at max_new_tokens: raise generate.max_new_tokens and "
                   "correct.max_new_tokens, or set loop.on_truncated=keep" if 2 * truncated >= len(rows) +
                   truncated else "the Aligner copied the answers: lower train.dpo.min_pair_distance, check the "
                   "Aligner, or use train.method=sft")
            raise DataError(f"round {k}: every {method} row was dropped ({dropped}); {fix}")
        from w2s.assets import resolve_model_path

        kind = {"sft": "sft", "dpo": "dpo", "rlhf": "rm"}[method]
        tokenizer = resolve_model_path(run.cfg.model.strong.path)
        section = run.cfg.train[method] if method != "rlhf" else run.cfg.train.rlhf.reward_model
        loadable = run.services.trainer.check_loads(CheckLoads(
            data=str(path), tokenizer=tokenizer, kind=kind, chat=chat, max_len=int(section.max_len),
            trust_remote_code=bool(run.cfg.model.strong.trust_remote_code)))
        rec.outputs["train"] = path
        rec.metrics = {"rows": n, "loadable_rows": loadable, **{f"dropped_{k2}": v for k2, v in dropped.items()}}
        say(f"round {k} data: {n} {method} rows written ({loadable} load in OpenRLHF), dropped {dropped}")

    return run.rd.run(DATA, k, inputs, work)["train"]


def prompt_format(cfg: DictConfig) -> tuple[bool, Callable[[str], str], Callable[[str], str]]:
    """How training rows carry the policy's prompts and replies: chat-message lists for its chat template
    (True, both as they are), or raw text (False): the prompt rendered with ``model.strong.prompt_template``,
    the reply after one space, as the model's own answers follow the template's "ASSISTANT:"."""
    template = str(cfg.model.strong.prompt_template or "")
    if not template:
        return True, lambda prompt: prompt, lambda reply: reply
    from w2s.generation.chat import render_chat

    def reply(text: str) -> str:
        return text if not text.strip() or text[:1].isspace() else " " + text

    return (False, lambda prompt: render_chat(None, prompt, template=template, key="model.strong.prompt_template"),
            reply)


def extra_pairs(cfg: DictConfig, k: int) -> list[tuple[str, str, str]]:
    """Round k's slice of train.dpo.extra_pairs (e.g. a PopAlign dataset) as (prompt, chosen, rejected)."""
    from w2s.data.io import read_rows

    d = cfg.train.dpo
    rows = read_rows(d.extra_pairs, required=["prompt", "chosen", "rejected"], what="train.dpo.extra_pairs").rows
    order = list(range(len(rows)))
    random.Random(int(cfg.run.seed)).shuffle(order)
    per = int(d.extra_pairs_per_round) or len(rows)
    picked = [rows[order[(k - 1) * per + i]] for i in range(per) if (k - 1) * per + i < len(order)]
    return [(r["prompt"], r["chosen"], r["rejected"]) for r in picked]


def train_stage(run: RunContext, k: int, policy: str, initial: str, data: Path, stage: Stage = TRAIN) -> str:
    """Round k's training of ``policy`` on ``data`` (the ceiling track's too: ``stage``), with the same method,
    section, seed and KL anchor."""
    cfg = run.cfg
    method = cfg.train.method
    inputs = {"data": data, "policy": policy}
    if method == "dpo" or (method == "rlhf" and cfg.train.rlhf.ppo_enabled):  # the KL anchor
        inputs["reference"] = initial if cfg.train.reference == "initial" else policy

    def work(stage_dir: Path, rec: StageRecord) -> None:
        prefix = "" if stage is TRAIN else f"{stage.name}-"
        tb = str(run.rd.path / "tensorboard" / f"round-{k:02d}-{prefix}{method}")
        out = stage_dir / "policy"
        chat = prompt_format(run.cfg)[0]
        say(f"round {k} {stage.name}: {method} from {policy}")
        common = dict(data=str(data), output=str(out), seed=int(cfg.run.seed) + k, tensorboard_dir=tb, chat=chat)
        if method == "sft":
            result = run.services.trainer.train(TrainSFT(section=cfg.train.sft, policy=policy, **common))
        elif method == "dpo":
            result = run.services.trainer.train(TrainDPO(section=cfg.train.dpo, policy=policy,
                                                          reference=inputs["reference"], **common))
        else:
            result = rlhf(run, k, policy, inputs.get("reference"), data, stage_dir, tb, chat=chat)
            out = Path(result.pop("policy"))
        rec.outputs["policy"] = out
        rec.metrics, rec.losses = training_metrics(result)
        rec.metrics.update({f"train_{m}": v for m, v in (result.get("metrics") or {}).items()
                            if isinstance(v, (int, float))})
        say_losses(f"round {k} {stage.name}" + (" (reward model)" if method == "rlhf" else ""), rec.losses)
        if "ppo_steps" in result:  # RLHF's PPO: its figures beside the reward model's, every step kept
            from w2s.backends.ppo_metrics import describe, summarise

            rec.metrics.update(summarise(result["ppo_steps"]))
            rec.extra["ppo_steps"] = result["ppo_steps"]
            say(f"round {k} {stage.name} (PPO): {describe(rec.metrics)}")

    return str(run.rd.run(stage, k, inputs, work)["policy"])


def drop_truncated(rows: list[dict[str, Any]], method: str, policy: str) -> tuple[list[dict[str, Any]], dict]:
    """Rows whose training text was cut off at max_new_tokens, dropped unless ``loop.on_truncated=keep``.

    A cut-off correction would teach the policy to stop mid-sentence (SFT appends EOS to it) or to prefer a
    fragment; a cut-off answer, the rejected side of a pair, would teach it that length loses. SFT trains on the
    correction alone, so only the correction counts there.
    """
    if policy == "keep":
        return rows, {}
    answer_counts = method != "sft"
    kept, counts = [], {"truncated_correction": 0, "truncated_answer": 0}
    for r in rows:
        if r.get("correction_finish_reason") == "length":
            counts["truncated_correction"] += 1
        elif answer_counts and r.get("finish_reason") == "length":
            counts["truncated_answer"] += 1
        else:
            kept.append(r)
    return kept, counts
