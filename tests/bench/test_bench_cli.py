"""`w2s bench` on the tiny models: generation and training in the role actors a round starts, the Aligner's effect
on both held-out sets, where a run's time went; each prints a table."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import pytest

from w2s.errors import W2SError


def test_bench_aligner_refuses_to_choose_on_a_test_set(tmp_path):
    from w2s.bench.aligner import bench_aligner

    args = argparse.Namespace(recipe="quickstart", overrides=[], output=str(tmp_path / "out"), aligner=None)
    with pytest.raises(W2SError, match=r"eval.role=test \(recipes/data/quickstart/test.jsonl\).*quickstart-dev"):
        bench_aligner(args)
    assert not (tmp_path / "out").exists()  # refused before training anything
    # One Aligner per seed is trained: an Aligner trained before cannot be measured "per seed".
    args = argparse.Namespace(recipe="quickstart-dev", overrides=[], output=str(tmp_path / "out"), aligner="a",
                              seeds=[1, 2])
    with pytest.raises(W2SError, match="--seeds trains one Aligner per seed and --aligner measures one"):
        bench_aligner(args)
    assert not (tmp_path / "out").exists()


def test_the_seeds_together_are_the_mean_of_their_omegas_with_the_outcomes_counted_together(tmp_path):
    from w2s.bench.aligner import _over_seeds
    from w2s.data.files import write_jsonl

    outcomes = {1: ["win", "win", "loss", "tie"], 2: ["loss", "tie", "tie", "tie"]}  # omega +25 and -25
    for seed, values in outcomes.items():
        write_jsonl(tmp_path / f"seed-{seed}" / "eval-prompts" / "outcomes.jsonl",
                    [{"id": f"p{i}", "judge": "similarity", "outcome": o} for i, o in enumerate(values)])
    rows = [{"seed": 1, "set": "eval prompts", "n": 4, "omega": 25.0, "W/L/T": "2/1/1", "copy_rate": 0.5,
             "cut_off_rate": 0.0, "train_s": 3, "eval_s": 1},
            {"seed": 2, "set": "eval prompts", "n": 4, "omega": -25.0, "W/L/T": "0/1/3", "copy_rate": 0.25,
             "cut_off_rate": 0.25, "train_s": 4, "eval_s": 2},
            {"seed": 1, "set": "held-out triples", "n": 0, "omega": 0.0, "W/L/T": "0/0/0", "copy_rate": 0.0,
             "cut_off_rate": 0.0, "train_s": 3, "eval_s": 1}]  # no outcomes kept: no row over the seeds
    [together] = _over_seeds(tmp_path, [1, 2], rows)
    assert together["seed"] == "all" and together["set"] == "eval prompts" and together["omega"] == 0.0
    assert together["n"] == 8 and together["W/L/T"] == "2/2/4" and together["p"] is None
    assert together["copy_rate"] == 0.375 and together["cut_off_rate"] == 0.125
    low, high = (float(x) for x in together["ci95"].strip("[]").split(","))
    assert low < 0 < high  # the seeds disagree: the CI holds both


@pytest.mark.slow  # trains an Aligner per seed
def test_bench_aligner_reports_both_held_out_sets_per_seed_and_over_the_seeds(benched_tiny_aligner):
    out, stdout = benched_tiny_aligner
    rows = json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("[")))
    assert [(r["seed"], r["set"]) for r in rows] == [
        (1, "held-out triples"), (1, "eval prompts"), (2, "held-out triples"), (2, "eval prompts"),
        ("all", "held-out triples"), ("all", "eval prompts")]
    heldout = {s: [json.loads(line) for line in (out / f"seed-{s}" / "aligner.work" / "eval.jsonl").read_text()
                   .splitlines()] for s in (1, 2)}
    assert [h["id"] for h in heldout[1]] != [h["id"] for h in heldout[2]]  # run.seed: another split per seed
    for r in rows[:4]:
        assert r["n"] == (len(heldout[r["seed"]]) if r["set"] == "held-out triples" else 4)
        wins, losses, ties = (int(x) for x in r["W/L/T"].split("/"))
        assert wins + losses + ties == r["n"] and r["omega"] == round(100 * (wins - losses) / r["n"], 1)
        # The rates are those of the corrections written (copies of the answer, cut off at max_new_tokens).
        written = [json.loads(line) for line in (out / f"seed-{r['seed']}" / r["set"].replace(" ", "-") /
                                                 "corrections.jsonl").read_text().splitlines()]
        assert len(written) == r["n"]
        cut = sum(w["w2s_correction"]["finish_reason"] == "length" for w in written)
        assert r["cut_off_rate"] == round(cut / r["n"], 3)
        assert {w["w2s_correction"]["base_seed"] for w in written} == {r["seed"]}  # each seed corrects with its own
    assert (out / "seed-1" / "eval-prompts" / "report.html").exists()
    # The seeds together: the mean of their omegas, the outcomes summed, a two-level CI around the mean.
    for r in rows[4:]:
        mine = [m for m in rows[:4] if m["set"] == r["set"]]
        assert r["omega"] == pytest.approx(sum(m["omega"] for m in mine) / 2, abs=0.06)
        assert r["n"] == sum(m["n"] for m in mine) and r["p"] is None
        counts = [sum(int(m["W/L/T"].split("/")[i]) for m in mine) for i in range(3)]
        assert r["W/L/T"] == "/".join(map(str, counts))
        low, high = (float(x) for x in r["ci95"].strip("[]").split(","))
        assert low <= r["omega"] <= high
    # --write: the same rows in a results file, with the Aligner's triples named by content and the set's role.
    results = (out / "results.md").read_text()
    assert "`w2s bench aligner --recipe tiny/aligner --seeds 1,2 --write " in results
    assert "a dev set (eval.role=dev)" in results and "two-level bootstrap" in results
    assert "triples of `recipes/data/tiny/aligner_triples.jsonl` (sha256 " in results
    for r in rows:
        assert f"| {r['seed']} | {r['set']} | {r['n']} | {r['omega']:+.1f} | {r['ci95']} | {r['W/L/T']} |" in results
    # ... and by category: the evaluation prompts' categories (the quickstart dev set's four), counts adding up.
    by_category = rows[1]["by_category"]
    assert set(by_category) <= {"harmful", "factual", "empathy", "general"} and by_category
    assert sum(c["n"] for c in by_category.values()) == rows[1]["n"]
    for cat, c in by_category.items():
        assert f"| 1 | eval prompts | {cat} | {c['n']} | {c['omega']:+.1f} | {c['ci95']} | {c['W/L/T']} |" in results
    # The Aligner keeps which questions it trained on: every row of its data but the held-out ones.
    from w2s.aligner.trained_questions import seen_in_training
    from w2s.data.io import read_rows
    from w2s.shipped import resolve_path

    meta = json.loads((out / "seed-1" / "aligner" / "w2s_aligner.json").read_text())
    rows = read_rows(str(resolve_path(meta["data"]["path"])), required=["question"], what="triples").rows
    held = {h["question"] for h in heldout[1]}
    trained = seen_in_training(str(out / "seed-1" / "aligner"), [(str(r["id"]), r["question"]) for r in rows])
    assert trained == [str(r["id"]) for r in rows if r["question"] not in held] and held


def _rows(stdout: str) -> list[dict]:
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("[")))


@pytest.mark.slow  # Ray, a generator actor, then trainer ranks
def test_bench_generate_and_train_run_in_the_recipes_role_actors(tmp_path):
    bench = [sys.executable, "-m", "w2s.cli", "bench"]
    out = tmp_path / "generate"
    written = tmp_path / "generate.md"
    result = subprocess.run([*bench, "generate", "--recipe", "tiny/dpo", "--model", "asset:tiny-strong", "--dtype",
                             "float32", "--prompts", "4", "--batch", "2,4", "--max-new-tokens", "6", "--json",
                             "--output", str(out), "--write", str(written)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = _rows(result.stdout)
    assert [(r["backend"], r["batch"], r["prompts"]) for r in rows] == [("transformers", 2, 4), ("transformers", 4, 4)]
    # The random tiny model never stops by itself: every answer is max_new_tokens long.
    assert [r["new_tokens"] for r in rows] == [4 * 6, 4 * 6]
    # One engine for both batch sizes: one start-up, one actor whose peak (torch and the model loaded) is measured.
    assert rows[0]["startup_s"] == rows[1]["startup_s"] > 0
    assert rows[0]["peak_mem_mb"] == rows[1]["peak_mem_mb"] > 200
    assert (out / "logs" / "generator-0.log").exists()
    # The results file a README quotes: the command that measured it, and the rows as printed.
    text = written.read_text()
    assert (f"`w2s bench generate --recipe tiny/dpo --model asset:tiny-strong --dtype float32 --backend transformers "
            f"--prompts 4 --batch 2,4 --max-new-tokens 6 --write {written}`") in text
    for r in rows:
        assert "| " + " | ".join(map(str, r.values())) + " |" in text

    out = tmp_path / "train"
    written = tmp_path / "train.md"
    # Started from a process that still holds a torch.distributed world's port (as a test process that trained in
    # process, or a Slurm job step, does): the peer's CLI makes a world of its own, not a rendezvous on that port.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        world = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(held.getsockname()[1]), "RANK": "0",
                 "WORLD_SIZE": "1"}
        result = subprocess.run([*bench, "train", "--recipe", "tiny/dpo", "--model", "asset:tiny-strong", "--method",
                                 "sft,dpo", "--dtype", "bfloat16", "--rows", "16", "--micro-batch", "2", "--packing",
                                 "off,on", "--peer",
                                 "--json", "--output", str(out), "--write", str(written),
                                 "cluster.trainer.num_actors=2", "cluster.trainer.num_cpus_per_actor=1"],
                                capture_output=True, text=True, timeout=600, env={**os.environ, **world})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = _rows(result.stdout)
    # 16 rows, 2 per micro-batch, 2 micro-batches a step on each of two ranks: 2 steps over 16 samples, each method,
    # through w2s's trainer actors and through OpenRLHF's own CLI under torchrun on the same rows and flags.
    # Padded and packed (packing_samples); the CLI packs with flash-attention only (which it switches to), so here
    # it runs the padded rows alone.
    assert [(r["runner"], r["method"], r["packing"], r["dtype"], r["ranks"], r["samples"], r["steps"], r["repeats"])
            for r in rows] == [
        ("w2s", "sft", "off", "bfloat16", 2, 16, 2, 1), ("openrlhf-cli", "sft", "off", "bfloat16", 2, 16, 2, 1),
        ("w2s", "sft", "on", "bfloat16", 2, 16, 2, 1),
        ("w2s", "dpo", "off", "bfloat16", 2, 16, 2, 1), ("openrlhf-cli", "dpo", "off", "bfloat16", 2, 16, 2, 1),
        ("w2s", "dpo", "on", "bfloat16", 2, 16, 2, 1)]
    for row in rows:
        assert row["seconds_total"] > row["seconds_fit"] > 0  # start-up, loading and saving are not the fit loop
        assert row["peak_mem_mb"] > 200
        assert "| " + " | ".join(map(str, row.values())) + " |" in written.read_text()
    assert (out / "logs" / "trainer-0.log").exists() and (out / "policy" / "config.json").exists()
    # The CLI ran for real, as two ranks: its own log, each rank's record, and the model it saved.
    assert (out / "peer-sft.log").read_text().count("Actor(") == 1  # the model printed by rank 0 alone: one world
    for method in ("sft", "dpo"):
        assert "Train step of epoch 0" in (out / f"peer-{method}.log").read_text()
        assert sorted(p.name for p in out.glob(f"peer-{method}.rank*.json")) == [
            f"peer-{method}.rank0.json", f"peer-{method}.rank1.json"]
        assert (out / f"peer-{method}" / "config.json").exists()
        assert (out / f"peer-{method}-torchrun").is_dir()  # torchrun's files kept there, not in the temp dir


def test_bench_loop_says_where_a_runs_time_went(tmp_path):
    """`w2s bench loop --run-dir`: per stage, per round and for the whole run, wall against work seconds."""
    run = tmp_path / "run"
    stages = {"aligner": (100.0, 90.0), "round-01/generate": (10.0, 4.0), "round-01/train": (30.0, 27.0),
              "round-02/generate": (8.0, 6.0)}
    services = {"round-01/generate": {"started": {"generator": 1}, "refits": []},
                "round-01/train": {"started": {"trainer": 1}, "refits": []},
                "round-02/generate": {"started": {}, "refits": [
                    {"role": "generator", "checked": True, "mean_abs_diff": 0.0012, "tokens": 20, "tolerance": 0.1},
                    {"role": "generator", "checked": False, "why": "no probe"}]}}
    for where, (wall, work) in stages.items():
        (run / where).mkdir(parents=True)
        (run / where / "manifest.json").write_text(json.dumps({"seconds": wall, "work_seconds": work,
                                                               **({"services": services[where]}
                                                                  if where in services else {})}))
    (run / "cluster.json").write_text(json.dumps({"actors": [{"role": "generator"}, {"role": "trainer"},
                                                             {"role": "trainer"}]}))
    result = subprocess.run([sys.executable, "-m", "w2s.cli", "bench", "loop", "--run-dir", str(run), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "actor processes started: generator 1, trainer 2" in result.stdout
    rows = {r["stage"]: r for r in json.loads(result.stdout.splitlines()[-1])}
    assert rows["round-01/generate"]["startup_and_orchestration_s"] == 6.0
    assert rows["round-01/generate"]["startup_share"] == "60%"
    assert (rows["round-01 (total)"]["wall_s"], rows["round-01 (total)"]["work_s"]) == (40.0, 31.0)
    assert rows["before the rounds (total)"]["startup_share"] == "10%"
    assert (rows["whole run (total)"]["wall_s"], rows["whole run (total)"]["work_s"]) == (148.0, 127.0)
    assert list(rows)[:4] == ["aligner", "round-01/generate", "round-01/train", "round-02/generate"]
    # Which roles started in each stage (none after round 1 here) and the refit checks of in-place loads.
    assert rows["aligner"]["roles_started"] == "-" and rows["round-02/generate"]["roles_started"] == "-"
    assert rows["round-01 (total)"]["roles_started"] == "generator 1, trainer 1"
    assert rows["round-02 (total)"]["refit_checks"] == "1 passed (max 0.0012), 1 unchecked"
    assert rows["round-01 (total)"]["refit_checks"] == "-"
