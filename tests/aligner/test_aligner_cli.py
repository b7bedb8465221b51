"""w2s.aligner.cli: `aligner prompt`, `aligner correct` and argument handling (parsed as the top-level CLI would)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from w2s.aligner import METADATA_FILE
from w2s.aligner.cli import add_parser
from w2s.errors import ConfigError


def _run(argv):
    parser = argparse.ArgumentParser(prog="w2s")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_prompt_prints_the_exact_template(capsys):
    assert _run(["aligner", "prompt", "--template", "aligner-v2", "--question", "Q?", "--answer", "A."]) == 0
    assert capsys.readouterr().out == ("BEGINNING OF CONVERSATION: USER: ##Question: Q?\n##Answer: A.\n"
                                       "##Correction:  ASSISTANT:\n")
    _run(["aligner", "prompt", "--template", "aligner-v1", "--question", "Q?", "--answer", "A.", "--instruction",
          "concise", "--repr"])
    assert capsys.readouterr().out == ("'BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair "
                                       "to make it more concise: Q? | A. ASSISTANT:'\n")


def test_prompt_from_an_aligner_dir_uses_its_metadata(tmp_path, capsys, tiny_weak):
    (tmp_path / METADATA_FILE).write_text(json.dumps({"template": "chat", "instruction": "Be brief."}))
    (tmp_path / "config.json").write_text("{}")  # a model directory (its weights are not needed for a prompt)
    _run(["aligner", "prompt", "--aligner", str(tmp_path), "--tokenizer", tiny_weak, "--question", "Q?",
          "--answer", "A."])
    assert capsys.readouterr().out == ("<|im_start|>user\nBe brief.\n##Question: Q?\n##Answer: A.<|im_end|>\n"
                                       "<|im_start|>assistant\n\n")


def _w2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w2s.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow  # Ray and a corrector actor
def test_correct_command_runs_in_a_corrector_actor_with_instruction_and_overrides(tmp_path, tiny_weak):
    src = tmp_path / "in.csv"
    src.write_text("question,answer\nWhat is 1 plus 1?,It is 3.\nHi?,Hello: yes\n")
    out = tmp_path / "out.jsonl"
    result = _w2s("aligner", "correct", "--aligner", tiny_weak, "--input", str(src), "--output", str(out),
                  "--instruction", "Answer: kindly, {no} YAML here", "--no-progress", "correct.max_new_tokens=4",
                  "model.aligner.dtype=float32", "correct.template=aligner-v1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1] and rows[1]["answer"] == "Hello: yes"
    prov = rows[0]["w2s_correction"]
    assert prov["instruction"] == "Answer: kindly, {no} YAML here" and prov["template"] == "aligner-v1"
    assert prov["completion_tokens"] <= 4
    assert "copy rate" in result.stdout and "out.jsonl.stats.json" in result.stdout
    # The Aligner ran in the role services' corrector actor, as in a round: its log is beside the output.
    assert "starting 1 corrector actor(s)" in result.stdout
    assert (tmp_path / "logs" / "corrector-0.log").is_file()


@pytest.mark.slow  # Ray and two corrector actors, one killed mid-file
def test_correct_retries_on_a_fresh_corrector_when_its_actor_dies_and_keeps_the_rows_written(tmp_path, tiny_weak):
    """run.max_retries is honoured outside a run too: the corrector actor SIGKILLed after some batches, the command
    restarts it and goes on from the rows already written (none redone, none lost)."""
    import signal
    import time

    import psutil

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "question": f"What is {i} plus 1?", "answer": "It is 3."}) + "\n"
                           for i in range(60)))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "w2s.cli", "aligner", "correct", "--aligner", tiny_weak, "--input", str(src),
           "--output", str(out), "--no-progress", "correct.max_new_tokens=6", "correct.batch_prompts_per_actor=4",
           "model.aligner.dtype=float32", "run.max_retries=1"]
    log = tmp_path / "correct.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 300
        while not (out.exists() and len(out.read_text().splitlines()) >= 8):
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        actor = next(p for p in psutil.Process(proc.pid).children(recursive=True)
                     if p.cmdline() and p.cmdline()[0].startswith("ray::CorrectorWorker"))
        actor.send_signal(signal.SIGKILL)
        written = out.read_text().splitlines()
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "correction failed" in text and "retry 1/1 (run.max_retries) on restarted services" in text
    assert text.count("starting 1 corrector actor(s)") == 2
    rows = out.read_text().splitlines()
    assert rows[:len(written)] == written and sorted(json.loads(r)["id"] for r in rows) == list(range(60))


def test_correct_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="correct.max_new_token"):
        _run(["aligner", "correct", "--aligner", "x", "--input", "i", "--output", "o", "correct.max_new_token=3"])


def test_overrides_after_options_reach_the_config(tmp_path, capsys):
    from w2s.cli import main

    # The bad value proves the override was parsed into the config (and nothing was trained).
    code = main(["aligner", "train", "tiny/aligner", "--output", str(tmp_path / "a"), "aligner.train.epochs=many"])
    assert code != 0 and "aligner.train.epochs" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


@pytest.mark.slow  # a private Ray, two trainer actors importing DeepSpeed, two short SFT stages
def test_train_runs_on_the_trainer_ranks(tmp_path, tiny_weak):
    out = tmp_path / "aligner"
    result = subprocess.run(
        [sys.executable, "-m", "w2s.cli", "aligner", "train", "tiny/aligner", "--output", str(out),
         "cluster.trainer.num_actors=2", "aligner.train.micro_batch_samples_per_device=2",
         "aligner.train.global_batch_samples=4", "aligner.train.epochs=1", "model.aligner.attn_implementation=eager"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    meta = json.loads((out / METADATA_FILE).read_text())
    # Both stages (identity warm-up, corrections) trained in one world of the two cluster.trainer ranks, with the
    # model section's attention kernel.
    assert [s["world_size"] for s in meta["stages"]] == [2, 2] and meta["world_size"] == 2
    assert {s["attn_implementation"] for s in meta["stages"]} == {"eager"}
    assert (out / "config.json").is_file() and "Aligner written to" in result.stdout


def test_train_never_writes_over_a_users_folder(tmp_path, capsys):
    """A folder with a user's files is refused before anything starts, and its files are kept."""
    from w2s.cli import main

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "data.jsonl").write_text("{}\n")
    assert main(["aligner", "train", "tiny/aligner", "--output", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"--output {folder} is not empty and is not a w2s Aligner (it holds data.jsonl, notes.txt)" in err
    assert sorted(p.name for p in folder.iterdir()) == ["data.jsonl", "notes.txt"]
    # --overwrite is for an earlier Aligner only: a user's folder is refused all the same.
    assert main(["aligner", "train", "tiny/aligner", "--output", str(folder), "--overwrite"]) == 1
    assert (folder / "notes.txt").read_text() == "my notes" and not (tmp_path / "mine.work").exists()


def test_train_replaces_an_earlier_aligner_only_when_asked(tmp_path, capsys):
    from w2s.aligner.cli import check_output_dir
    from w2s.cli import main

    earlier = tmp_path / "aligner"
    earlier.mkdir()
    (earlier / METADATA_FILE).write_text("{}")
    assert main(["aligner", "train", "tiny/aligner", "--output", str(earlier)]) == 1
    assert "holds an Aligner trained before; pass --overwrite" in capsys.readouterr().err
    assert (earlier / METADATA_FILE).read_text() == "{}"
    check_output_dir(earlier, overwrite=True)  # allowed: the new Aligner replaces it atomically once saved
    check_output_dir(tmp_path / "new", overwrite=False)
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", overwrite=False)


@pytest.mark.slow  # loads the tiny Aligner
def test_correct_refuses_its_input_as_output_an_empty_input_and_an_unknown_aligner(tmp_path, capsys, tiny_weak):
    from w2s.cli import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": 1, "question": "q", "answer": "a"}) + "\n")
    assert main(["aligner", "correct", "--aligner", tiny_weak, "--input", str(rows), "--output", str(rows)]) == 1
    assert f"--output {rows} is the input file: corrections go to a new file" in capsys.readouterr().err
    assert rows.read_text().count("\n") == 1  # untouched
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["aligner", "correct", "--aligner", tiny_weak, "--input", str(empty), "--output",
                 str(tmp_path / "out.jsonl")]) == 1
    assert f"{empty}: no rows to correct" in capsys.readouterr().err
    assert main(["aligner", "correct", "--aligner", "no-such-aligner", "--input", str(rows), "--output",
                 str(tmp_path / "out.jsonl")]) == 1
    assert "--aligner no-such-aligner: no such folder here, and it could not be loaded as a hub model" in \
        capsys.readouterr().err


def test_correct_refuses_an_aligner_that_ships_code_before_loading_it(tmp_path, capsys):
    """A folder with its own Python code (auto_map) and an unknown model type: one line with the fix, nothing run."""
    from w2s.cli import main

    aligner = tmp_path / "codey"
    aligner.mkdir()
    (aligner / "config.json").write_text(json.dumps({"model_type": "mystery", "auto_map": {
        "AutoConfig": "configuration_mystery.MysteryConfig", "AutoModelForCausalLM": "modeling_mystery.MysteryLM"}}))
    for name in ("configuration_mystery.py", "modeling_mystery.py"):
        (aligner / name).write_text(f"open({str(tmp_path / 'executed')!r}, 'w').close()\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": 1, "question": "q", "answer": "a"}) + "\n")
    assert main(["aligner", "correct", "--aligner", str(aligner), "--input", str(rows), "--output",
                 str(tmp_path / "out.jsonl")]) == 1
    err = capsys.readouterr().err
    assert f"{aligner / 'config.json'}: the model ships its own Python code (auto_map)" in err
    assert "set trust_remote_code=true in the model's section" in err and "Traceback" not in err
    assert not (tmp_path / "executed").exists()


@pytest.mark.slow  # loads and runs the tiny Aligner
def test_correct_refuses_a_template_the_aligner_was_not_trained_with_unless_allowed(tmp_path, capsys, tiny_weak):
    import shutil

    from w2s.cli import main

    aligner = tmp_path / "aligner"
    shutil.copytree(tiny_weak, aligner)
    (aligner / METADATA_FILE).write_text(json.dumps({"template": "aligner-v2", "instruction": ""}))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": 1, "question": "q", "answer": "a"}) + "\n")
    base = ["aligner", "correct", "--aligner", str(aligner), "--input", str(rows), "--template", "aligner-v1",
            "correct.max_new_tokens=2", "model.aligner.dtype=float32", "--no-progress"]
    assert main([*base, "--output", str(tmp_path / "a.jsonl")]) == 1
    assert "trained with template 'aligner-v2'" in capsys.readouterr().err and not (tmp_path / "a.jsonl").exists()
    allowed = _w2s(*base, "--output", str(tmp_path / "b.jsonl"), "--allow-template-mismatch")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    row = json.loads((tmp_path / "b.jsonl").read_text())
    assert (row["w2s_correction"]["template"], row["w2s_correction"]["template_source"]) == \
        ("aligner-v1", "config (trained with aligner-v2)")
