"""The weak-to-strong loop end to end on the tiny models, through Ray actors and OpenRLHF, on CPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from w2s.data.files import read_jsonl, write_jsonl
from w2s.eval.stats import sign_test

# Small but complete: 2 rounds of 4 prompts, 4 evaluation prompts.
SMALL = ["loop.prompts_per_round=4", "eval.max_prompts=4", "generate.max_new_tokens=12",
         "correct.max_new_tokens=12", "eval.generate.max_new_tokens=12"]


def w2s(*args: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w2s.cli", *args], capture_output=True, text=True, timeout=timeout,
                          **kw)


def _check_finished_run(run: Path, rounds: int, method: str) -> list[dict]:
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    stages = {(m["round"], m["stage"]) for m in metrics}
    for k in range(1, rounds + 1):
        assert {(k, "generate"), (k, "correct"), (k, "data"), (k, "train"), (k, "eval-vs-previous/similarity"),
                (k, "eval-vs-initial/similarity")} <= stages
        assert (run / f"round-{k:02d}" / "train" / "policy" / "config.json").exists()
    evals = [m for m in metrics if m["stage"] == "eval-vs-initial/similarity"]
    assert len(evals) == rounds
    for m in evals:
        assert m["wins"] + m["losses"] + m["ties"] + m["unparsed"] == 4 and m["unparsed"] == 0
        assert m["omega"] == pytest.approx(100 * (m["wins"] - m["losses"]) / 4)
        assert m["ci_low"] <= m["omega"] <= m["ci_high"] and m["p_value"] == pytest.approx(sign_test(m["wins"],
                                                                                                      m["losses"]))
        assert m["overlap_loop_prompts"] == 0  # checked before the run: none of the loop's prompts is evaluated
        # The outcomes behind the numbers, paired by prompt id, are in the run directory.
        outcomes = read_jsonl(run / f"round-{m['round']:02d}" / "compare" / "initial" / "outcomes.jsonl")
        sim = [o["outcome"] for o in outcomes if o["judge"] == "similarity"]
        assert len(sim) == 4 and sim.count("win") == m["wins"] and sim.count("loss") == m["losses"]
    html = (run / "report.html").read_text()
    assert (run / "report.md").exists() and (run / "plots" / "omega.png").exists()
    assert "data:image/png;base64," in html and "similarity" in html
    assert "configured as a dev set (eval.role=dev)" in html  # the role as configured, no claim beyond it
    assert "mean length (tokens)" in html  # each policy's answers beside the omegas: length confounds judges
    assert "corrections cut off" in html  # and what each round trained on
    data = run / "round-01" / "data" / ("sft.jsonl" if method == "sft" else "pairs.jsonl")
    rows = read_jsonl(data)
    assert rows and all(isinstance(r["prompt"], list) for r in rows)  # chat-message lists, as OpenRLHF wants
    corrections = {r["prompt"]: r for r in read_jsonl(run / "round-01" / "correct" / "corrections.jsonl")}
    for r in rows:  # the Aligner's correction is the target (SFT) or the chosen answer, the policy's the rejected
        source = corrections[r["prompt"][-1]["content"]]
        if method == "sft":
            assert r["response"][-1]["content"] == source["correction"]
        else:
            assert r["chosen"][-1]["content"] == source["correction"]
            assert r["rejected"][-1]["content"] == source["answer"]
    if method == "dpo":  # every round's reference is the initial policy (train.reference=initial)
        initial = json.loads((run / "round-00" / "eval-answers" / "manifest.json").read_text())["inputs"]["policy"]
        for k in range(1, rounds + 1):
            train = json.loads((run / f"round-{k:02d}" / "train" / "manifest.json").read_text())
            assert train["inputs"]["reference"] == initial
            assert train["inputs"]["policy"]["path"] == (initial["path"] if k == 1 else
                                                         f"round-{k - 1:02d}/train/policy")
    return metrics


# The Aligner trained first and judged on its held-out questions; a second, pairwise judge: a local model in the
# judge actors with the paper's harmlessness prompt (the random tiny model cannot write a verdict: all undecided).
ALIGNER_AND_PAIRWISE = [
    "aligner.train.enabled=true", "aligner.train.data.path=recipes/data/tiny/aligner_triples.jsonl",
    "aligner.train.eval_fraction=0.2", "aligner.train.global_batch_samples=4",
    "aligner.train.micro_batch_samples_per_device=2", "aligner.train.zero_stage=0", "aligner.train.max_len=256",
    "eval.judges.harmless.kind=pairwise", "eval.judges.harmless.backend=local",
    "eval.judges.harmless.model=asset:tiny-weak", "eval.judges.harmless.preset=harmlessness",
    "eval.judges.harmless.dtype=float32", "eval.judges.harmless.generate.max_new_tokens=6"]


@pytest.mark.slow  # w2s run
def test_sft_two_rounds_with_two_trainer_ranks_and_a_ceiling_track(tmp_path, tiny_strong):
    run = tmp_path / "run"
    # The ceiling track too (loop.ceiling): loop prompts with gold references, here the quickstart triples'
    # questions and corrections (none of them an evaluation prompt).
    refs = tmp_path / "prompts-with-references.jsonl"
    write_jsonl(refs, [{"id": r["id"], "prompt": r["question"], "reference": r["correction"]}
                       for r in read_jsonl("recipes/data/quickstart/triples.jsonl")[:16]])
    # No warm-up: each round's one SFT step moves both tracks' weights (a first warm-up step has no learning rate).
    ceiling = [f"loop.prompts.path={refs}", "loop.ceiling=true", "train.sft.optim.warmup_ratio=0"]
    # Six logical CPUs: every role's actors fit side by side (two trainer ranks, two judges), so each stays for
    # the run. ZeRO-3 over the two ranks for the Aligner, the policy and the ceiling, as the GPU recipes train.
    zero3 = ["aligner.train.zero_stage=3", "train.sft.zero_stage=3"]
    result = w2s("run", "tiny/sft", f"run.dir={run}", "cluster.trainer.num_actors=2", "cluster.num_cpus=6",
                 "cluster.trainer.num_cpus_per_actor=1", *SMALL, *ALIGNER_AND_PAIRWISE, *ceiling, *zero3,
                 env={**os.environ})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"run dir: {run}" in result.stdout
    # The actors' output (OpenRLHF's step bars, DeepSpeed's banners) is in their log files, not on the console.
    logs = {p.name: p.read_text() for p in (run / "logs").glob("*.log")}
    assert {"generator-0.log", "corrector-0.log", "trainer-0.log", "trainer-1.log", "judge-0.log"} <= set(logs)
    assert "Train step" in logs["trainer-0.log"] and "Train step" not in result.stdout + result.stderr
    assert len((result.stdout + result.stderr).splitlines()) < 120
    metrics = _check_finished_run(run, 2, "sft")
    # The ceiling track: each round's ceiling trained on the references (its rows are them), judged against the
    # initial policy, and PGR per judge with its three omegas.
    for k in (1, 2):
        sft_rows = read_jsonl(run / f"round-{k:02d}" / "ceiling-data" / "sft.jsonl")
        assert {r["response"][-1]["content"] for r in sft_rows} <= {r["reference"] for r in read_jsonl(refs)}
        policies = [run / f"round-{k:02d}" / t / "policy" / "model.safetensors" for t in ("train", "ceiling-train")]
        assert policies[0].read_bytes() != policies[1].read_bytes()
        pgr = {m["judge"]: m for m in metrics if m["round"] == k and str(m["stage"]).startswith("pgr/")}
        # (The tiny pairwise judge leaves most verdicts undecided: a judge with no prompt decided in all three
        # comparisons has no PGR row.)
        assert "similarity" in pgr and all(m["n"] > 0 for m in pgr.values())
        ceiling_rows = [m for m in metrics if m["round"] == k and m["stage"] == "ceiling-vs-initial/similarity"]
        assert pgr["similarity"]["omega_ceiling"] == pytest.approx(ceiling_rows[0]["omega"])
    # The Aligner on held-out triples: whole questions it never trained on, every judge.
    heldout = read_jsonl(run / "aligner-eval" / "corrections.jsonl")
    ids = {r["id"] for r in heldout}
    triples = read_jsonl("recipes/data/tiny/aligner_triples.jsonl")
    trained = {r["question"].strip().lower() for r in triples if r["id"] not in ids}
    assert heldout and not {r["question"].strip().lower() for r in heldout} & trained
    aligner = {m["judge"]: m for m in metrics if str(m["stage"]).startswith("aligner-eval/")}
    assert set(aligner) == {"similarity", "harmless"} and aligner["similarity"]["n"] == len(heldout)
    # The local pairwise judge judged every pair in both orders; its texts are kept for audit.
    pairwise = [m for m in metrics if m["stage"] == "eval-vs-initial/harmless"]
    assert len(pairwise) == 2 and all(m["n"] + m["unparsed"] == 4 for m in pairwise)
    # Identical answers are a tie without asking (greedy tiny policies often answer the same after training).
    for path, n in ((run / "aligner-eval" / "judgements.jsonl", len(heldout)),
                    (run / "round-02" / "compare" / "initial" / "judgements.jsonl", 4)):
        judgements = read_jsonl(path)
        identical = sum(bool(j.get("identical_answers")) for j in judgements)
        assert len(judgements) - identical == 2 * (n - identical)
    asked = [j for j in read_jsonl(run / "aligner-eval" / "judgements.jsonl") if not j.get("identical_answers")]
    assert asked and {j["candidate"] for j in asked} == {"A", "B"}
    placements = json.loads((run / "cluster.json").read_text())["actors"]
    # One process per role and rank for the whole run (the Aligner's training and both rounds' shared one trainer
    # world; each judge model has its own actor), each a different process.
    assert sorted((a["role"], a["rank"]) for a in placements) == [
        ("corrector", 0), ("generator", 0), ("judge", 0), ("judge", 0), ("trainer", 0), ("trainer", 1)]
    assert len({a["pid"] for a in placements}) == 6
    status = w2s("status", str(run))
    assert status.returncode == 0 and "round-02/train" in status.stdout and "omega" in status.stdout
    assert "configured as a dev set (eval.role=dev)" in status.stdout and "0 of them among the loop's prompts" in \
        status.stdout
    assert "round 2 PGR" in status.stdout and "Performance gap recovered" in (run / "report.html").read_text()
    # A finished run is not redone.
    again = w2s("run", "tiny/sft", f"run.dir={run}", "cluster.trainer.num_actors=2", "cluster.num_cpus=6",
                "cluster.trainer.num_cpus_per_actor=1", *SMALL, *ALIGNER_AND_PAIRWISE, *ceiling, *zero3)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "starting" not in again.stdout  # judge verdicts came from the cache, scores from the stages


@pytest.mark.slow  # w2s run
def test_dpo_with_the_roles_colocated_on_two_logical_gpus_keeps_every_process_and_takes_turns(tmp_path, tiny_strong):
    """The one-node layout with logical GPUs: rank i of every colocated role on GPU i (Ray's assignment, read in
    the actor), one process per role and rank for the whole run, the turns recorded, no role started after round
    1, each round's policy taken in place with the refit check passing, and the answers after a wake-up those of
    a fresh engine."""
    run = tmp_path / "run"
    greedy = ["generate.temperature=0", "eval.generate.preset=greedy"]  # (the tiny recipes set temperature 1)
    # tiny/colocated: generator, corrector and trainer colocated on two logical GPUs, two ranks each.
    result = w2s("run", "tiny/colocated", f"run.dir={run}", *SMALL, *greedy)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _check_finished_run(run, 2, "dpo")
    actors = json.loads((run / "cluster.json").read_text())["actors"]
    assert sorted((a["role"], a["rank"]) for a in actors) == [
        ("corrector", 0), ("corrector", 1), ("generator", 0), ("generator", 1), ("judge", 0), ("trainer", 0),
        ("trainer", 1)]
    assert len({a["pid"] for a in actors}) == len(actors)  # one process each, none restarted
    gpus = {(a["role"], a["rank"]): a["gpu_ids"] for a in actors}
    for rank in (0, 1):
        assert gpus[("generator", rank)] == gpus[("corrector", rank)] == gpus[("trainer", rank)]
        assert [a["pool_bundles"] for a in actors if a["rank"] == rank and a["role"] != "judge"] == [[rank]] * 3
    assert gpus[("trainer", 0)] != gpus[("trainer", 1)] and len(gpus[("trainer", 0)]) == 1
    assert gpus[("judge", 0)] == []
    manifest = lambda where: json.loads((run / where / "manifest.json").read_text())["services"]  # noqa: E731
    # Round 2 starts nothing: every role kept its processes.
    assert {p.parent.name: manifest(p.parent.relative_to(run))["started"] for p in run.glob("round-02/*/manifest.json")
            } == {stage: {} for stage in ("generate", "correct", "data", "train", "eval-answers")}
    # Each round's policy is taken in place by the generator (for the evaluation answers, right after training),
    # checked against the log-probabilities the trainer measured for the checkpoint it saved.
    policies = [run / f"round-{k:02d}" / "train" / "policy" / "model.safetensors" for k in (1, 2)]
    assert policies[0].read_bytes() != policies[1].read_bytes()  # each round's weights are new ones
    for k in (1, 2):
        [refit] = manifest(f"round-{k:02d}/eval-answers")["refits"]
        assert refit["role"] == "generator" and refit["path"] == str(run / f"round-{k:02d}" / "train" / "policy")
        assert refit["checked"] and refit["tokens"] > 10 and refit["mean_abs_diff"] <= refit["tolerance"] == 0.1
    # The DPO reference (ZeRO-3 over both ranks, its shards in host memory: train.dpo.ref_offload) is kept through
    # the other roles' turns: round 2 trains against it without loading it again.
    trained = [json.loads((run / f"round-{k:02d}" / "train" / "manifest.json").read_text())["metrics"] for k in (1, 2)]
    assert [m["train_reference_reused"] for m in trained] == [0, 1]
    # Its micro-batches packed (train.dpo.packing_samples), the model checked to keep the rows apart first.
    assert all(m["train_packing_difference"] < 1e-3 for m in trained)
    # The turns, in order: the one role about to work wakes up after the one that worked went to sleep; the
    # generator, whose next weights are the round's policy, keeps none while it sleeps.
    assert manifest("round-02/correct")["turns"] == [["generator", "discard"], ["corrector", "wake_up"]]
    assert manifest("round-02/data")["turns"] == [["corrector", "sleep"], ["trainer", "wake_up"]]
    assert manifest("round-02/eval-answers")["turns"] == [["trainer", "sleep"], ["generator", "wake_up"]]
    results = tmp_path / "results.md"
    # As `w2s bench loop --recipe` leaves it when it runs the recipe itself (w2s.memory.MachineMemory's samples).
    (run / "bench-loop-memory.json").write_text(json.dumps({"before_gib": 0.7, "peak_gib": 6.5, "every_s": 1.0}))
    bench = subprocess.run([sys.executable, "-m", "w2s.cli", "bench", "loop", "--run-dir", str(run), "--json",
                            "--write", str(results)], capture_output=True, text=True, timeout=120)
    rows = {r["stage"]: r for r in json.loads(bench.stdout.splitlines()[-1])}
    # The results file a README quotes: every comparison's numbers as the metrics hold them, the set's role.
    text = results.read_text()
    last = [m for m in read_jsonl(run / "metrics.jsonl") if m["stage"] == "eval-vs-initial/similarity"][-1]
    assert f"| round {last['round']} vs initial | similarity | {last['n']} | {last['omega']:+.1f} |" in text
    assert "configured as a dev set" in text and f"w2s bench loop --write {results} --run-dir {run}" in text
    for k in (0, 1, 2):  # each policy's answers as judged: their length and cut-off share, from the answers kept
        kept = read_jsonl(run / f"round-{k:02d}" / "eval-answers" / "answers.jsonl")
        tokens = sum(a["completion_tokens"] for a in kept) / len(kept)
        cut = sum(a["finish_reason"] == "length" for a in kept) / len(kept)
        assert f"| {k} | {kept[0]['policy']} | {len(kept)} | {tokens:.1f} | {cut:.0%} |" in text
    for k in (1, 2):  # and what each round trained on: its answers and corrections
        pairs = read_jsonl(run / f"round-{k:02d}" / "correct" / "corrections.jsonl")
        cut = sum(r["finish_reason"] == "length" for r in pairs) / len(pairs)
        assert f"| {k} | {len(pairs)} | {cut:.0%} |" in text
    assert rows["round-02 (total)"]["roles_started"] == "-"
    assert rows["round-02 (total)"]["refit_checks"].startswith("1 passed")
    assert f"| round-02 (total) | - | {rows['round-02 (total)']['refit_checks']} |" in text
    train = rows["round-01/train"]  # where the time went: each stage, not only the totals
    assert f"| round-01/train | {train['wall_s']} | {train['work_s']} |" in text
    assert "sampled every 1 s by `w2s bench loop` while the run ran): at most 6.5 GiB; 0.7 GiB before" in text
    # The answers the generator gave after waking up and taking the round-1 policy in place (round 2's) are those of
    # fresh generator actors loaded from that checkpoint (actors again: greedy decoding of a random tiny model turns
    # on the last bits of its logits, which another process's thread count already changes).
    import ray

    from w2s.config.compose import load_config
    from w2s.roles import Services

    cfg = load_config("tiny/colocated", [*SMALL, *greedy])
    answers = read_jsonl(run / "round-02" / "generate" / "answers.jsonl")
    ray.init(address="local", num_cpus=8, num_gpus=2, include_dashboard=False)
    try:
        with Services(cfg) as fresh:
            outs, _ = fresh.generator.generate(str(run / "round-01" / "train" / "policy"),
                                               [a["prompt"] for a in answers], cfg.generate, 0, what="fresh")
    finally:
        ray.shutdown()
    assert [o.text for o in outs] == [a["answer"] for a in answers]


def _start_and_signal(tmp_path: Path, args: list[str], marker: str, sig: int, name: str) -> int:
    """Start the driver, wait for ``marker`` in its output, send ``sig`` (to the whole process group for SIGKILL,
    as a crash would, or to the driver alone, as Slurm's warning does); return its exit status."""
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "w2s.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.time() + 600
        while marker not in log_path.read_text():
            assert driver.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, f"{marker!r} never appeared"
            time.sleep(0.5)
        if sig == signal.SIGKILL:
            os.killpg(driver.pid, sig)
        else:
            os.kill(driver.pid, sig)
        return driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


@pytest.mark.slow  # w2s run
def test_dpo_stopped_then_killed_mid_stage_resumes_without_redoing_finished_stages(tmp_path, tiny_strong):
    run = tmp_path / "run"
    args = ["run", "tiny/dpo", f"run.dir={run}", *SMALL]
    # Slurm's pre-emption warning: stop at a safe point, exit 143, the unfinished stage is not marked done.
    # (The generator and corrector stay loaded, so generation and correction take milliseconds on the tiny models:
    # the signal arrives while the trainer starts.)
    assert _start_and_signal(tmp_path, args, "round 1 train: dpo", signal.SIGUSR2, "first") == 143
    assert (run / "round-01" / "data" / "manifest.json").exists()
    assert not (run / "round-01" / "train" / "manifest.json").exists()
    assert "stopped during trainer" in (tmp_path / "first.log").read_text()
    # A crash in the middle of training: the driver and everything it started are killed.
    _start_and_signal(tmp_path, args, "round 1 train: dpo", signal.SIGKILL, "second")
    assert not (run / "round-01" / "train" / "manifest.json").exists()
    finished = {p: p.stat().st_mtime for p in run.glob("round-01/*/manifest.json")}
    assert {p.parent.name for p in finished} == {"generate", "correct", "data"}

    result = w2s(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(resuming)" in result.stdout
    assert all(p.stat().st_mtime == t for p, t in finished.items())  # finished stages were not redone
    metrics = _check_finished_run(run, 2, "dpo")
    assert sum(1 for m in metrics if (m["round"], m["stage"]) == (1, "generate")) == 1
    pairs = read_jsonl(run / "round-01" / "data" / "pairs.jsonl")
    assert len({json.dumps(p["prompt"]) for p in pairs}) == len(pairs)  # no duplicated rows
    # The resumed driver built fresh services and kept them: one process per role for the rest of the run. The
    # generator started with round 1's policy (its evaluation, then round 2's answers) and took round 2's policy
    # in place for the last evaluation.
    placements = json.loads((run / "cluster.json").read_text())["actors"]
    assert sorted(a["role"] for a in placements) == ["corrector", "generator", "judge", "trainer"]
    assert result.stdout.count("generator: took") == 1, result.stdout
    assert all(json.loads(p.read_text())["work_seconds"] > 0 for p in run.glob("round-02/*/manifest.json")
               if p.parent.name != "data")

    # Changing a finished stage's config is refused (exit 1, names the fix)...
    changed = w2s("run", "tiny/dpo", f"run.dir={run}", *SMALL[:-1], "eval.generate.max_new_tokens=11",
                  "generate.max_new_tokens=13")
    assert changed.returncode == 1 and "run.resume=fork" in changed.stderr


@pytest.mark.slow  # w2s run
def test_a_finished_run_grows_by_a_round(tmp_path, finished_dpo_run):
    """loop.rounds 2 -> 3 on a finished run: round 3 runs, rounds 0-2 are kept byte for byte (files and metrics)."""
    run = tmp_path / "run"
    shutil.copytree(finished_dpo_run, run)  # a run directory can move: its manifests hold paths inside it relative
    args = ["run", "tiny/dpo", f"run.dir={run}", *SMALL]
    before = {p: p.read_bytes() for p in sorted(run.glob("round-0[0-2]/**/*")) if p.is_file()}
    rows_before = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    grown = w2s(*args, "loop.rounds=3")
    assert grown.returncode == 0, grown.stdout[-3000:] + grown.stderr[-3000:]
    assert "round-01/generate: finished earlier, skipped" in grown.stdout
    assert {p: p.read_bytes() for p in before} == before  # nothing of rounds 0-2 rewritten
    assert not [p for p in run.glob("round-0[0-2]/**/*") if p.is_file() and p not in before]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[:len(rows_before)] == rows_before  # the earlier rows, as they were
    assert {r["round"] for r in rows[len(rows_before):]} == {3}  # and rows of round 3 only
    _check_finished_run(run, 3, "dpo")


@pytest.mark.slow  # w2s run: one seed resumes finished, one runs
def test_several_seeds_run_one_after_the_other_and_are_reported_together(tmp_path, finished_dpo_run):
    """`--seeds 42,7`: seed 42 is the shared finished run (42 is run.seed's default), copied in: it resumes with
    nothing to do; seed 7 runs; the report over both has each seed's omega and their mean."""
    base = tmp_path / "seeds"
    shutil.copytree(finished_dpo_run, base / "seed-42")
    result = w2s("run", "tiny/dpo", "--seeds", "42,7", f"run.dir={base}", *SMALL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "===== seed 42 (1/2) =====" in result.stdout and "===== seed 7 (2/2) =====" in result.stdout
    assert "round-01/generate: finished earlier, skipped" in result.stdout
    _check_finished_run(base / "seed-7", 2, "dpo")
    corrections = [read_jsonl(base / f"seed-{s}" / "round-01" / "correct" / "corrections.jsonl") for s in (42, 7)]
    assert [r["correction"] for r in corrections[0]] != [r["correction"] for r in corrections[1]]
    summary = json.loads((base / "summary.json").read_text())
    row = next(r for r in summary["comparisons"] if r["comparison"] == "round-02 vs initial")
    assert row["seeds"] == 2 and row["mean_omega"] == pytest.approx(sum(p["omega"] for p in row["per_seed"]) / 2)
    assert row["ci_low"] <= row["mean_omega"] <= row["ci_high"] and (base / "report.html").exists()


@pytest.mark.slow  # w2s run
def test_sigterm_while_ray_starts_stops_with_143_and_says_how_to_resume(tmp_path):
    """Ray installs its own SIGTERM handler while it starts (exit 15, no word); the driver keeps its own."""
    run = tmp_path / "run"
    args = ["run", "tiny/dpo", f"run.dir={run}", *SMALL]
    assert _start_and_signal(tmp_path, args, "run dir:", signal.SIGTERM, "early") == 143
    log = (tmp_path / "early.log").read_text()
    assert "received SIGTERM: stopping" in log  # at once before Ray starts, at the next safe point once it does
    assert "re-run the same command to resume" in log and not list(run.glob("round-*/*/manifest.json"))


@pytest.mark.slow  # w2s run
def test_a_policy_with_a_prompt_template_is_trained_in_the_format_it_answers_in(tmp_path, tiny_strong):
    """model.strong.prompt_template (pku, as the paper's Alpaca models need) reaches generation and the DPO rows
    alike: raw text rows rendered with it, the reply after one space, trained by OpenRLHF without a chat template."""
    run = tmp_path / "run"
    result = w2s("run", "tiny/dpo", f"run.dir={run}", *SMALL, "loop.rounds=1", "model.strong.prompt_template=pku",
                 "eval.enabled=false")  # the rows and the training are what is checked
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    corrections = read_jsonl(run / "round-01" / "correct" / "corrections.jsonl")
    pairs = read_jsonl(run / "round-01" / "data" / "pairs.jsonl")
    assert pairs and len(pairs) == len(corrections)
    by_prompt = {f"BEGINNING OF CONVERSATION: USER: {c['prompt']} ASSISTANT:": c for c in corrections}
    def after_one_space(text):
        return text if text[:1].isspace() else " " + text

    for p in pairs:
        source = by_prompt[p["prompt"]]  # a rendered string, not a chat-message list
        assert p["chosen"] == after_one_space(source["correction"])
        assert p["rejected"] == after_one_space(source["answer"])
    assert any(not c["correction"][:1].isspace() for c in corrections)  # the space was added somewhere
    train = json.loads((run / "round-01" / "train" / "manifest.json").read_text())
    assert train["metrics"]["train_rows_kept"] == len(pairs) and train["metrics"]["steps"] >= 1


def test_bad_prompt_file_fails_before_anything_starts(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    result = w2s("run", "tiny/dpo", f"run.dir={tmp_path / 'run'}", f"loop.prompts.path={prompts}")
    assert result.returncode == 1
    assert "prompts.jsonl" in result.stderr and "line 2" in result.stderr and "prompt" in result.stderr
    assert "ray:" not in result.stdout  # no cluster was started


def test_extra_pairs_slice_per_round_and_validation(tmp_path):
    """A PopAlign dataset (plain-text prompt/chosen/rejected) as a DPO round's data source."""
    from w2s.config.compose import load_config
    from w2s.controller.round_stages import extra_pairs
    from w2s.data.files import write_jsonl
    from w2s.errors import ConfigError

    pairs = tmp_path / "popalign.jsonl"
    write_jsonl(pairs, [{"strategy": "prefix", "prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
                        for i in range(10)])
    cfg = load_config("tiny/dpo", ["train.dpo.pair_source=both", f"train.dpo.extra_pairs={pairs}",
                                   "train.dpo.extra_pairs_per_round=4"])
    first, second = extra_pairs(cfg, 1), extra_pairs(cfg, 2)
    assert len(first) == len(second) == 4 and not set(first) & set(second)  # disjoint slices
    assert all(c.startswith("good") and r.startswith("bad") for _, c, r in first + second)
    with pytest.raises(ConfigError, match="train.dpo.extra_pairs"):
        load_config("tiny/dpo", ["train.dpo.pair_source=extra"])


def test_truncated_answers_and_corrections_do_not_train_the_policy():
    from w2s.controller.round_stages import drop_truncated

    rows = [{"id": "ok", "finish_reason": "stop", "correction_finish_reason": "stop"},
            {"id": "cut-answer", "finish_reason": "length", "correction_finish_reason": "stop"},
            {"id": "cut-correction", "finish_reason": "stop", "correction_finish_reason": "length"}]
    kept, counts = drop_truncated(rows, "dpo", "drop")
    assert [r["id"] for r in kept] == ["ok"] and counts == {"truncated_correction": 1, "truncated_answer": 1}
    kept, counts = drop_truncated(rows, "sft", "drop")  # SFT trains on the correction alone
    assert [r["id"] for r in kept] == ["ok", "cut-answer"] and counts["truncated_correction"] == 1
    assert drop_truncated(rows, "dpo", "keep") == (rows, {})


@pytest.mark.slow  # w2s run
def test_a_new_aligner_each_round_from_preference_pairs(tmp_path, tiny_strong, tiny_weak):
    """The paper's §4 on the tiny models: Aligner_k trained on round k's PKU-SafeRLHF-style rows (Aligner_2 from
    Aligner_1), each judged on its held-out questions and used to correct its own round. The roles share one
    logical GPU (cluster.colocate), so the corrector takes turns with the others and, its next Aligner a new one,
    sleeps without keeping the old one's weights."""
    run = tmp_path / "run"
    colocated = ["cluster.num_gpus=1", "cluster.colocate=[generator,corrector,trainer]"] + [
        f"cluster.{role}.num_gpus_per_actor=1" for role in ("generator", "corrector", "trainer")]
    args = ["run", "tiny/per-round", f"run.dir={run}", "loop.prompts_per_round=4", "eval.max_prompts=4", *colocated]
    result = w2s(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for k in (1, 2):
        aligner = run / f"round-{k:02d}" / "aligner"
        manifest = json.loads((aligner / "manifest.json").read_text())
        assert manifest["inputs"]["triples"]["path"].endswith(f"preference_round{k}.jsonl")
        correct = json.loads((run / f"round-{k:02d}" / "correct" / "manifest.json").read_text())
        assert correct["inputs"]["aligner"]["path"] == f"round-{k:02d}/aligner/model"  # its own round's Aligner
        meta = json.loads((aligner / "model" / "w2s_aligner.json").read_text())
        rows = read_jsonl(f"recipes/data/tiny/preference_round{k}.jsonl")
        heldout = {r["id"] for r in read_jsonl(aligner / "model.work" / "eval.jsonl")}
        both_safe = [r for r in rows if r["is_response_0_safe"] and r["is_response_1_safe"] and r["id"] not in heldout]
        assert meta["sizes"]["warmup"] == len(both_safe) > 0  # acceptable pairs are the identity warm-up
        assert meta["sizes"]["train"] == len(rows) - len(heldout)
    base2 = json.loads((run / "round-02" / "aligner" / "manifest.json").read_text())["inputs"]["base"]
    assert base2["path"] == "round-01/aligner/model"  # aligner.per_round_init: previous
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    stages = {(m["round"], m["stage"]) for m in metrics}
    assert stages >= {(k, s) for k in (1, 2) for s in ("aligner", "aligner-eval/similarity")}
    # One corrector process for both rounds: Aligner_2 (same base as Aligner_1) was taken in place.
    placements = json.loads((run / "cluster.json").read_text())["actors"]
    assert [a["role"] for a in placements].count("corrector") == 1 and "corrector: took" in result.stdout
    services = lambda where: json.loads((run / where / "manifest.json").read_text())["services"]  # noqa: E731
    [refit] = services("round-02/aligner-eval")["refits"]
    assert refit["role"] == "corrector" and refit["path"] == str(run / "round-02" / "aligner" / "model")
    assert refit["checked"] and refit["mean_abs_diff"] <= refit["tolerance"]
    # Round 1's corrections in, the corrector's next Aligner is Aligner_2: it sleeps keeping no weights (vLLM's
    # level 2 on a GPU), and Aligner_2's weights wake it. The last round's Aligner is kept: nothing replaces it.
    assert services("round-01/data")["turns"] == [["corrector", "discard"], ["trainer", "wake_up"]]
    assert services("round-02/data")["turns"] == [["corrector", "sleep"], ["trainer", "wake_up"]]
    again = w2s(*args)
    assert again.returncode == 0 and "training the weak Aligner" not in again.stdout
