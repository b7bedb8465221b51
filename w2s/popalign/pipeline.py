"""Building a PopAlign dataset: every strategy's generations on Ray groups, filters, judge check, output files.

Each distinct model (the generator M, the NParam and Leaderboard models, the Aligner) is loaded once by the run's
role services (:mod:`w2s.roles`) and serves every request of every strategy that needs it; requests that need an
earlier answer (refine's second turn, the Aligner's correction) are served once that answer exists.
Generations are appended to ``RUN_DIR/popalign/generations.jsonl`` chunk by chunk, keyed by a hash of the
model, its decoding, the seed and the exact conversation, so a stopped build resumes where it stopped; the
finished stage (``popalign/manifest.json``) is never rebuilt.

Outputs (named in the stage manifest): ``popalign.jsonl`` (one JSON object per pair: ``strategy``, ``prompt``,
``chosen``, ``rejected``, ``provenance``), ``pairs.jsonl`` (OpenRLHF's DPO format, checked with its dataset
class), ``dropped.jsonl`` (filtered pairs with their reason) and per-strategy counts in the manifest's metrics.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from w2s.config.plain import to_plain
from w2s.console import say
from w2s.data.files import append_jsonl, write_jsonl
from w2s.data.prompts import read_prompts
from w2s.errors import DataError
from w2s.generation.encoding import derive_seed
from w2s.generation.sampling import stage_seed
from w2s.popalign.strategies import CHOSEN, REJECTED, SLOTS, PairJob, ParseError, Request, make_builder
from w2s.rundir import RunDir, StageRecord, say_losses, source_file, training_metrics
from w2s.stages import POPALIGN, POPALIGN_TRAIN
from w2s.workers.requests import CheckLoads, TrainDPO

if TYPE_CHECKING:
    from w2s.roles import Services

ROLE_ORDER = ["generator", "larger", "higher", "smaller", "lower", "aligner"]
DROP_REASONS = ["unparsed", "empty", "truncated", "identical", "near_identical", "over_length"]


# ----------------------------------------------------------------------------------------------- models
def model_specs(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The model config (as a dict) of each role; empty paths fall back as the schema's help says."""
    p = cfg.popalign.models
    gen = to_plain(p.generator) if p.generator.path else to_plain(cfg.model.strong)
    return {"generator": gen,
            "larger": to_plain(p.larger) if p.larger.path else gen,
            "higher": to_plain(p.higher) if p.higher.path else gen,
            "smaller": to_plain(p.smaller), "lower": to_plain(p.lower),
            "aligner": to_plain(cfg.model.aligner)}


def _model_id(spec: dict[str, Any]) -> str:
    return json.dumps({k: spec.get(k) for k in ("path", "dtype", "attn_implementation", "trust_remote_code")},
                      sort_keys=True)


def seed_of(cfg: DictConfig) -> int:
    s = cfg.popalign.generate.seed
    return int(s if s is not None else cfg.run.seed)


def select_jobs(prompts: list[Any], cfg: DictConfig) -> list[PairJob]:
    """(prompt, strategy) jobs: each strategy takes round(weight x prompts) prompts, a seeded draw per strategy."""
    jobs = []
    for name in cfg.popalign.strategies:
        builder = make_builder(name, cfg.popalign)
        weight = float(cfg.popalign[name].weight)
        k = round(weight * len(prompts))
        rng = random.Random(f"{cfg.run.seed}-popalign-{name}")
        chosen = sorted(rng.sample(range(len(prompts)), k)) if k < len(prompts) else range(len(prompts))
        jobs += [PairJob(prompts[i].id, prompts[i].prompt, builder) for i in chosen]
    return jobs


# ----------------------------------------------------------------------------------------------- builder
class Build:
    """Serves every job's requests model by model, with a resumable cache of generations."""

    def __init__(self, cfg: DictConfig, rd: RunDir, stage_dir: Path, services: Services):
        from w2s.generation import resolve_sampling

        self.cfg, self.rd, self.services = cfg, rd, services
        self.specs = model_specs(cfg)
        self.seed = seed_of(cfg)
        self.sampling = {"chat": resolve_sampling(cfg.popalign.generate), "aligner": resolve_sampling(cfg.correct)}
        self.cache_path = stage_dir / "generations.jsonl"
        self.cache: dict[str, dict[str, Any]] = {}
        if self.cache_path.exists():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a partial last line from a killed build
                self.cache[row["key"]] = row
        self.aligner_provenance: dict[str, Any] = {}  # the served Aligner's (template, instruction, sampling)

    def key_of(self, req: Request) -> str:
        """The cache key of a request. Greedy answers to one conversation by one model are equal, so they are
        generated once and shared; sampled ones are each strategy's own draw (its own key and seed)."""
        if req.model == "aligner":
            extra = {"sampling": self.sampling["aligner"], "correct": to_plain(self.cfg.correct),
                     "templates": to_plain(self.cfg.aligner.templates), "run_seed": int(self.cfg.run.seed)}
        else:
            extra = {"sampling": self.sampling["chat"], "seed": self.seed}
            if not self.sampling["chat"]["greedy"]:
                extra["draw"] = req.draw
        data = {**req.key_data(), "model": _model_id(self.specs[req.model]), **extra}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def run(self, jobs: list[PairJob]) -> None:
        """Serve requests until every job has both outputs (one pass suffices for the built-in strategies)."""
        groups: dict[str, list[str]] = {}
        for role in ROLE_ORDER:
            gid = "aligner" if role == "aligner" else _model_id(self.specs[role])
            groups.setdefault(gid, []).append(role)
        for _ in range(len(groups) + 1):
            for gid, roles in groups.items():
                self.serve(gid, roles, jobs)
            if all(j.done for j in jobs):
                return
        raise DataError("popalign: some pairs never got both answers (a strategy depends on a model served later)")

    def _pending(self, roles: list[str], jobs: list[PairJob]) -> dict[str, Request]:
        todo: dict[str, Request] = {}
        for job in jobs:
            for req in job.pending(self.cache, self.key_of).values():
                if req.model in roles:
                    todo.setdefault(self.key_of(req), req)
        return todo

    def serve(self, gid: str, roles: list[str], jobs: list[PairJob]) -> None:
        spec = self.specs[roles[0]]
        announced = False
        while True:
            todo = self._pending(roles, jobs)
            if not todo:
                return
            if not announced:
                say(f"popalign: serving {spec['path']} for {', '.join(roles)} ({len(todo)} request(s) ready)")
                announced = True
            items = list(todo.items())
            size = int(self.cfg.popalign.output.chunk_requests)
            for lo in range(0, len(items), size):
                self._chunk(spec, gid == "aligner", items[lo:lo + size])

    def _chunk(self, spec: dict[str, Any], aligner: bool, items: list[tuple[str, Request]]) -> None:
        t0 = time.time()
        path = spec["path"]
        what = f"popalign {'correct' if aligner else 'generate'} ({Path(path).name})"
        if aligner:
            seed = stage_seed(self.cfg.correct.seed, self.cfg.run.seed, "popalign-correct")
            outs, self.aligner_provenance = self.services.corrector.correct(
                path, [(r.question, r.answer) for _, r in items], seed=seed, what=what)
            rendered = [""] * len(items)  # the Aligner's template is in aligner_provenance
        else:
            # A seed per request, from the run's seed and the request's key (its prompt, model and draw): a
            # sample does not depend on which chunk it falls in (on vLLM; transformers seeds each batch).
            requests = [(r.conversation(), derive_seed(self.seed, key)) for key, r in items]
            rendered, outs = self.services.generator.sample_chat(path, spec, requests, self.cfg.popalign.generate,
                                                                 what=what)
        for (key, req), out, text in zip(items, outs, rendered, strict=True):
            row = {"key": key, "model": req.model, "path": path, "text": out.text, "rendered": text,
                   "finish_reason": out.finish_reason, "prompt_tokens": out.prompt_tokens,
                   "completion_tokens": out.completion_tokens}
            if aligner:  # kept with the correction: a build resumed from the cache alone starts no corrector
                row["aligner_provenance"] = self.aligner_provenance
            append_jsonl(self.cache_path, row)
            self.cache[key] = row
        tokens = sum(o.completion_tokens for o in outs)
        say(f"{what}: {len(items)} answers, {tokens} tokens in {time.time() - t0:.1f} s")


# ----------------------------------------------------------------------------------------------- filters
class LengthCheck:
    """Token length of prompt + answer as the policy (model.strong) will be trained on it."""

    def __init__(self, tokenizer_path: str, max_len: int):
        from transformers import AutoTokenizer

        self.max_len = max_len
        self.tok = AutoTokenizer.from_pretrained(tokenizer_path) if max_len else None

    def too_long(self, prompt: str, answer: str) -> bool:
        if not self.max_len:
            return False
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        text = self.tok.apply_chat_template(msgs, tokenize=False) if self.tok.chat_template else prompt + answer
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) > self.max_len


def filter_pair(chosen: str, rejected: str, prompt: str, finish: dict[str, str], fcfg: Any,
                length: LengthCheck | None) -> str | None:
    """The drop reason of a pair, or None to keep it (checks in the order of DROP_REASONS)."""
    from w2s.data.text import normalize_text, normalized_edit_distance

    if not chosen.strip() or not rejected.strip():
        return "empty"
    if fcfg.drop_truncated and "length" in finish.values():
        return "truncated"
    if normalize_text(chosen) == normalize_text(rejected):
        return "identical"
    if normalized_edit_distance(normalize_text(chosen), normalize_text(rejected)) < float(fcfg.min_pair_distance):
        return "near_identical"
    if length is not None and (length.too_long(prompt, chosen) or length.too_long(prompt, rejected)):
        return "over_length"
    return None


def assemble(jobs: list[PairJob], build: Build, cfg: DictConfig,
             length: LengthCheck | None) -> tuple[list[dict], list[dict], dict[str, dict[str, int]]]:
    """Pairs with provenance, dropped pairs with reasons, and per-strategy counts."""
    counts: dict[str, dict[str, int]] = {}
    kept, dropped = [], []
    for job in jobs:
        name = job.builder.name
        c = counts.setdefault(name, {"pairs": 0, "kept": 0, **{f"dropped_{r}": 0 for r in DROP_REASONS}})
        c["pairs"] += 1
        out = job.outputs
        prov = {
            # The request's role, not the cached row's: identical requests to one model are generated once and shared.
            "models": {s: {"role": job.requests[s].model, "path": out[s]["path"]} for s in SLOTS},
            "prompts": {s: out[s]["rendered"] for s in SLOTS},
            "messages": {s: job.requests[s].key_data() for s in SLOTS},
            "sampling": {s: build.sampling["aligner" if job.requests[s].model == "aligner" else "chat"] for s in SLOTS},
            "seed": build.seed,
            "finish_reason": {s: out[s]["finish_reason"] for s in SLOTS},
            "completion_tokens": {s: out[s]["completion_tokens"] for s in SLOTS},
        }
        corrected = [out[s] for s in SLOTS if job.requests[s].model == "aligner"]
        if corrected:  # the provenance of the Aligner that wrote this correction (older caches do not keep it)
            prov["aligner"] = corrected[0].get("aligner_provenance") or build.aligner_provenance
        row = {"id": f"{job.prompt_id}:{name}", "prompt_id": job.prompt_id, "strategy": name, "prompt": job.query}
        try:
            texts = {s: job.builder.postprocess(s, out[s]["text"]) for s in SLOTS}
            reason = filter_pair(texts[CHOSEN], texts[REJECTED], job.query, prov["finish_reason"],
                                 cfg.popalign.filter, length)
        except ParseError as e:
            texts, reason = {s: "" for s in SLOTS}, "unparsed"
            prov["parse_error"] = e.reason
        if texts[CHOSEN] != out[CHOSEN]["text"].strip() or texts[REJECTED] != out[REJECTED]["text"].strip():
            prov["raw"] = {s: out[s]["text"] for s in SLOTS}
        row.update({"chosen": texts[CHOSEN], "rejected": texts[REJECTED], "provenance": prov})
        if reason is None:
            c["kept"] += 1
            kept.append(row)
        else:
            c[f"dropped_{reason}"] += 1
            dropped.append({**row, "drop_reason": reason})
    return kept, dropped, counts


def contrast_accuracy(rows: list[dict], references: dict[str, str], cfg: DictConfig,
                      services: Services) -> dict[str, dict]:
    """Share of pairs where the judge scores chosen above rejected, per strategy (ties counted apart)."""
    j = cfg.popalign.judge
    by_strategy: dict[str, list[dict]] = {}
    for r in rows:
        by_strategy.setdefault(r["strategy"], []).append(r)
    sample = []
    for name, group in by_strategy.items():
        n = int(j.max_pairs_per_strategy) or len(group)
        sample += random.Random(f"{cfg.run.seed}-judge-{name}").sample(group, min(n, len(group)))
    triples = [(r["prompt"], r[s], references.get(r["prompt_id"], "")) for r in sample for s in SLOTS]
    from w2s.config.schema import JudgeConfig

    fields = set(JudgeConfig.__dataclass_fields__)  # the judge itself; the sampling knobs stay here
    with services.judges.open("popalign", {k: v for k, v in to_plain(j).items() if k in fields}) as g:
        scores = g.score(triples, what="popalign judge")
    result: dict[str, dict] = {}
    for i, r in enumerate(sample):
        diff = scores[2 * i] - scores[2 * i + 1]
        c = result.setdefault(r["strategy"], {"judged": 0, "chosen_better": 0, "ties": 0})
        c["judged"] += 1
        c["chosen_better"] += diff > float(j.tie_margin)
        c["ties"] += abs(diff) <= float(j.tie_margin)
    for c in result.values():
        c["contrast_accuracy"] = c["chosen_better"] / c["judged"]
    return result


def _table(counts: dict[str, dict[str, int]], accuracy: dict[str, dict]) -> list[str]:
    head = f"{'strategy':<12} {'pairs':>6} {'kept':>6}  dropped (reason: count)" + ("  contrast acc." if accuracy
                                                                                   else "")
    lines = [head]
    for name, c in counts.items():
        drops = ", ".join(f"{r}: {c[f'dropped_{r}']}" for r in DROP_REASONS if c[f"dropped_{r}"]) or "-"
        acc = f"  {accuracy[name]['contrast_accuracy']:.3f} ({accuracy[name]['judged']})" if name in accuracy else ""
        lines.append(f"{name:<12} {c['pairs']:>6} {c['kept']:>6}  {drops}{acc}")
    return lines


# ----------------------------------------------------------------------------------------------- entry
def build_stage(cfg: DictConfig, rd: RunDir, services: Services) -> dict[str, Path]:
    """Build (or reuse) the PopAlign dataset; returns the stage's outputs (``popalign``, ``train``, ``dropped``)."""
    from w2s.assets import resolve_model_path
    from w2s.backends.data import write_pair_rows

    p = cfg.popalign

    def work(stage_dir: Path, rec: StageRecord) -> None:
        t0 = time.time()
        with_ref = bool(p.judge.enabled) and p.judge.kind == "embedding"
        prompts = read_prompts(p.prompts, with_reference=with_ref, what="popalign.prompts", echo=say)
        if p.max_prompts:
            prompts = prompts[: int(p.max_prompts)]
        jobs = select_jobs(prompts, cfg)
        say(f"popalign: {len(prompts)} prompts, {len(jobs)} pairs to build with "
            + ", ".join(f"{n} ({sum(j.builder.name == n for j in jobs)})" for n in p.strategies))
        build = Build(cfg, rd, stage_dir, services)
        build.run(jobs)
        policy_tok = resolve_model_path(cfg.model.strong.path)
        length = LengthCheck(policy_tok, int(p.filter.max_len)) if p.filter.max_len else None
        kept, dropped, counts = assemble(jobs, build, cfg, length)
        if not kept:
            raise DataError(f"popalign: every pair was dropped ({counts}); check the models, the decoding "
                            "(popalign.generate) and popalign.filter")
        if p.output.shuffle:
            random.Random(f"{cfg.run.seed}-popalign-mix").shuffle(kept)
        out, pairs = stage_dir / "popalign.jsonl", stage_dir / "pairs.jsonl"
        write_jsonl(out, kept)
        write_pair_rows(pairs, [(r["prompt"], r["chosen"], r["rejected"]) for r in kept])
        max_len = int(p.filter.max_len) or int(cfg.train.dpo.max_len)
        loadable = services.trainer.check_loads(CheckLoads(
            data=str(pairs), tokenizer=policy_tok, kind="dpo", chat=True, max_len=max_len,
            trust_remote_code=bool(cfg.model.strong.trust_remote_code)))
        rec.outputs.update({"popalign": out, "train": pairs})
        if p.output.write_dropped:
            write_jsonl(stage_dir / "dropped.jsonl", dropped)
            rec.outputs["dropped"] = stage_dir / "dropped.jsonl"
        accuracy: dict[str, dict] = {}
        if p.judge.enabled:
            refs = {q.id: q.reference for q in prompts}
            accuracy = contrast_accuracy(kept, refs, cfg, services)
        rec.extra["strategies"] = {n: {**c, **accuracy.get(n, {})} for n, c in counts.items()}
        rec.extra["model_loads"] = dict(services.loads)
        rec.metrics = {"prompts": len(prompts), "pairs": len(jobs), "kept": len(kept), "dropped": len(dropped),
                       "loadable_rows": loadable, "seconds": round(time.time() - t0, 2)}
        for name, c in rec.extra["strategies"].items():  # one row per strategy, then the stage's own (by the runner)
            rd.log_metrics(None, f"{POPALIGN.name}/{name}", c)
        for line in _table(counts, accuracy):
            say(f"popalign: {line}")
        say(f"popalign: {len(kept)} pairs kept of {len(jobs)} ({loadable} load in OpenRLHF's DPO dataset): {out}")

    return rd.run(POPALIGN, None, {"prompts": source_file(cfg.popalign.prompts.path)}, work)


def train_stage(cfg: DictConfig, rd: RunDir, data: Path, services: Services) -> Path:
    """DPO of model.strong on the PopAlign pairs (train.dpo settings; the reference is model.strong); the policy."""
    from w2s.assets import resolve_model_path

    policy = resolve_model_path(cfg.model.strong.path, progress=say)

    def work(stage_dir: Path, rec: StageRecord) -> None:
        out = stage_dir / "policy"
        say(f"popalign train: DPO of {policy} on {data}")
        result = services.trainer.train(TrainDPO(
            section=cfg.train.dpo, policy=policy, reference=policy, data=str(data), output=str(out),
            seed=int(cfg.run.seed), tensorboard_dir=str(rd.path / "tensorboard" / "popalign-dpo")))
        rec.outputs["policy"] = out
        rec.metrics, rec.losses = training_metrics(result)
        say_losses("popalign train", rec.losses)

    return rd.run(POPALIGN_TRAIN, None, {"data": data, "policy": policy}, work)["policy"]


def run_popalign(cfg: DictConfig, rd: RunDir, services: Services) -> dict[str, Path | None]:
    """The ``popalign`` job: build the dataset, then (``popalign.train_dpo``) train on it with DPO.

    Returns:
        ``{"pairs": the dataset, "policy": the trained policy or None}``.
    """
    built = build_stage(cfg, rd, services)
    policy = train_stage(cfg, rd, built["train"], services) if cfg.popalign.train_dpo else None
    return {"pairs": built["popalign"], "policy": policy}
