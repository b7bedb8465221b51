"""Seeds mean what they say: every stochastic stage draws from run.seed, the round and the row (its section's own
seed when set; 0 is a seed), so two values of run.seed sample differently and one value the same, in the loop and
the CLI alike. The corrections here are the tiny Aligner's, sampled for real at the recipe's temperature."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from w2s.aligner.correct import Corrector, correct_file
from w2s.config.compose import load_config
from w2s.controller.context import RunContext
from w2s.controller.round_stages import correct_stage
from w2s.data.files import write_jsonl
from w2s.generation.sampling import resolve_sampling, stage_seed
from w2s.rundir import RunDir

ANSWERS = [{"id": f"p{i}", "prompt": f"What is {i} plus 1?", "answer": f"It is {i + 3}.", "completion_tokens": 4}
           for i in range(6)]


def test_a_sections_own_seed_wins_and_zero_is_a_seed():
    assert stage_seed(None, 7, "generate", 2) == 2007 and stage_seed(None, 7, "correct", 2) == 2008
    assert stage_seed(0, 7, "correct", 2) == 0 and stage_seed(5, 7, "correct", 2) == 5
    assert stage_seed(None, 0, "correct") == 1  # run.seed 0, outside a round


class InProcessCorrector:
    """The corrector service's correct call on an in-process Corrector (the corrector actor runs the same object)."""

    def __init__(self, corrector: Corrector):
        self.model, self.seeds = corrector, []

    def hold(self, aligner):
        return SimpleNamespace(info=self.model.provenance)

    def correct(self, aligner, pairs, *, what, seed=None):
        self.seeds.append(seed)
        return self.model.correct([q for q, _ in pairs], [a for _, a in pairs], seed=seed), {}


class InProcessServices:
    def __init__(self, corrector: Corrector):
        self.corrector = InProcessCorrector(corrector)


@pytest.fixture(scope="module")
def corrector(tiny_weak):
    cfg = load_config("tiny/dpo", [])
    assert not resolve_sampling(cfg.correct)["greedy"]  # sampled: the seed decides
    c = Corrector(tiny_weak, cfg.model.aligner, cfg.correct)
    yield c
    c.close()


def _round_corrections(tmp_path, corrector, run_seed, name):
    cfg = load_config("tiny/dpo", [f"run.seed={run_seed}", f"run.dir={tmp_path / name}"])
    rd = RunDir(tmp_path / name, cfg)
    rd.open(recipe="tiny/dpo", overrides=[])
    write_jsonl(rd.stage_dir(1, "generate") / "answers.jsonl", ANSWERS)
    services = InProcessServices(corrector)
    rows = correct_stage(RunContext(cfg, rd, services), 1, corrector.aligner_path, ANSWERS)
    rd.release()
    return [r["correction"] for r in rows], services.corrector.seeds


@pytest.mark.slow  # the tiny Aligner samples 6 corrections three times
def test_two_run_seeds_sample_different_corrections_and_one_seed_the_same(tmp_path, corrector):
    first, seeds = _round_corrections(tmp_path, corrector, 1, "a")
    assert seeds == [1 + 1000 + 1]  # run.seed + 1000 x round 1 + the correct stage's offset (never 42)
    assert _round_corrections(tmp_path, corrector, 2, "b")[0] != first
    assert _round_corrections(tmp_path, corrector, 1, "c")[0] == first


@pytest.mark.slow  # the tiny Aligner corrects a file
def test_the_cli_path_takes_a_correct_seed_of_zero_as_zero(tmp_path, corrector):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": r["id"], "question": r["prompt"], "answer": r["answer"]}) + "\n"
                           for r in ANSWERS[:2]))
    cfg = load_config("tiny/dpo", ["correct.seed=0"])
    zero = Corrector(corrector.aligner_path, cfg.model.aligner, cfg.correct)
    try:
        correct_file(zero.aligner_path, str(src), str(tmp_path / "out.jsonl"), model_cfg=None,
                     correct_cfg=cfg.correct, corrector=zero, progress=False, echo=None)
    finally:
        zero.close()
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["w2s_correction"]["seed"] for r in rows] == [0, 0]  # one batch: base seed 0 + its first row 0
