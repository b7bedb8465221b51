"""The weak-to-strong rounds, driven from one place.

Round k: the strong policy answers a slice of prompts (generate), the weak Aligner corrects the answers
(correct), the corrections become training data (data: SFT rows, or correction > answer pairs for DPO and
the reward model), the policy is trained from the previous round's policy (train), and the new policy is
compared with the previous and the initial one on held-out prompts (eval). Each stage is declared in
:mod:`w2s.stages` and run by :meth:`w2s.rundir.RunDir.run`; its work is a function below, over the role services.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from w2s.console import say
from w2s.controller import aligners, evaluation
from w2s.controller.ceiling import ceiling_eval, ceiling_round
from w2s.controller.context import RunContext
from w2s.controller.overlap import check_overlap
from w2s.data.files import read_jsonl, write_jsonl
from w2s.data.partial import PartialRows, rows_per_call
from w2s.data.prompts import Prompt, read_prompts
from w2s.errors import DataError
from w2s.generation.sampling import stage_seed
from w2s.rundir import RunDir, StageRecord, say_losses, source_file, training_metrics
from w2s.stages import CORRECT, DATA, GENERATE, TRAIN, Stage
from w2s.workers.requests import CheckLoads, TrainDPO, TrainRewardModel, TrainSFT

if TYPE_CHECKING:
    from w2s.roles import Services

log = logging.getLogger("w2s")


def round_slices(prompts: list[Prompt], cfg: DictConfig) -> list[list[Prompt]]:
    """Each round's prompts: one seeded shuffle, then disjoint slices (or repeats when allowed)."""
    rounds, per_round = int(cfg.loop.rounds), int(cfg.loop.prompts_per_round) or len(prompts)
    order = list(prompts)
    random.Random(cfg.run.seed).shuffle(order)
    if per_round * rounds > len(order) and not cfg.loop.repeat_prompts and per_round != len(prompts):
        raise DataError(f"loop.prompts: {len(order)} prompts cannot give {rounds} rounds x "
                        f"loop.prompts_per_round={per_round} without repeats; lower loop.prompts_per_round to "
                        f"{len(order) // rounds}, or set loop.repeat_prompts=true")
    return [[order[(k * per_round + i) % len(order)] for i in range(per_round)] for k in range(rounds)]


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


@dataclass
class LoopInputs:
    slices: list[list[Prompt]]
    eval_prompts: list[Prompt]
    overlap: dict[str, int | None] = field(default_factory=dict)  # eval prompts the run trains on (allowed)


def preflight(cfg: DictConfig) -> LoopInputs:
    """Read and check every prompt file before any actor starts (bad rows name file, line and field)."""
    prompts = read_prompts(cfg.loop.prompts, with_reference=bool(cfg.loop.ceiling), what="loop.prompts", echo=say)
    slices = round_slices(prompts, cfg)
    eval_prompts: list[Prompt] = []
    if cfg.eval.enabled:
        embedding = any(j.enabled and j.kind == "embedding" for j in cfg.eval.judges.values())
        eval_prompts = read_prompts(cfg.eval.prompts, with_reference=embedding, what="eval.prompts", echo=say)
        if cfg.eval.max_prompts:
            eval_prompts = eval_prompts[: cfg.eval.max_prompts]
    say(f"prompts: {sum(map(len, slices))} over {len(slices)} round(s); {len(eval_prompts)} evaluation prompts")
    overlap = check_overlap(cfg, [p for s in slices for p in s], eval_prompts) if eval_prompts else {}
    return LoopInputs(slices, eval_prompts, overlap)


# ----------------------------------------------------------------------------------------------- the driver
class Loop(RunContext):
    """The rounds over the run's role services (:class:`w2s.roles.Services`), which keep every model loaded."""

    def __init__(self, cfg: DictConfig, rd: RunDir, services: Services | None = None):
        super().__init__(cfg, rd, services)
        self.aligner_heldout: Path | None = None  # the trained Aligner's held-out triples

    # -- stages
    def aligner_stage(self, *, force: bool = False) -> str:
        """The Aligner used for every round (see :func:`w2s.controller.aligners.aligner_stage`)."""
        aligner, self.aligner_heldout = aligners.aligner_stage(self, force=force)
        return aligner

    def round_aligner_stage(self, k: int, previous: str) -> str:
        """Round k's own Aligner (see :func:`w2s.controller.aligners.round_aligner_stage`)."""
        aligner, self.aligner_heldout = aligners.round_aligner_stage(self, k, previous)
        return aligner

    def run(self, inputs: LoopInputs) -> list[dict[str, Any]]:
        from w2s.assets import resolve_model_path

        cfg = self.cfg
        slices, eval_prompts = inputs.slices, inputs.eval_prompts
        self.eval_overlap = dict(inputs.overlap)
        per_round = bool(cfg.aligner.per_round)  # Aligner_k trained on round k's data (the paper's §4)
        aligner = "" if per_round else self.aligner_stage()
        if cfg.eval.enabled and cfg.eval.aligner and cfg.aligner.train.enabled and not per_round:
            self.aligner_eval(aligner, None)
        initial = resolve_model_path(cfg.model.strong.path, progress=say)
        policy, policy_label = initial, "initial"
        summaries: list[dict[str, Any]] = []
        evals: dict[str, list[dict[str, Any]]] = {}  # each policy's answers on the evaluation prompts, scored
        if cfg.eval.enabled:
            evals["initial"] = evaluation.eval_answers(self, 0, "initial", initial, eval_prompts)
            if cfg.eval.aligner and aligner:
                evaluation.aligner_eval_prompts(self, aligner, evals["initial"], eval_prompts)

        ceiling = initial  # loop.ceiling: the same policy trained on gold references (w2s.controller.ceiling)
        for k, round_prompts in enumerate(slices, start=1):
            say(f"===== round {k}/{len(slices)}: {len(round_prompts)} prompts, policy {policy_label} =====")
            if per_round:
                aligner = self.round_aligner_stage(k, aligner)
                if cfg.eval.enabled and cfg.eval.aligner:
                    self.aligner_eval(aligner, k)
            answers = self.generate_stage(k, policy, round_prompts)
            corrections = self.correct_stage(k, aligner, answers)
            data = self.data_stage(k, corrections)
            new_policy = self.train_stage(k, policy, initial, data)
            label = f"round-{k}"
            if cfg.eval.enabled:
                evals[label] = evaluation.eval_answers(self, k, label, new_policy, eval_prompts)
                summaries.append(evaluation.compare_stage(self, k, label, policy_label, evals, eval_prompts))
            if cfg.loop.ceiling:
                ceiling = ceiling_round(self, k, round_prompts, ceiling, initial)
                if cfg.eval.enabled:
                    summaries[-1]["ceiling"] = ceiling_eval(self, k, ceiling, evals, eval_prompts)
            policy, policy_label = new_policy, label
        say(f"final policy: {policy}")
        return summaries

    def aligner_eval(self, aligner: str, k: int | None) -> dict[str, Any] | None:
        """The Aligner's own effect: its corrections of held-out answers (unseen questions) against them."""
        if self.aligner_heldout is None:
            say("aligner eval: the Aligner's stage recorded no held-out triples; skipped")
            return None
        return evaluation.aligner_eval_stage(self, aligner, self.aligner_heldout, k)

    def generate_stage(self, k: int, policy: str, prompts: list[Prompt], stage: Stage = GENERATE
                       ) -> list[dict[str, Any]]:
        """Round k's answers of ``policy`` (the ceiling track's too: ``stage``), seeded alike, made in chunks that a
        stopped stage keeps (:mod:`w2s.data.partial`)."""
        cfg = self.cfg
        seed = stage_seed(cfg.generate.seed, cfg.run.seed, "generate", k)

        def answer(start: int, chunk: list[Prompt], rec: dict[str, Any]) -> list[dict[str, Any]]:
            outs = self.generate(policy, chunk, cfg.generate, seed + start,
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

        inputs = {"prompts": source_file(self.cfg.loop.prompts.path), "policy": policy}
        return read_jsonl(self.rd.run(stage, k, inputs, work)["answers"])

    def correct_stage(self, k: int, aligner: str, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from w2s.data.text import normalized_edit_distance

        cfg = self.cfg
        seed = stage_seed(cfg.correct.seed, cfg.run.seed, "correct", k)
        provenance: dict[str, Any] = {}  # the Aligner's template and instruction, as the corrector reports them

        def correct(start: int, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            outs, provenance["served"] = self.services.corrector.correct(
                aligner, [(r["prompt"], r["answer"]) for r in chunk], seed=seed + start, what=f"round {k} correct")
            return [{**r, "correction": o.text, "correction_finish_reason": o.finish_reason,
                     "correction_tokens": o.completion_tokens, "answer_cut_tokens": o.answer_cut_tokens}
                    for r, o in zip(chunk, outs)]

        def work(stage_dir: Path, rec: StageRecord) -> None:
            t0 = time.time()
            say(f"round {k} correct: the Aligner corrects {len(answers)} answers")
            partial = PartialRows(stage_dir / "corrections.partial.jsonl", rec.fingerprint,
                                  rows_per_call(cfg.correct, cfg.cluster.corrector))
            rows, rec.resumed_rows = partial.make(answers, correct, what=f"round {k} correct")
            # (token counts travel with the chunks; the corrections file keeps the fields it always had)
            counts = [(r.pop("correction_tokens"), r.pop("answer_cut_tokens")) for r in rows]
            write_jsonl(stage_dir / "corrections.jsonl", rows)
            partial.remove()
            dists = [normalized_edit_distance(r["answer"], r["correction"]) for r in rows]
            rec.outputs["corrections"] = stage_dir / "corrections.jsonl"
            if "served" not in provenance:  # every chunk was kept from before a stop
                provenance["served"] = self.services.corrector.hold(aligner).info
            rec.provenance = {"aligner": aligner, **provenance["served"]}
            rec.metrics = {"corrections": len(rows), "copy_rate": sum(d == 0 for d in dists) / len(rows),
                              "answers_cut": sum(cut > 0 for _, cut in counts),
                              "mean_edit_distance": sum(dists) / len(rows), "seconds": round(time.time() - t0, 2),
                              "tokens": sum(tokens for tokens, _ in counts)}
            say(f"round {k} correct: copy rate {rec.metrics['copy_rate']:.2f}, mean normalised edit distance "
                f"{rec.metrics['mean_edit_distance']:.3f}")

        inputs = {"answers": self.rd.stage_dir(k, GENERATE.name) / "answers.jsonl", "aligner": aligner}
        return read_jsonl(self.rd.run(CORRECT, k, inputs, work)["corrections"])

    def data_stage(self, k: int, corrections: list[dict[str, Any]]) -> Path:
        """SFT rows (prompt -> correction) or preference pairs (correction > answer) in OpenRLHF's format."""
        from w2s.backends.data import write_pair_rows, write_sft_rows
        from w2s.data.text import normalized_edit_distance

        method = self.cfg.train.method
        inputs = {"corrections": self.rd.stage_dir(k, CORRECT.name) / "corrections.jsonl"}
        if method == "dpo" and self.cfg.train.dpo.pair_source != "aligner":
            inputs["extra_pairs"] = source_file(self.cfg.train.dpo.extra_pairs)

        def work(stage_dir: Path, rec: StageRecord) -> None:
            path = stage_dir / ("sft.jsonl" if method == "sft" else "pairs.jsonl")
            rows, dropped = drop_truncated(corrections, method, self.cfg.loop.on_truncated)
            # The policy is trained in the format it answers in: its chat template, or model.strong.prompt_template
            # (rows then hold the rendered prompt as raw text).
            chat, prompt_of, reply = self.prompt_format()
            rows = [{**r, "prompt": prompt_of(r["prompt"]), "correction": reply(r["correction"]),
                     "answer": reply(r["answer"])} for r in rows]
            if method == "sft":
                kept = [r for r in rows if r["correction"].strip()]
                n = write_sft_rows(path, [(r["prompt"], r["correction"]) for r in kept], chat=chat)
                dropped["empty_correction"] = len(rows) - len(kept)
            else:
                threshold = float(self.cfg.train.dpo.min_pair_distance)
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
                if method == "dpo" and self.cfg.train.dpo.pair_source != "aligner":
                    extra = [(prompt_of(p), reply(c), reply(r)) for p, c, r in self.extra_pairs(k)]
                    pairs = extra if self.cfg.train.dpo.pair_source == "extra" else pairs + extra
                    random.Random(int(self.cfg.run.seed) + k).shuffle(pairs)
                    dropped["aligner_pairs_unused"] = len(kept) if self.cfg.train.dpo.pair_source == "extra" else 0
                    say(f"round {k} data: {len(extra)} extra pairs from {self.cfg.train.dpo.extra_pairs}")
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
            tokenizer = resolve_model_path(self.cfg.model.strong.path)
            section = self.cfg.train[method] if method != "rlhf" else self.cfg.train.rlhf.reward_model
            loadable = self.services.trainer.check_loads(CheckLoads(
                data=str(path), tokenizer=tokenizer, kind=kind, chat=chat, max_len=int(section.max_len),
                trust_remote_code=bool(self.cfg.model.strong.trust_remote_code)))
            rec.outputs["train"] = path
            rec.metrics = {"rows": n, "loadable_rows": loadable, **{f"dropped_{k2}": v for k2, v in dropped.items()}}
            say(f"round {k} data: {n} {method} rows written ({loadable} load in OpenRLHF), dropped {dropped}")

        return self.rd.run(DATA, k, inputs, work)["train"]

    def prompt_format(self) -> tuple[bool, Callable[[str], str], Callable[[str], str]]:
        """How training rows carry the policy's prompts and replies: chat-message lists for its chat template
        (True, both as they are), or raw text (False): the prompt rendered with ``model.strong.prompt_template``,
        the reply after one space, as the model's own answers follow the template's "ASSISTANT:"."""
        template = str(self.cfg.model.strong.prompt_template or "")
        if not template:
            return True, lambda prompt: prompt, lambda reply: reply
        from w2s.generation.chat import render_chat

        def reply(text: str) -> str:
            return text if not text.strip() or text[:1].isspace() else " " + text

        return (False, lambda prompt: render_chat(None, prompt, template=template, key="model.strong.prompt_template"),
                reply)

    def extra_pairs(self, k: int) -> list[tuple[str, str, str]]:
        """Round k's slice of train.dpo.extra_pairs (e.g. a PopAlign dataset) as (prompt, chosen, rejected)."""
        from w2s.data.io import read_rows

        d = self.cfg.train.dpo
        rows = read_rows(d.extra_pairs, required=["prompt", "chosen", "rejected"], what="train.dpo.extra_pairs").rows
        order = list(range(len(rows)))
        random.Random(int(self.cfg.run.seed)).shuffle(order)
        per = int(d.extra_pairs_per_round) or len(rows)
        picked = [rows[order[(k - 1) * per + i]] for i in range(per) if (k - 1) * per + i < len(order)]
        return [(r["prompt"], r["chosen"], r["rejected"]) for r in picked]

    def train_stage(self, k: int, policy: str, initial: str, data: Path, stage: Stage = TRAIN) -> str:
        """Round k's training of ``policy`` on ``data`` (the ceiling track's too: ``stage``), with the same method,
        section, seed and KL anchor."""
        cfg = self.cfg
        method = cfg.train.method
        inputs = {"data": data, "policy": policy}
        if method == "dpo" or (method == "rlhf" and cfg.train.rlhf.ppo_enabled):  # the KL anchor
            inputs["reference"] = initial if cfg.train.reference == "initial" else policy

        def work(stage_dir: Path, rec: StageRecord) -> None:
            prefix = "" if stage is TRAIN else f"{stage.name}-"
            tb = str(self.rd.path / "tensorboard" / f"round-{k:02d}-{prefix}{method}")
            out = stage_dir / "policy"
            chat = self.prompt_format()[0]
            say(f"round {k} {stage.name}: {method} from {policy}")
            common = dict(data=str(data), output=str(out), seed=int(cfg.run.seed) + k, tensorboard_dir=tb, chat=chat)
            if method == "sft":
                result = self.services.trainer.train(TrainSFT(section=cfg.train.sft, policy=policy, **common))
            elif method == "dpo":
                result = self.services.trainer.train(TrainDPO(section=cfg.train.dpo, policy=policy,
                                                              reference=inputs["reference"], **common))
            else:
                result = self.rlhf(k, policy, inputs.get("reference"), data, stage_dir, tb)
                out = Path(result.pop("policy"))
            rec.outputs["policy"] = out
            rec.metrics, rec.losses = training_metrics(result)
            rec.metrics.update({f"train_{m}": v for m, v in (result.get("metrics") or {}).items()
                                   if isinstance(v, (int, float))})
            say_losses(f"round {k} {stage.name}", rec.losses)

        return str(self.rd.run(stage, k, inputs, work)["policy"])

    def rlhf(self, k: int, policy: str, reference: str | None, data: Path, stage_dir: Path,
             tb: str) -> dict[str, Any]:
        """Reward model on the round's pairs, then (GPU clusters) PPO through OpenRLHF's Ray trainer. A reward model
        this stage finished before a stop (the same training, its files unchanged) is used again, not retrained."""
        from w2s.assets import resolve_model_path
        from w2s.backends.checkpoint import finished_output, mark_finished, training_record
        from w2s.config.plain import to_plain

        cfg = self.cfg
        rm_cfg = cfg.train.rlhf.reward_model
        rm_out = stage_dir / "reward_model"
        base, seed, chat = resolve_model_path(rm_cfg.base or policy), int(cfg.run.seed) + k, self.prompt_format()[0]
        record = training_record("reward_model", {"section": to_plain(rm_cfg), "seed": seed, "chat": chat},
                                 model_path=base, data_paths=(str(data),))
        kept = finished_output(rm_out, record)
        if kept is not None:
            say(f"round {k} train: the reward model trained before the stop is used again ({rm_out}, verified)")
            result, rm_sha = dict(kept["result"]), str(kept["sha256"])
        else:
            result = self.services.trainer.train(TrainRewardModel(
                section=rm_cfg, base=base, data=str(data), output=str(rm_out), seed=seed, tensorboard_dir=tb + "-rm",
                chat=chat))
            rm_sha = mark_finished(rm_out, record, result)
        result["policy"] = policy
        if cfg.train.rlhf.ppo_enabled:
            result["policy"] = str(self.ppo(k, policy, rm_out, stage_dir, reference=reference, reward_sha256=rm_sha))
        else:
            say(f"round {k} train: reward model trained ({rm_out}); PPO disabled (train.rlhf.ppo_enabled=false), "
                "the policy is unchanged this round")
        return result

    def ppo(self, k: int, policy: str, reward_model: Path, stage_dir: Path, *, reference: str | None = None,
            reward_sha256: str = "") -> Path:
        import ray

        from w2s.backends.ppo import alive_gpu_nodes
        from w2s.backends.ppo_launch import launch_ppo

        node_gpus = alive_gpu_nodes()
        cmd = self.ppo_command(k, policy, reward_model, stage_dir, ray.get_runtime_context().gcs_address,
                               node_gpus=node_gpus, reference=reference)
        ckpt = self.ppo_checkpoint(k, policy, reward_model, stage_dir, node_gpus, reference=reference,
                                   reward_sha256=reward_sha256)
        say(f"round {k} train: PPO through OpenRLHF ({stage_dir / 'ppo.log'})")
        self.services.close()  # PPO places its own actors on the trainer's GPUs: the roles give theirs back
        c = self.cfg.cluster
        launch_ppo(cmd, None, stage_dir / "ppo.log", idle_timeout_s=float(c.liveness_timeout_s) or float("inf"),
                   max_seconds=float(c.rpc_timeout_s) or None)
        shutil.rmtree(ckpt, ignore_errors=True)  # the policy is saved: its resumable state is not needed
        return stage_dir / "policy"

    def ppo_checkpoint(self, k: int, policy: str, reward_model: Path, stage_dir: Path,
                       node_gpus: list[int] | None, *, reference: str | None = None, reward_sha256: str = "") -> str:
        """Round k's PPO checkpoint folder, made this PPO's own before OpenRLHF starts: OpenRLHF loads whatever
        checkpoint it finds there, so another training's (other prompts, policy, settings, or a reward model of
        other contents: ``reward_sha256``) is removed first."""
        from w2s.backends.args import checkpoint_dir
        from w2s.backends.checkpoint import claim, training_record
        from w2s.config.plain import to_plain

        ppo_cfg = self.cfg.train.rlhf.ppo
        ckpt = checkpoint_dir(str(stage_dir / "policy"))
        if ppo_cfg.checkpoint_every:
            record = training_record("ppo", {"ppo": to_plain(ppo_cfg), "seed": int(self.cfg.run.seed) + k,
                                             "gpus": node_gpus, "reward_model": str(reward_model),
                                             "reward_model_sha256": reward_sha256},
                                     model_path=policy, ref_path=reference or policy,
                                     data_paths=(str(stage_dir / "ppo_prompts.jsonl"),))
            if claim(ckpt, record, state_dir=str(Path(ckpt) / "_actor")):  # OpenRLHF's actor state
                say(f"round {k} train: PPO goes on from its checkpoint in {ckpt}")
        return ckpt

    def ppo_command(self, k: int, policy: str, reward_model: Path, stage_dir: Path, ray_address: str,
                    node_gpus: list[int] | None = None, reference: str | None = None) -> list[str]:
        """OpenRLHF's PPO argv for round k: the round's prompts, the round's reward model, the trainer's GPUs
        laid out over the joined cluster's GPU nodes (``node_gpus``; None: as the config describes them), the KL
        anchor (``reference``; None: the policy)."""
        from w2s.backends.ppo import build_ppo_command, trainer_gpu_layout, write_prompt_rows

        cfg, c = self.cfg, self.cfg.cluster
        prompts = stage_dir / "ppo_prompts.jsonl"
        write_prompt_rows(prompts, [r["prompt"] for r in read_jsonl(self.rd.stage_dir(k, "generate") /
                                                                    "answers.jsonl")])
        # PPO runs on the GPUs the recipe gives the trainer role, laid out as whole nodes.
        num_nodes, per_node = trainer_gpu_layout(c, node_gpus)
        rm = cfg.train.rlhf.reward_model
        return build_ppo_command(
            cfg.train.rlhf.ppo, policy_path=policy, reward_model_path=str(reward_model), prompts_path=str(prompts),
            output_dir=str(stage_dir / "policy"), num_gpus_per_node=per_node, num_nodes=num_nodes,
            ray_address=ray_address, reward_max_len=int(rm.max_len), seed=int(cfg.run.seed) + k,
            zero_stage=int(rm.zero_stage), param_dtype=rm.param_dtype,
            attn_implementation=cfg.model.strong.attn_implementation,
            trust_remote_code=bool(cfg.model.strong.trust_remote_code),
            prompt_template=str(cfg.model.strong.prompt_template or ""),
            tensorboard_dir=str(self.rd.path / "tensorboard" / f"round-{k:02d}-ppo"), reference_path=reference)
