"""Run directories: atomic writes, stages done only with a manifest, resume, refusal of changed configs, fork."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from w2s.config.compose import load_config
from w2s.controller.report import latest_metrics
from w2s.controller.rundir import RunDir
from w2s.data.files import append_jsonl, atomic_write_text
from w2s.errors import RunDirError


def _cfg(*overrides):
    return load_config("tiny/dpo", list(overrides))


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")

    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # type: ignore[arg-type]  # fails mid-write
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_stage_done_only_when_body_succeeds(tmp_path):
    rd = RunDir(tmp_path / "run", _cfg())
    rd.open(recipe="tiny/dpo", overrides=[])
    stage = rd.stage_dir(1, "generate")
    with pytest.raises(RuntimeError):
        with rd.stage(stage, ["generate"], round_index=1, name="generate"):
            raise RuntimeError("killed")
    assert rd.finished(stage, ["generate"]) is None
    with rd.stage(stage, ["generate"], round_index=1, name="generate") as rec:
        (stage / "answers.jsonl").write_text("{}\n")
        rec["outputs"]["answers"] = stage / "answers.jsonl"
    manifest = rd.finished(stage, ["generate"])
    assert manifest and rd.output(manifest, "answers") == stage / "answers.jsonl"
    assert manifest["outputs"]["answers"] == "round-01/generate/answers.jsonl"  # relative: the run dir can move


def test_changed_config_refused_then_forked(tmp_path):
    rd = RunDir(tmp_path, _cfg())
    rd.open(recipe="tiny/dpo", overrides=[])
    stage = rd.stage_dir(1, "generate")
    with rd.stage(stage, ["generate"], round_index=1, name="generate"):
        pass
    changed = RunDir(tmp_path, _cfg("generate.max_new_tokens=5"))
    with pytest.raises(RunDirError, match="run.resume=fork"):
        changed.finished(stage, ["generate"])
    unrelated = RunDir(tmp_path, _cfg("eval.max_prompts=3"))  # another stage's section: still resumable
    assert unrelated.finished(stage, ["generate"]) is not None
    forked = RunDir(tmp_path, _cfg("generate.max_new_tokens=5", "run.resume=fork"))
    assert forked.finished(stage, ["generate"]) is None
    assert forked.finished(rd.stage_dir(1, "correct"), ["correct"]) is None  # everything after is redone


def test_resume_never_refuses_existing_run(tmp_path):
    RunDir(tmp_path, _cfg()).open(recipe="tiny/dpo", overrides=[])
    with pytest.raises(RunDirError, match="run.resume=never"):
        RunDir(tmp_path, _cfg("run.resume=never")).open(recipe="tiny/dpo", overrides=[])


def test_config_and_provenance_written(tmp_path):
    rd = RunDir(tmp_path, _cfg("train.dpo.beta=0.25"))
    rd.open(recipe="tiny/dpo", overrides=["train.dpo.beta=0.25"])
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith("# w2s ") and "git" in text.splitlines()[0]
    assert OmegaConf.create(text).train.dpo.beta == 0.25
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["attempts"][0]["overrides"] == ["train.dpo.beta=0.25"]


def test_metrics_survive_a_partial_last_line(tmp_path):
    append_jsonl(tmp_path / "metrics.jsonl", {"round": 1, "stage": "train", "loss": 1.0})
    append_jsonl(tmp_path / "metrics.jsonl", {"round": 1, "stage": "train", "loss": 0.5})  # a rerun stage
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"round": 2, "sta')  # killed mid-write
    assert latest_metrics(tmp_path) == [{"round": 1, "stage": "train", "loss": 0.5}]


def test_config_hash_ignores_defaults_so_new_schema_fields_keep_runs_resumable():
    from w2s.controller.rundir import config_hash

    cfg = _cfg()
    base = config_hash(cfg, ["generate"])
    assert config_hash(cfg, ["generate", "train.dpo.pair_source"]) == base  # a default-valued key adds nothing
    assert config_hash(_cfg("generate.max_new_tokens=5"), ["generate"]) != base
    assert config_hash(_cfg("train.dpo.pair_source=both", "train.dpo.extra_pairs=README.md"),
                       ["generate", "train.dpo.pair_source"]) != base
