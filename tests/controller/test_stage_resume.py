"""A round's correct stage killed half-way resumes with the rows it had already made: only the chunks not yet made
are asked of the corrector, and the stage's output is the one an uninterrupted stage writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from w2s.data.files import read_jsonl
from w2s.generation.sampling import stage_seed

# A driver of one correct stage whose corrector (a stand-in: the stage's resume is what is tested) answers from the
# seed it is given, and SIGKILLs the driver itself when asked for the chunk starting at KILL_AT.
DRIVER = r"""
import json, os, signal, sys
from w2s.aligner.correct import Correction
from w2s.config.compose import load_config
from w2s.controller.context import RunContext
from w2s.controller.round_stages import correct_stage
from w2s.data.files import write_jsonl
from w2s.rundir import RunDir

run, kill_at, asked = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Held:
    info = {"template": "t"}

class Corrector:
    def hold(self, aligner):
        return Held()

    def correct(self, aligner, pairs, *, what, seed=None):
        with open(asked, "a") as f:
            f.write(json.dumps([q for q, _ in pairs]) + "\n")
        if seed is not None and pairs and pairs[0][0].endswith(f"{kill_at}?"):
            os.kill(os.getpid(), signal.SIGKILL)
        return [Correction(f"{q} -> fixed with seed {seed}", 5, 3, "stop") for q, _ in pairs], {"template": "t"}

class Services:
    corrector = Corrector()

answers = [{"id": f"p{i}", "prompt": f"Question {i}?", "answer": f"answer {i}"} for i in range(7)]
cfg = load_config("tiny/dpo", [f"run.dir={run}", "correct.batch_prompts_per_actor=2"])
rd = RunDir(cfg.run.dir, cfg)
rd.open(recipe="tiny/dpo", overrides=[])
write_jsonl(rd.stage_dir(1, "generate") / "answers.jsonl", answers)
correct_stage(RunContext(cfg, rd, Services()), 1, "an-aligner", answers)
rd.release()
"""


def _correct(run: Path, kill_at: int, asked: Path) -> int:
    return subprocess.run([sys.executable, "-c", DRIVER, str(run), str(kill_at), str(asked)], timeout=120,
                          capture_output=True).returncode


@pytest.mark.slow  # three Python processes import the loop
def test_a_killed_correct_stage_keeps_its_chunks_and_asks_only_for_the_rest(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _correct(whole, -1, tmp_path / "whole.asked") == 0
    assert _correct(killed, 4, tmp_path / "first.asked") == -9  # SIGKILLed asking for rows 4-5
    stage = killed / "round-01" / "correct"
    assert not (stage / "manifest.json").exists() and (stage / "corrections.partial.jsonl").exists()
    assert _correct(killed, -1, tmp_path / "second.asked") == 0
    asked = [json.loads(line) for line in (tmp_path / "second.asked").read_text().splitlines()]
    assert asked == [["Question 4?", "Question 5?"], ["Question 6?"]]  # chunks 0 and 1 were kept
    assert (stage / "corrections.jsonl").read_bytes() == (whole / "round-01" / "correct" /
                                                          "corrections.jsonl").read_bytes()
    seed = stage_seed(None, 42, "correct", 1)  # tiny/dpo's: run.seed 42, round 1
    # Each chunk's seed: the stage's plus its first row's index.
    assert [r["correction"] for r in read_jsonl(stage / "corrections.jsonl")][4] == \
        f"Question 4? -> fixed with seed {seed + 4}"
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["resumed_rows"] == 4 and manifest["metrics"]["corrections"] == 7
    assert not (stage / "corrections.partial.jsonl").exists()
