"""``w2s eval``: compare two answer sources on a prompt set with the configured judges, and write a report.

Sources (``--candidate``/``--baseline``, or ``--upstream`` with ``--aligner``):

* an answers file (JSONL, JSON, Parquet, CSV, a ``datasets`` folder) with ``id`` and an answer field
  (``--answer-key``, default ``answer``), paired with the prompts by id;
* a model (directory, ``asset:NAME`` or hub name): it answers the prompts with ``eval.generate`` and the
  ``model.strong`` settings (dtype, prompt template);
* ``openai:MODEL@BASE_URL``: an OpenAI-compatible endpoint answers them (``--api-key-env`` names the key's variable).

With ``--upstream SRC --aligner PATH`` the baseline is the upstream's answers and the candidate the Aligner's
corrections of them: the paper's Table 1 experiment. Everything goes to ``--output``: the answers of each side
(reused when the same source is given again), per-prompt outcomes, every judge verdict, the judge cache,
``summary.json``, ``report.html`` and ``report.md``. One process writes an output folder at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from w2s.config.plain import to_plain
from w2s.console import say
from w2s.data.files import WriterLock, atomic_write_json, read_jsonl, write_jsonl
from w2s.errors import DataError, W2SError
from w2s.roles.on_demand import ServicesOnDemand


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from w2s.aligner.cli import _collect_overrides, non_negative

    p = subparsers.add_parser("eval", help="compare two answer sources with the configured judges; write a report",
                              description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (eval.judges.*, ...)")
    p.add_argument("--recipe", help="recipe whose eval section (judges, prompts, decoding) is used")
    p.add_argument("--prompts", help="prompt set (default: the recipe's eval.prompts.path)")
    p.add_argument("--candidate", help="answers file, model, or openai:MODEL@BASE_URL")
    p.add_argument("--baseline", help="answers file, model, or openai:MODEL@BASE_URL")
    p.add_argument("--upstream", help="with --aligner: the upstream whose answers the Aligner corrects")
    p.add_argument("--aligner", help="with --upstream: the Aligner stacked on it")
    p.add_argument("--output", required=True, help="output folder (resumed when it exists)")
    p.add_argument("--answer-key", default="answer", help="answer field of answer files (default: answer)")
    p.add_argument("--api-key-env", default="", help="environment variable holding an answer endpoint's API key")
    p.add_argument("--max-prompts", type=non_negative, default=0, help="evaluate on at most this many prompts (0: "
                   "all)")
    p.set_defaults(func=cmd_eval)
    _collect_overrides(p)
    return p


def _kind(source: str) -> str:
    from w2s.assets import ASSET_PREFIX, looks_local

    if source.startswith("openai:"):
        return "endpoint"
    path = Path(source)
    if path.is_dir() and (path / "config.json").exists() or source.startswith(ASSET_PREFIX):
        return "model"
    if path.exists():
        return "file"
    if looks_local(source):
        raise DataError(f"{source}: no such file or model directory")
    return "model"  # a hub name


def _from_file(source: str, ids: list[str], answer_key: str) -> dict[str, str]:
    from w2s.data.io import read_rows

    rows = read_rows(source, required=[answer_key], what=f"answers ({source})", allow_empty=[answer_key],
                     unique_ids=True).rows
    answers = {str(r["id"]): r[answer_key] for r in rows}
    missing = [i for i in ids if i not in answers]
    if missing:
        raise DataError(f"{source}: no answer for {len(missing)} of the {len(ids)} prompt ids (first: "
                        f"{missing[:5]}); answers are paired with prompts by id")
    return {i: answers[i] for i in ids}


def _from_endpoint(source: str, prompts: list[Any], cfg: Any, key_env: str) -> dict[str, str]:
    from w2s.config.schema import EndpointConfig
    from w2s.eval.endpoint import ChatEndpoint
    from w2s.generation.sampling import resolve_sampling

    model, _, base_url = source[len("openai:"):].partition("@")
    if not model or not base_url:
        raise W2SError(f"{source}: write an endpoint source as openai:MODEL@BASE_URL, e.g. "
                       "openai:gpt-4o@https://api.openai.com/v1")
    s = resolve_sampling(cfg.eval.generate)
    endpoint = EndpointConfig(base_url=base_url, model=model, api_key_env=key_env)  # its retry defaults
    chat = ChatEndpoint(endpoint, temperature=s["temperature"], max_tokens=int(s["max_new_tokens"]), seed=s["seed"])
    try:
        texts = chat.complete([[{"role": "user", "content": p.prompt}] for p in prompts])
    finally:
        chat.close()
    return {p.id: t for p, t in zip(prompts, texts)}


def _from_model(source: str, prompts: list[Any], cfg: Any, services: ServicesOnDemand) -> dict[str, str]:
    """A model's answers, from the role services' generator (``model.strong``'s settings, ``eval.generate``'s
    decoding), as a round's evaluation answers are made."""
    outs, _ = services().generator.generate(source, [p.prompt for p in prompts], cfg.eval.generate,
                                            int(cfg.run.seed), what=f"{source} answers")
    return {p.id: o.text for p, o in zip(prompts, outs)}


def answers_of(side: str, source: str, prompts: list[Any], cfg: Any, args: argparse.Namespace,
               out: Path, services: ServicesOnDemand) -> dict[str, str]:
    """One side's answers: read, generated or fetched; kept in OUT/answers-SIDE.jsonl and reused for the same
    source and prompts."""
    ids = [p.id for p in prompts]
    kind = _kind(source)
    if kind == "file":
        return _from_file(source, ids, args.answer_key)
    path, spec = out / f"answers-{side}.jsonl", {"source": source, "ids": ids,
                                                  "generate": to_plain(cfg.eval.generate)}
    meta = path.with_suffix(".source.json")
    if path.exists() and meta.exists() and json.loads(meta.read_text()) == spec:
        say(f"{side}: answers from {source} already in {path}")
        return {str(r["id"]): r["answer"] for r in read_jsonl(path)}
    t0 = time.time()
    say(f"{side}: {source} answers {len(prompts)} prompts")
    answers = _from_endpoint(source, prompts, cfg, args.api_key_env) if kind == "endpoint" else \
        _from_model(source, prompts, cfg, services)
    write_jsonl(path, [{"id": i, "prompt": p.prompt, "answer": answers[i]} for i, p in zip(ids, prompts)])
    atomic_write_json(meta, spec)
    say(f"{side}: {len(answers)} answers in {time.time() - t0:.0f} s")
    return answers


def aligner_corrections(aligner: str, prompts: list[Any], upstream: dict[str, str], cfg: Any, out: Path,
                        services: ServicesOnDemand) -> dict[str, str]:
    """The Aligner's corrections of the upstream answers, by the role services' corrector (resumable through
    ``correct_file``)."""
    from w2s.aligner.correct import cli_correction_seed, correct_file
    from w2s.data.partial import rows_per_call

    rows = out / "upstream.jsonl"
    write_jsonl(rows, [{"id": p.id, "question": p.prompt, "answer": upstream[p.id]} for p in prompts])
    output = out / "corrections.jsonl"
    correct_file(aligner, str(rows), str(output), model_cfg=cfg.model.aligner, correct_cfg=cfg.correct,
                 user_templates=dict(cfg.aligner.templates), seed=cli_correction_seed(cfg), progress=False, echo=say,
                 chunk=rows_per_call(cfg.correct, cfg.cluster.corrector),
                 make_corrector=lambda: services.corrector(aligner))
    return {str(r["id"]): r[cfg.correct.output_key] for r in read_jsonl(output)}


def cmd_eval(args: argparse.Namespace) -> int:
    from w2s.aligner.cli import compose
    from w2s.config.validate import check_judges
    from w2s.data.prompts import read_prompts
    from w2s.errors import ConfigError

    if bool(args.upstream) != bool(args.aligner) or bool(args.upstream) == bool(args.candidate or args.baseline):
        raise W2SError("give --candidate and --baseline, or --upstream and --aligner (the Aligner's corrections "
                       "judged against the upstream's answers)")
    if not args.upstream and not (args.candidate and args.baseline):
        raise W2SError("give both --candidate and --baseline")
    overrides = list(args.overrides) + ([f"eval.prompts.path={args.prompts}"] if args.prompts else [])
    cfg = compose(args.recipe, overrides, job="eval")
    issues: list[Any] = []
    check_judges(cfg.eval.judges, cfg.cluster.judge, issues)
    if issues:
        raise ConfigError(issues, "w2s eval")
    embedding = any(j.enabled and j.kind == "embedding" for j in cfg.eval.judges.values())
    prompts = read_prompts(cfg.eval.prompts, with_reference=embedding, what="prompts", echo=say)
    prompts = prompts[: args.max_prompts] if args.max_prompts else prompts
    check_models(args, cfg)
    overlap = aligner_overlap(args.aligner, prompts, cfg) if args.aligner else None
    out = Path(args.output).resolve()
    # Models, the Aligner and the judges run in the role services' actors, as in a round (their logs in OUT/logs),
    # started when first needed: bad answer files are reported before any actor starts.
    with WriterLock(out / ".w2s-eval.lock", f"evaluation folder {out}"), contextlib.ExitStack() as stack:
        services = ServicesOnDemand(stack, cfg, out / "logs")

        def evaluate() -> int:  # a retry (run.max_retries) reuses the answers and judgements already kept
            if args.upstream:
                baseline = answers_of("upstream", args.upstream, prompts, cfg, args, out, services)
                candidate = aligner_corrections(args.aligner, prompts, baseline, cfg, out, services)
                labels = (f"{args.upstream} + Aligner {args.aligner}", str(args.upstream))
            else:
                candidate = answers_of("candidate", args.candidate, prompts, cfg, args, out, services)
                baseline = answers_of("baseline", args.baseline, prompts, cfg, args, out, services)
                labels = (str(args.candidate), str(args.baseline))
            return evaluate_and_report(cfg, prompts, candidate, baseline, labels, out, services, overlap=overlap)

        return services.retrying("evaluation", evaluate)


def check_models(args: argparse.Namespace, cfg: Any) -> None:
    """What can be known of the models without loading them, checked here before any actor starts: each model
    source's folder (or asset) and any code it ships (run in the generator only with
    ``model.strong.trust_remote_code``), and the Aligner as ``w2s aligner correct`` checks it."""
    from w2s.aligner.correct import check_aligner
    from w2s.assets import resolve_model_path
    from w2s.backends.models import guard_remote_code

    for source in (args.candidate, args.baseline, args.upstream):
        if source and _kind(source) == "model":
            guard_remote_code(resolve_model_path(source), bool(cfg.model.strong.trust_remote_code),
                              key="model.strong.trust_remote_code")
    if args.aligner:
        check_aligner(args.aligner, cfg.model.aligner, cfg.correct, to_plain(cfg.aligner.templates) or None)


def aligner_overlap(aligner: str, prompts: list[Any], cfg: Any) -> dict[str, Any]:
    """How many prompts the Aligner was trained on (:mod:`w2s.aligner.trained_questions`), checked before anything
    starts: refused unless ``eval.allow_overlap``, which runs with the count in ``summary.json`` and the report."""
    from w2s.aligner.trained_questions import seen_in_training
    from w2s.assets import resolve_model_path

    path = resolve_model_path(aligner)
    ids = seen_in_training(path, [(p.id, p.prompt) for p in prompts])
    if ids is None:
        say(f"the Aligner {aligner} records no training questions (trained before w2s kept them, or elsewhere): "
            "whether the prompts were among them is not checked")
        return {"checked": False}
    if ids and not cfg.eval.allow_overlap:
        raise DataError(f"{len(ids)} of the {len(prompts)} prompts were the Aligner's training questions (ids "
                        f"{', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''}): its effect there is not its "
                        "effect on new questions. Evaluate on prompts it never saw, or set eval.allow_overlap=true "
                        "to run anyway (the count goes into summary.json and the report)")
    if ids:
        say(f"warning: {len(ids)} of the {len(prompts)} prompts were the Aligner's training questions "
            "(eval.allow_overlap=true)")
    return {"checked": True, "aligner_training_questions": len(ids), "ids": ids[:50]}


def evaluate_and_report(cfg: Any, prompts: list[Any], candidate: dict[str, str], baseline: dict[str, str],
                        labels: tuple[str, str], out: Path, services: ServicesOnDemand, *,
                        overlap: dict[str, Any] | None = None) -> int:
    from w2s.eval.panel import EvalItem, compare

    result = compare(cfg.eval.judges, EvalItem.of(prompts), {"eval": (candidate, baseline)},
                     open_workers=lambda name, judge_cfg: services().judges.open(name, judge_cfg),
                     cache_dir=out / "judge-cache", seed=int(cfg.run.seed), say=say)["eval"]
    result.write(out)
    summaries = {name: s.as_dict() for name, s in result.summaries.items()}
    atomic_write_json(out / "summary.json", {"candidate": labels[0], "baseline": labels[1], "prompts": len(prompts),
                                             "overlap": overlap, "judges": summaries})
    say(f"candidate {labels[0]} vs baseline {labels[1]} on {len(prompts)} prompts:")
    for s in result.summaries.values():
        say(f"  {s.line()}")
    html = write_eval_report(out, prompts, candidate, baseline, labels, result, overlap)
    say(f"report: {html}")
    return 0


def write_eval_report(out: Path, prompts: list[Any], candidate: dict[str, str], baseline: dict[str, str],
                      labels: tuple[str, str], result: Any, overlap: dict[str, Any] | None = None) -> Path:
    from w2s.eval.html import Section, Text
    from w2s.eval.report import OMEGA_NOTE, agreement_figure, category_table, omega_table, samples, write_reports

    rows = [s.as_dict() for s in result.summaries.values()]
    seen = ""
    if overlap is not None:
        seen = (f"\n\n{overlap['aligner_training_questions']} of the {len(prompts)} prompts were the Aligner's "
                "training questions." if overlap["checked"] else
                "\n\nThe Aligner records no training questions: whether these prompts were among them is unknown.")
    blocks: list[Any] = [Text(f"Candidate: {labels[0]}\n\nBaseline: {labels[1]}\n\n{len(prompts)} prompts, paired by "
                              f"id.{seen}\n\n{OMEGA_NOTE}"), omega_table(rows, [], "Candidate vs baseline, per judge.")]
    cats = category_table(rows)
    agree = agreement_figure(result.outcomes, out / "plots" / "agreement.png")
    blocks += [b for b in (cats, agree) if b]
    sample = samples([{"prompt": p.prompt, "baseline": baseline[p.id], "candidate": candidate[p.id],
                       **{j: str(result.outcomes[j].get(p.id)) for j in result.outcomes}} for p in prompts],
                     ["prompt", "baseline", "candidate", *result.outcomes], "Prompts with both answers and each "
                     "judge's outcome for the candidate.", limit=12)
    sections = [Section("Result", blocks), Section("Samples", [sample] if sample else [])]
    command = shlex.join(["w2s", *sys.argv[1:]])  # what wrote it, so that a results file quoting it says how
    html, _ = write_reports(out, "w2s eval: candidate vs baseline", sections,
                            subtitle=f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}")
    return html
