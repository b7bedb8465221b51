"""`w2s eval` checks its models in the driver before anything starts: a model that ships code is refused with the
key that allows it, not found dead inside an actor."""

from __future__ import annotations

import json

from w2s.cli import main


def test_a_candidate_model_that_ships_code_is_refused_before_anything_starts(tmp_path, capsys):
    model = tmp_path / "codey"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "mystery", "auto_map": {
        "AutoModelForCausalLM": "modeling_mystery.MysteryLM"}}))
    (model / "modeling_mystery.py").write_text(f"open({str(tmp_path / 'executed')!r}, 'w').close()\n")
    prompts, answers = tmp_path / "prompts.jsonl", tmp_path / "answers.jsonl"
    prompts.write_text(json.dumps({"id": "p", "prompt": "q", "reference": "r"}) + "\n")
    answers.write_text(json.dumps({"id": "p", "answer": "a"}) + "\n")
    assert main(["eval", "--prompts", str(prompts), "--candidate", str(model), "--baseline", str(answers),
                 "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{model / 'config.json'}: the model ships its own Python code (auto_map)" in err
    assert "set model.strong.trust_remote_code=true only if you trust that code" in err
    assert not (tmp_path / "executed").exists() and not (tmp_path / "out").exists()
