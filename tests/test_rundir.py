"""Run directories: atomic writes, stages done only with a manifest, resume, refusal of changed configs, fork."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from w2s.config.compose import load_config
from w2s.data.files import append_jsonl, atomic_write_text
from w2s.errors import RunDirError
from w2s.report import latest_metrics
from w2s.rundir import RunDir


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
        rec.outputs["answers"] = stage / "answers.jsonl"
    manifest = rd.finished(stage, ["generate"])
    assert manifest and rd.output(manifest, "answers") == stage / "answers.jsonl"
    assert manifest["outputs"]["answers"]["path"] == "round-01/generate/answers.jsonl"  # the run dir can move


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
    # The checkout's revision (the suite runs from one, editable install): once "unknown" in every run, from a
    # lookup one folder too high.
    import w2s

    head = subprocess.run(["git", "-C", str(Path(w2s.__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    revision = info["attempts"][0]["git_revision"]
    assert revision.removesuffix("+dirty") == head and f"git {revision}" in text.splitlines()[0]


def test_a_checkout_is_dirty_only_with_changes_to_what_runs(tmp_path):
    """A benchmark writing several results files in a row leaves them uncommitted; the next one is not dirty."""
    from w2s.rundir import code_changed

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=w", "-c", "user.email=w@w", *args],
                       check=True, capture_output=True)

    (tmp_path / "docs").mkdir()
    for name in ("docs/results.md", "README.md", "train.py"):
        (tmp_path / name).write_text("one\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    (tmp_path / "docs" / "results.md").write_text("two\n")
    (tmp_path / "README.md").write_text("two\n")
    (tmp_path / "untracked.py").write_text("x\n")
    assert not code_changed(tmp_path)
    (tmp_path / "train.py").write_text("two\n")
    assert code_changed(tmp_path)


def test_metrics_survive_a_partial_last_line(tmp_path):
    append_jsonl(tmp_path / "metrics.jsonl", {"round": 1, "stage": "train", "loss": 1.0})
    append_jsonl(tmp_path / "metrics.jsonl", {"round": 1, "stage": "train", "loss": 0.5})  # a rerun stage
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"round": 2, "sta')  # killed mid-write
    assert latest_metrics(tmp_path) == [{"round": 1, "stage": "train", "loss": 0.5}]


def test_config_hash_ignores_defaults_so_new_schema_fields_keep_runs_resumable():
    from w2s.stage_config import config_hash

    cfg = _cfg()
    base = config_hash(cfg, ["generate"])
    assert config_hash(cfg, ["generate", "train.dpo.pair_source"]) == base  # a default-valued key adds nothing
    assert config_hash(_cfg("generate.max_new_tokens=5"), ["generate"]) != base
    assert config_hash(_cfg("train.dpo.pair_source=both", "train.dpo.extra_pairs=README.md"),
                       ["generate", "train.dpo.pair_source"]) != base
    # Known answer: the hash is that of exactly the values that differ from the schema's defaults, in the sections
    # asked for (loop.rounds is not one; loop.prompts_per_round keeps its default).
    from w2s.config.schema import W2SConfig

    changed = OmegaConf.merge(OmegaConf.structured(W2SConfig), {"generate": {"max_new_tokens": 7},
                                                                "loop": {"rounds": 5}})
    expected = json.dumps({"generate": {"max_new_tokens": 7}}, sort_keys=True).encode()
    assert config_hash(changed, ["generate", "loop.prompts_per_round"]) == \
        hashlib.sha256(expected).hexdigest()[:16]


def test_a_default_changed_by_an_upgrade_is_seen_on_resume_and_named(tmp_path):
    """The manifest records the values a stage ran with, defaults included. An older w2s whose default for
    generate.temperature differed wrote a manifest with its value: the resume names the key instead of taking the
    stage as done (a hash of the values that differ from today's defaults could not see it)."""
    rd = RunDir(tmp_path / "run", _cfg())
    rd.open(recipe="tiny/dpo", overrides=[])
    stage = rd.stage_dir(1, "generate")
    _finished_stage(rd, stage, {})
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["config_values"]["generate"]["top_p"] is None  # unset values recorded too
    assert rd.finished(stage, ["generate"], {}) is not None  # unchanged: done
    upgraded = dict(manifest)
    upgraded["config_values"] = json.loads(json.dumps(manifest["config_values"]))
    upgraded["config_values"]["generate"]["repetition_penalty"] = 1.3  # the older default
    del upgraded["config_values"]["generate"]["max_prompt_tokens"]  # a key added to the schema since
    (stage / "manifest.json").write_text(json.dumps(upgraded))
    now = upgraded["config_values"]["generate"]
    with pytest.raises(RunDirError, match=r"the config \(generate.repetition_penalty: 1.3 -> None\)"):
        RunDir(tmp_path / "run", _cfg()).finished(stage, ["generate"], {})
    now["repetition_penalty"] = manifest["config_values"]["generate"]["repetition_penalty"]
    (stage / "manifest.json").write_text(json.dumps(upgraded))
    assert RunDir(tmp_path / "run", _cfg()).finished(stage, ["generate"], {}) is not None  # the added key: default
    with pytest.raises(RunDirError, match=r"generate.max_prompt_tokens: unset -> 99"):
        RunDir(tmp_path / "run", _cfg("generate.max_prompt_tokens=99")).finished(stage, ["generate"], {})
    # Every attempt's resolved config is kept beside the latest.
    rd.release()
    RunDir(tmp_path / "run", _cfg("generate.max_new_tokens=9")).open(recipe="tiny/dpo", overrides=[])
    kept = sorted(p.name for p in (tmp_path / "run" / "attempts").iterdir())
    assert kept == ["config-1.yaml", "config-2.yaml"]
    assert "max_new_tokens: 9" in (tmp_path / "run" / "attempts" / "config-2.yaml").read_text()


def _finished_stage(rd, stage, inputs):
    with rd.stage(stage, ["generate"], round_index=1, name="generate", inputs=inputs) as rec:
        (stage / "answers.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
        rec.outputs["answers"] = stage / "answers.jsonl"


def test_a_finished_stage_whose_output_changed_is_refused_then_redone_by_fork(tmp_path):
    rd = RunDir(tmp_path / "run", _cfg())
    stage = rd.stage_dir(1, "generate")
    _finished_stage(rd, stage, {})
    (stage / "answers.jsonl").write_text('{"a": 1}\n')  # truncated after the run
    with pytest.raises(RunDirError, match=r"output answers \(.*answers.jsonl: 18 -> 9 bytes\)"):
        RunDir(tmp_path / "run", _cfg()).finished(stage, ["generate"], {})
    (stage / "answers.jsonl").write_text('{"a": 3}\n{"a": 4}\n')  # same size, other contents
    with pytest.raises(RunDirError, match=r"output answers \(.*: contents\)"):
        RunDir(tmp_path / "run", _cfg()).finished(stage, ["generate"], {})
    (stage / "answers.jsonl").unlink()
    with pytest.raises(RunDirError, match="is missing"):
        RunDir(tmp_path / "run", _cfg()).finished(stage, ["generate"], {})
    assert RunDir(tmp_path / "run", _cfg("run.resume=fork")).finished(stage, ["generate"], {}) is None


def test_a_changed_input_file_or_model_is_refused_with_what_changed(tmp_path):
    prompts, model = tmp_path / "prompts.jsonl", tmp_path / "model"
    prompts.write_text('{"prompt": "a"}\n')
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\0" * 64)
    rd = RunDir(tmp_path / "run", _cfg())
    stage = rd.stage_dir(1, "generate")
    inputs = {"prompts": str(prompts), "policy": str(model)}
    _finished_stage(rd, stage, inputs)
    assert RunDir(tmp_path / "run", _cfg()).finished(stage, ["generate"], inputs) is not None
    prompts.write_text('{"prompt": "b"}\n')  # edited between attempts
    (model / "weights.bin").write_bytes(b"\1" * 64)
    with pytest.raises(RunDirError) as e:
        RunDir(tmp_path / "run", _cfg()).finished(stage, ["generate"], inputs)
    assert f"input prompts ({prompts}: contents)" in str(e.value)
    assert f"input policy ({model}: contents)" in str(e.value)
    with pytest.raises(RunDirError, match="input policy is now /elsewhere"):
        RunDir(tmp_path / "run", _cfg()).finished(stage, ["generate"], {**inputs, "policy": "/elsewhere"})


def test_hashes_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    from w2s.data import files as mod

    big = tmp_path / "model.bin"
    big.write_bytes(b"x" * 4096)
    cache = mod.HashCache(tmp_path / "hashes.json")
    first = cache.sha256(big)
    cache.save()
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    assert mod.HashCache(tmp_path / "hashes.json").sha256(big) == first
    assert str(big) not in opened  # not read again


def test_a_same_size_edit_with_its_mtime_put_back_is_seen(tmp_path):
    """An edit in place (one byte) or a file swapped in by rename, both with size and modification time restored
    (os.utime): the inode's change time and number still differ, so the cached hash is not trusted."""
    import os
    import time

    from w2s.data import files as mod

    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b'{"a": 1}\n')
    st = data.stat()
    first = mod.HashCache(tmp_path / "hashes.json")
    original = first.sha256(data)
    first.save()
    time.sleep(0.01)  # a change time the clock can tell apart
    with open(data, "r+b") as f:
        f.write(b"[")
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (data.stat().st_size, data.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert mod.HashCache(tmp_path / "hashes.json").sha256(data) != original
    data.write_bytes(b'{"a": 1}\n')
    cache = mod.HashCache(tmp_path / "hashes.json")
    restored = cache.sha256(data)
    cache.save()
    assert restored == original
    swapped = tmp_path / "swapped"
    swapped.write_bytes(b'{"a": 2}\n')
    os.utime(swapped, ns=(st.st_atime_ns, data.stat().st_mtime_ns))
    os.replace(swapped, data)
    assert mod.HashCache(tmp_path / "hashes.json").sha256(data) != original


def test_corrupt_manifest_is_one_clear_error(tmp_path):
    rd = RunDir(tmp_path / "run", _cfg())
    stage = rd.stage_dir(1, "generate")
    _finished_stage(rd, stage, {})
    (stage / "manifest.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"manifest.json: corrupt .*delete it \(a manifest: that stage is redone"):
        rd.finished(stage, ["generate"], {})


def test_state_files_of_the_wrong_shape_are_one_clear_error(tmp_path, capsys):
    """Valid JSON that is not what w2s wrote: the file, the field and the fix, never a traceback."""
    from w2s.cli import main

    rd = RunDir(tmp_path / "run", _cfg())
    rd.open(recipe="tiny/dpo", overrides=[])
    stage = rd.stage_dir(1, "generate")
    _finished_stage(rd, stage, {})
    manifest = json.loads((stage / "manifest.json").read_text())
    for text, problem in (("[]", "holds a JSON list, not the object w2s wrote"),
                          (json.dumps({**manifest, "outputs": 7}), "field 'outputs' is 7, not an object"),
                          (json.dumps({**manifest, "round": "one"}), "field 'round' is 'one', not a number or null")):
        (stage / "manifest.json").write_text(text)
        with pytest.raises(RunDirError, match=f"manifest.json: {problem}; restore it from a backup, or delete it"):
            rd.finished(stage, ["generate"], {})
        assert main(["status", str(rd.path)]) == 1
        assert problem in capsys.readouterr().err
    rd.release()
    (rd.path / "run.json").write_text(json.dumps({"attempts": 5}))
    with pytest.raises(RunDirError, match="run.json: field 'attempts' is 5, not a list"):
        RunDir(rd.path, _cfg()).open(recipe="tiny/dpo", overrides=[])


def test_metrics_rows_carry_the_attempt_and_are_not_repeated_by_reruns(tmp_path):
    rd = RunDir(tmp_path / "run", _cfg("log.tensorboard=false"))
    rd.open(recipe="tiny/dpo", overrides=[])
    rd.log_metrics(1, "generate", {"answers": 4})
    rd.log_metrics(1, "eval-vs-initial", {"wins": 2})
    rd.log_metrics(2, "generate", {"answers": 4})
    rd.release()
    again = RunDir(tmp_path / "run", _cfg("log.tensorboard=false"))
    again.open(recipe="tiny/dpo", overrides=[])
    again.log_metrics(1, "eval-vs-initial", {"wins": 2})  # a finished run re-run logs the same numbers
    assert [(r["round"], r["stage"], r["attempt"]) for r in again.metrics()] == [
        (1, "generate", 1), (1, "eval-vs-initial", 1), (2, "generate", 1)]
    again._drop_metrics_from(1, "train")  # a fork redoing round 1's train: its rows and every later one go
    assert [(r["round"], r["stage"]) for r in again.metrics()] == [(1, "generate")]


def test_a_fork_keeps_the_rows_of_the_stages_it_does_not_redo(tmp_path):
    """A stage's rows are named after it, a judge's after a slash: they sort as the stage does. A fork at round 2's
    generate keeps round 2's Aligner and its evaluation (they ran before generate and are not redone, so their
    rows would never come back) and drops what generate is followed by."""
    rd = RunDir(tmp_path / "run", _cfg("log.tensorboard=false"))
    rd.open(recipe="tiny/per-round", overrides=[])
    rows = [(1, "generate"), (1, "eval-vs-previous/similarity"), (2, "aligner"), (2, "aligner-eval/similarity"),
            (2, "aligner-eval/harmless"), (2, "generate"), (2, "train"), (2, "eval-vs-initial/similarity")]
    for k, stage in rows:
        rd.log_metrics(k, stage, {"n": 1})
    rd._drop_metrics_from(2, "generate")
    assert [(r["round"], r["stage"]) for r in rd.metrics()] == rows[:5]


@pytest.mark.slow  # W&B starts its service process: 2 s alone, over 5 s beside other tests
def test_metrics_go_to_weights_and_biases_when_a_project_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # tests/conftest.py disables W&B everywhere else
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    rd = RunDir(tmp_path / "run", _cfg("log.tensorboard=false", "log.wandb.project=w2s-test", "log.wandb.mode=offline"))
    rd.open(recipe="tiny/dpo", overrides=[])
    rd.log_metrics(1, "eval-vs-initial/similarity", {"omega": 12.5, "judge": "similarity", "by_category": {}})
    rd.log_metrics(2, "eval-vs-initial/similarity", {"omega": 37.5, "judge": "similarity", "by_category": {}})
    [sink] = rd.sinks
    sink.run.finish()
    import wandb

    wandb.teardown()  # W&B's service process lives as long as its Python process: this test's is pytest
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))  # the run W&B would sync, under the run directory
    # The run file holds the logged history as protobuf records: the keys and JSON values appear verbatim.
    data = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"eval-vs-initial/similarity/omega" in data and b"12.5" in data and b"37.5" in data
    assert b"by_category" not in data  # only numbers are logged


def test_a_failed_stage_on_a_full_disk_says_where_and_what_to_do(tmp_path, monkeypatch):
    """An actor's failed write rarely names a path: the run directory's free space and the fix are added."""
    import shutil
    from collections import namedtuple

    from w2s.controller.entry import full_disk_hint

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10 << 30, 10 << 30, 5 << 20))
    hint = full_disk_hint(tmp_path, "trainer rank 0 raised RuntimeError('file write failed')")
    assert hint == (f"the run directory {tmp_path} is on a filesystem with 5 MiB free: free some space there (or "
                    "move run.dir) and re-run the same command to resume")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10 << 30, 1 << 30, 9 << 30))
    assert full_disk_hint(tmp_path, "generator rank 0 died") == ""  # plenty of room: not the disk
    assert "MiB free" in full_disk_hint(tmp_path, "OSError: [Errno 28] No space left on device")


def test_the_stage_runner_works_once_then_reads_the_recorded_outputs(tmp_path):
    from w2s.stages import GENERATE, Stage

    rd = RunDir(tmp_path / "run", _cfg("log.tensorboard=false"))
    rd.open(recipe="tiny/dpo", overrides=[])
    calls = []

    def work(stage_dir, rec):
        calls.append(stage_dir)
        (stage_dir / "answers.jsonl").write_text('{"id": 1}\n')
        rec.outputs["answers"] = stage_dir / "answers.jsonl"
        rec.metrics = {"answers": 1}

    first = rd.run(GENERATE, 1, {}, work)
    again = rd.run(GENERATE, 1, {}, work)
    assert first == again == {"answers": rd.stage_dir(1, "generate") / "answers.jsonl"} and len(calls) == 1
    assert [(r["round"], r["stage"], r["answers"]) for r in rd.metrics()] == [(1, "generate", 1)]
    assert rd.finished(rd.stage_dir(1, "generate"), list(GENERATE.keys))["config_keys"] == list(GENERATE.keys)

    # Work that does not record what its stage declares is a bug: no manifest says it is done.
    broken = Stage("correct", GENERATE.keys, ("corrections",))
    with pytest.raises(RuntimeError, match="recorded no corrections"):
        rd.run(broken, 1, {}, lambda stage_dir, rec: None)
    assert not (rd.stage_dir(1, "correct") / "manifest.json").exists()


def test_the_runner_retries_work_whose_actor_died_on_restarted_services(tmp_path, capsys):
    from w2s.errors import WorkerError
    from w2s.stages import GENERATE

    rd = RunDir(tmp_path / "run", _cfg("log.tensorboard=false", "run.max_retries=2"))
    rd.open(recipe="tiny/dpo", overrides=[])
    events = []

    def work_failing(times):
        def work(stage_dir, rec):
            events.append("work")
            if events.count("work") <= times:
                (stage_dir / "partial.jsonl").write_text("{}\n")
                raise WorkerError("generator-0 died")
            (stage_dir / "answers.jsonl").write_text('{"id": 1}\n')
            rec.outputs["answers"] = stage_dir / "answers.jsonl"
            rec.metrics = {"answers": 1}
        return work

    # No driver owns services (none attached): nothing to restart, so no retry.
    with pytest.raises(WorkerError):
        rd.run(GENERATE, 1, {}, work_failing(1))
    assert events == ["work"]

    events.clear()
    class Services:  # what the run directory reads of the role services
        work_s = 0.0

        def activity(self):
            return {}

        def close(self):
            events.append("restart")

    rd.attach(Services())
    out = rd.run(GENERATE, 1, {}, work_failing(2))  # fails twice, run.max_retries=2: the third try finishes
    assert events == ["work", "restart", "work", "restart", "work"]
    assert out["answers"].read_text() == '{"id": 1}\n'
    assert [(r["round"], r["stage"]) for r in rd.metrics()] == [(1, "generate")]  # one row, of the try that worked
    assert "round-01/generate failed (generator-0 died); retry 2/2 (run.max_retries)" in capsys.readouterr().out

    events.clear()
    with pytest.raises(WorkerError, match="died"):  # three failures: the last one is the run's error
        rd.run(GENERATE, 2, {}, work_failing(3))
    assert events == ["work", "restart", "work", "restart", "work"]
    assert not (rd.stage_dir(2, "generate") / "manifest.json").exists()

    # What raised inside a live actor is no death: it fails at once, no restart, no retry.
    from w2s.errors import ActorRaised

    def buggy(stage_dir, rec):
        events.append("work")
        raise ActorRaised("generator rank 0: it raised KeyError('x') at worker.py:3 in generate")

    events.clear()
    with pytest.raises(ActorRaised, match="KeyError"):
        rd.run(GENERATE, 3, {}, buggy)
    assert events == ["work"]


def test_metrics_go_to_tensorboard_as_scalars_by_round(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rd = RunDir(tmp_path / "run", _cfg())  # log.tensorboard is on by default
    rd.open(recipe="tiny/dpo", overrides=[])
    rd.log_metrics(1, "train", {"loss_last": 0.5, "steps": 3, "method": "dpo", "ok": True})
    rd.log_metrics(2, "train", {"loss_last": 0.25, "steps": 3, "method": "dpo", "ok": True})
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "rounds"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/loss_last", "train/steps"]  # numbers only, not flags
    assert [(e.step, e.value) for e in events.Scalars("train/loss_last")] == [(1, 0.5), (2, 0.25)]


def test_a_run_with_rounds_beyond_loop_rounds_is_refused_before_anything_is_written(tmp_path):
    """loop.rounds 3 -> 2 on a finished run once said "final policy round-02" while round 3 stayed in its status and
    report; the same count, or more rounds, resumes."""
    from w2s.rundir import refuse_fewer_rounds

    run = tmp_path / "run"
    for k in (0, 1, 2, 3):
        (run / f"round-{k:02d}" / "generate").mkdir(parents=True)
        (run / f"round-{k:02d}" / "generate" / "manifest.json").write_text("{}")
    (run / "round-04" / "generate").mkdir(parents=True)  # begun, nothing finished: not a round of the run yet
    with pytest.raises(RunDirError, match=r"round\(s\) 3, beyond loop.rounds=2: .*Set loop.rounds=3 to resume"):
        refuse_fewer_rounds(run, 2)
    refuse_fewer_rounds(run, 3)
    refuse_fewer_rounds(run, 5)
    refuse_fewer_rounds(tmp_path / "new", 1)


def test_a_stage_record_writes_what_its_body_set_into_the_manifest(tmp_path):
    from w2s.rundir import StageRecord

    assert StageRecord("f").manifest_fields() == {"metrics": {}}
    record = StageRecord("f", metrics={"n": 1}, losses=[], resumed_rows=0, extra={"strategies": {"prefix": 2}})
    record.provenance["engine"] = {"backend": "vllm"}
    assert record.manifest_fields() == {"metrics": {"n": 1}, "provenance": {"engine": {"backend": "vllm"}},
                                        "losses": [], "resumed_rows": 0, "strategies": {"prefix": 2}}
