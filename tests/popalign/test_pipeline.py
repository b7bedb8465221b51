"""``w2s popalign`` end to end on the tiny models: Ray groups, seven strategies, filters, judge, DPO, resume."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from w2s.data.files import read_jsonl

ARGS = ["popalign.max_prompts=4", "popalign.strategies=[prefix,demon,elicitive,nparam,leaderboard,refine,aligner]",
        "popalign.prefix.weight=0.5", "popalign.generate.max_new_tokens=10", "correct.max_new_tokens=10",
        "popalign.judge.enabled=true"]


def w2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w2s.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # w2s run
def test_seven_strategy_build_then_dpo_then_resume(tmp_path, tiny_strong, tiny_weak, tiny_reward_model):
    run = tmp_path / "run"
    args = [*ARGS, f"popalign.judge.model={tiny_reward_model}"]  # a real (tiny, random) reward model
    result = w2s("popalign", "tiny/popalign", f"run.dir={run}", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((run / "popalign" / "manifest.json").read_text())
    outputs = {name: rec["path"] for name, rec in manifest["outputs"].items()}
    assert set(outputs) == {"popalign", "train", "dropped"}

    # The build ran on the run's role services: its actors are in the run's cluster.json, as a round's are.
    roles = {a["role"] for a in json.loads((run / "cluster.json").read_text())["actors"]}
    assert {"generator", "corrector", "trainer"} <= roles, roles

    # Each distinct model was loaded once and served every strategy that needs it.
    assert manifest["model_loads"] == {"generator:asset:tiny-strong": 1, "generator:asset:tiny-weak": 1,
                                       "generator:asset:tiny-mid": 1, "corrector:asset:tiny-weak": 1}

    # Sampled answers are each strategy's own draw: the generator's answer to a plain query is drawn four times
    # (nparam's and leaderboard's chosen, refine's and the Aligner contrast's rejected), four different texts.
    queries = {r["prompt"] for r in read_jsonl(run / outputs["popalign"]) + read_jsonl(run / outputs["dropped"])}
    plain = {f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n": [] for q in queries}
    for g in read_jsonl(run / "popalign" / "generations.jsonl"):
        if g["path"] == "asset:tiny-strong" and g["rendered"] in plain:
            plain[g["rendered"]].append(g["text"])
    assert len(plain) == 4 and all(len(set(texts)) == len(texts) == 4 for texts in plain.values()), plain

    # Weights: prefix on half the prompts, the others on all four; counts add up per strategy and reason.
    counts = manifest["strategies"]
    assert counts["prefix"]["pairs"] == 2 and all(counts[n]["pairs"] == 4 for n in counts if n != "prefix")
    for c in counts.values():
        assert c["kept"] + sum(v for k, v in c.items() if k.startswith("dropped_")) == c["pairs"]
        if c["kept"]:  # every kept pair was judged (max_pairs_per_strategy is above the counts here)
            assert c["judged"] == c["kept"] and c["contrast_accuracy"] == c["chosen_better"] / c["judged"]
    assert counts["elicitive"]["dropped_unparsed"] == 4  # random models never write Thought/Response
    assert "elicitive" in result.stdout and "unparsed: 4" in result.stdout

    rows = read_jsonl(run / outputs["popalign"])
    dropped = read_jsonl(run / outputs["dropped"])
    assert len(rows) == manifest["metrics"]["kept"] == manifest["metrics"]["loadable_rows"]
    assert len(rows) + len(dropped) == sum(c["pairs"] for c in counts.values())
    by_strategy = {r["strategy"]: r for r in rows}
    assert {"prefix", "demon", "nparam", "leaderboard", "refine", "aligner"} <= set(by_strategy)
    for r in rows:
        p = r["provenance"]
        assert r["chosen"] and r["rejected"] and r["chosen"] != r["rejected"]
        assert set(p) >= {"models", "prompts", "messages", "sampling", "seed", "finish_reason"}
        assert p["seed"] == 42 and p["sampling"]["chosen"]["max_new_tokens"] in (10,)
    models = {n: {s: (r["provenance"]["models"][s]["role"], r["provenance"]["models"][s]["path"])
                  for s in ("chosen", "rejected")} for n, r in by_strategy.items()}
    assert models["nparam"] == {"chosen": ("larger", "asset:tiny-strong"), "rejected": ("smaller", "asset:tiny-weak")}
    assert models["leaderboard"]["rejected"] == ("lower", "asset:tiny-mid")
    assert models["aligner"]["chosen"] == ("aligner", "asset:tiny-weak")
    prefix = by_strategy["prefix"]["provenance"]["prompts"]
    assert prefix["chosen"].startswith("<|im_start|>user\n(good response) " + by_strategy["prefix"]["prompt"])
    refine = by_strategy["refine"]["provenance"]
    assert refine["messages"]["chosen"]["messages"][1]["content"] == by_strategy["refine"]["rejected"]
    assert by_strategy["aligner"]["provenance"]["aligner"]["template"] == "aligner-v2"
    assert by_strategy["aligner"]["provenance"]["messages"]["chosen"]["answer"] == by_strategy["aligner"]["rejected"]

    # The OpenRLHF file: chat-message lists in the same order as popalign.jsonl.
    pairs = read_jsonl(run / outputs["train"])
    assert [p["chosen"][0]["content"] for p in pairs] == [r["chosen"] for r in rows]
    assert pairs[0]["prompt"] == [{"role": "user", "content": rows[0]["prompt"]}]

    # DPO trained model.strong on the pairs.
    train = json.loads((run / "popalign-train" / "manifest.json").read_text())
    assert train["metrics"]["steps"] >= 1 and all(math.isfinite(x) for x in train["losses"])
    assert abs(train["losses"][0] - math.log(2)) < 0.01  # policy == reference at the first step
    assert (run / "popalign-train" / "policy" / "config.json").exists()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"popalign", "popalign/prefix", "popalign-train"} <= {m["stage"] for m in metrics}

    # A finished dataset is not rebuilt, and no model is loaded again.
    again = w2s("popalign", "tiny/popalign", f"run.dir={run}", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "popalign: loading" not in again.stdout and "popalign: finished earlier, skipped" in again.stdout
    print(f"popalign: {manifest['metrics']}, DPO losses {train['losses'][0]:.4f} -> {train['losses'][-1]:.4f}")

    # An unfinished build (no manifest: as if killed after generating, before writing the dataset) reuses the
    # generations it saved: nothing is generated twice, and it writes the same dataset.
    (run / "popalign" / "manifest.json").unlink()
    rows_before = (run / "popalign" / "popalign.jsonl").read_text()
    resumed = w2s("popalign", "tiny/popalign", f"run.dir={run}", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "popalign: loading" not in resumed.stdout
    assert (run / "popalign" / "popalign.jsonl").read_text() == rows_before


def test_invalid_popalign_recipe_names_every_problem():
    result = w2s("popalign", "tiny/popalign", "popalign.strategies=[prefix,rlcd]", "popalign.refine.weight=2",
                 "popalign.models.smaller.path=", "popalign.filter.min_pair_distance=1.5")
    assert result.returncode == 2
    for key in ("popalign.strategies", "popalign.filter.min_pair_distance"):
        assert key in result.stderr
    ok = w2s("validate", "gpu/popalign-yi")
    assert ok.returncode == 0, ok.stderr
    missing = w2s("validate", "tiny/popalign", "popalign.models.lower.path=", "popalign.refine.weight=2")
    assert missing.returncode == 2
    assert "popalign.models.lower.path" in missing.stderr and "popalign.refine.weight" in missing.stderr


@pytest.mark.slow  # Ray and a judge actor
def test_contrast_accuracy_counts_the_judges_preference(tmp_path):
    """The embedding judge prefers the answer equal to the reference: accuracy 1 with chosen = reference, 0 with
    the pair swapped, whatever the random models would have written."""
    import ray

    from w2s.config.compose import load_config
    from w2s.popalign.pipeline import contrast_accuracy
    from w2s.roles import Services

    cfg = load_config("tiny/popalign", ["popalign.judge.enabled=true", "popalign.judge.kind=embedding",
                                        "popalign.judge.model=", "popalign.judge.tie_margin=0.01"])
    refs = {"p1": "Drink water and rest.", "p2": "Paris is the capital of France."}
    good = [{"strategy": "prefix", "prompt_id": pid, "prompt": "q", "chosen": ref,
             "rejected": "Bananas are yellow and grow in bunches."} for pid, ref in refs.items()]
    swapped = [{**r, "strategy": "demon", "chosen": r["rejected"], "rejected": r["chosen"]} for r in good]
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        with Services(cfg) as services:
            result = contrast_accuracy(good + swapped, refs, cfg, services)
    finally:
        ray.shutdown()
    assert result["prefix"] == {"judged": 2, "chosen_better": 2, "ties": 0, "contrast_accuracy": 1.0}
    assert result["demon"] == {"judged": 2, "chosen_better": 0, "ties": 0, "contrast_accuracy": 0.0}
