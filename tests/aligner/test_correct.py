"""w2s.aligner.correct: streaming, provenance, resume after an interruption, stats, template resolution."""

from __future__ import annotations

import json

import pytest

from w2s.aligner import METADATA_FILE
from w2s.aligner.correct import Corrector, correct_file, correction_stats, resolve_template, scan_output, stats_path
from w2s.config.schema import CorrectConfig, ModelConfig
from w2s.errors import DataError, W2SError

ROWS = [{"id": f"row-{i}", "question": f"What is {i} plus 1?", "answer": f"It is {i + 3}.", "topic": "math"}
        for i in range(10)]


@pytest.fixture(scope="module")
def corrector(tiny_weak):
    cfg = CorrectConfig(preset="aligner-paper", max_new_tokens=6, batch_prompts_per_actor=3)
    c = Corrector(tiny_weak, ModelConfig(dtype="float32"), cfg)
    yield c
    c.close()


@pytest.fixture()
def answers(tmp_path):
    p = tmp_path / "answers.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return p


def _run(corrector, src, out, **kw):
    return correct_file(corrector.aligner_path, str(src), str(out), model_cfg=None, correct_cfg=corrector.cfg,
                        corrector=corrector, progress=False, echo=None, seed=11, **kw)


def _ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_rows_keep_fields_and_carry_provenance(corrector, answers, tmp_path):
    out = tmp_path / "out.jsonl"
    stats = _run(corrector, answers, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in ROWS]
    assert all(r["topic"] == "math" and r["answer"] == src["answer"] for r, src in zip(rows, ROWS, strict=True))
    prov = rows[0]["w2s_correction"]
    assert prov["template"] == "aligner-v2" and prov["template_source"] == "default" and prov["instruction"] == ""
    assert prov["generation"]["top_k"] == 10 and prov["generation"]["temperature"] == 0.3
    assert prov["prompt_tokens"] > 0 and 1 <= prov["completion_tokens"] <= 6
    assert stats["rows"] == 10 and stats["new_rows"] == 10 and stats["resumed_rows"] == 0
    assert json.loads(stats_path(out).read_text())["rows"] == 10


def test_resume_after_generator_crash(corrector, answers, tmp_path, monkeypatch):
    reference = tmp_path / "reference.jsonl"
    _run(corrector, answers, reference)
    out = tmp_path / "out.jsonl"
    real = corrector.generator.generate
    calls = {"n": 0}

    def flaky(prompts, cfg, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("actor died")
        return real(prompts, cfg, **kw)

    monkeypatch.setattr(corrector.generator, "generate", flaky)
    with pytest.raises(RuntimeError, match="actor died"):
        _run(corrector, answers, out)
    assert _ids(out) == [r["id"] for r in ROWS[:6]]  # two batches of 3 made it to disk
    monkeypatch.setattr(corrector.generator, "generate", real)
    stats = _run(corrector, answers, out)
    assert _ids(out) == [r["id"] for r in ROWS]
    assert stats["resumed_rows"] == 6 and stats["new_rows"] == 4
    # Same seeds per batch: the resumed file equals an uninterrupted run.
    assert out.read_text() == reference.read_text()


def test_resume_discards_a_partial_last_line_and_remakes_a_chunk_it_lacks(corrector, answers, tmp_path):
    reference = tmp_path / "reference.jsonl"
    _run(corrector, answers, reference)
    out = tmp_path / "out.jsonl"
    _run(corrector, answers, out, max_rows=4)  # chunks of 3: rows 0-2, and row 3 alone
    text = out.read_text()
    out.write_text(text + text.splitlines()[0][:25])  # a write cut off mid-line
    rows, good = scan_output(out)
    assert len(rows) == 4 and good == len(text.encode())
    stats = _run(corrector, answers, out)
    ids = _ids(out)
    assert ids == [r["id"] for r in ROWS] and len(set(ids)) == len(ids)
    # Row 3 was corrected in a chunk of its own: it is corrected again with rows 4 and 5, as one run does.
    assert stats["resumed_rows"] == 3 and stats["new_rows"] == 7
    assert out.read_text() == reference.read_text()
    assert _run(corrector, answers, out)["new_rows"] == 0  # a finished file is left as it is
    assert _ids(out) == ids


def test_resume_refuses_other_settings_and_corrupt_files(corrector, answers, tmp_path):
    out = tmp_path / "out.jsonl"
    _run(corrector, answers, out, max_rows=2)
    lines = out.read_text().splitlines()
    other = json.loads(lines[0])
    other["w2s_correction"]["instruction"] = "be concise"
    out.write_text(json.dumps(other) + "\n" + lines[1] + "\n")
    with pytest.raises(W2SError, match="cannot resume.*instruction"):
        _run(corrector, answers, out)
    out.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(DataError, match=r"out\.jsonl:line 2: not a JSON line"):
        _run(corrector, answers, out)


@pytest.mark.slow  # loads two more tiny Aligners
def test_resume_refuses_rows_made_with_other_decoding_seed_or_weights(corrector, answers, tmp_path, tiny_weak):
    """Everything that decides a correction is compared on every row already written, not on the first alone."""
    import shutil

    from safetensors.torch import load_file, save_file

    out = tmp_path / "out.jsonl"
    _run(corrector, answers, out, max_rows=4)
    lines = out.read_text().splitlines()
    third = json.loads(lines[2])
    third["w2s_correction"]["generation"]["temperature"] = 0.9  # one row of the four made with other decoding
    out.write_text("\n".join(lines[:2] + [json.dumps(third)] + lines[3:]) + "\n")
    with pytest.raises(W2SError, match=r"cannot resume: rows there were corrected with other settings \(generation:"):
        _run(corrector, answers, out)
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(W2SError, match="base_seed: 11 there, 12 now"):
        correct_file(corrector.aligner_path, str(answers), str(out), model_cfg=None, correct_cfg=corrector.cfg,
                     corrector=corrector, progress=False, echo=None, seed=12)
    assert _run(corrector, answers, out)["resumed_rows"] == 3  # the same settings resume (whole chunks: 0-2)

    # New weights at the same path (an Aligner retrained in place): refused, whatever the file's name and size.
    aligner = tmp_path / "aligner"
    shutil.copytree(tiny_weak, aligner)
    mine = Corrector(str(aligner), ModelConfig(dtype="float32"), corrector.cfg)
    try:
        out2 = tmp_path / "out2.jsonl"
        correct_file(str(aligner), str(answers), str(out2), model_cfg=None, correct_cfg=corrector.cfg,
                     corrector=mine, progress=False, echo=None, seed=11, max_rows=4)
    finally:
        mine.close()
    weights = load_file(str(aligner / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1.0
    save_file(weights, str(aligner / "model.safetensors"), metadata={"format": "pt"})
    retrained = Corrector(str(aligner), ModelConfig(dtype="float32"), corrector.cfg)
    try:
        with pytest.raises(W2SError, match="cannot resume.*weights: '[0-9a-f]{64}' there"):
            correct_file(str(aligner), str(answers), str(out2), model_cfg=None, correct_cfg=corrector.cfg,
                         corrector=retrained, progress=False, echo=None, seed=11)
    finally:
        retrained.close()


def test_duplicate_ids_and_bad_rows(corrector, tmp_path):
    src = tmp_path / "dup.jsonl"
    src.write_text(json.dumps({"id": 1, "question": "q", "answer": "a"}) + "\n" +
                   json.dumps({"id": 1, "question": "q2", "answer": "b"}) + "\n")
    with pytest.raises(DataError, match="id 1 appears twice"):
        _run(corrector, src, tmp_path / "o.jsonl")
    src.write_text(json.dumps({"question": "q", "answer": ""}) + "\n" + json.dumps({"answer": "b"}) + "\n")
    with pytest.raises(DataError, match=r"dup\.jsonl:line 2: field 'question'"):
        _run(corrector, src, tmp_path / "o.jsonl")


def test_stats_copy_rate_and_edit_distance():
    rows = [{"answer": "It is 4.", "correction": " It is 4. "}, {"answer": "It is 5.", "correction": "It is 4."},
            {"answer": "a b c d", "correction": "w x y z"}, {"answer": "x", "correction": "x"}]
    s = correction_stats(rows, "answer", "correction")
    assert s["copy_rate"] == 0.5 and s["copies"] == 2
    assert s["edit_distance_words"]["max"] == 4 and s["edit_distance_words"]["mean"] == 1.25
    assert s["normalized_edit_distance_words"]["max"] == 1.0


def test_template_resolution(tmp_path):
    assert resolve_template(str(tmp_path), "auto")[0].name == "aligner-v2"
    (tmp_path / METADATA_FILE).write_text(json.dumps({"template": "aligner-v1", "instruction": "Be kind:"}))
    t, trained, source = resolve_template(str(tmp_path), "auto")
    assert (t.name, trained, source) == ("aligner-v1", "Be kind:", METADATA_FILE)
    # A named template other than the one the Aligner was trained with: refused, or recorded when allowed.
    with pytest.raises(W2SError, match="trained with template 'aligner-v1'.*correct.template='aligner-v2'"):
        resolve_template(str(tmp_path), "aligner-v2")
    t, _, source = resolve_template(str(tmp_path), "aligner-v2", allow_mismatch=True)
    assert (t.name, source) == ("aligner-v2", "config (trained with aligner-v1)")
    assert resolve_template(str(tmp_path), "aligner-v1")[2] == "config"
    (tmp_path / METADATA_FILE).write_text("{")
    with pytest.raises(W2SError, match="unreadable Aligner metadata"):
        resolve_template(str(tmp_path), "auto")


def test_instruction_steers_the_rendered_prompt(tiny_weak, corrector):
    cfg = CorrectConfig(preset="greedy", max_new_tokens=4, instruction="safer", template="aligner-v1")
    c = Corrector(tiny_weak, ModelConfig(dtype="float32"), cfg, generator=corrector.generator)
    assert c.render("Q?", "A.").startswith("BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer "
                                           "pair to make it more harmless and safe: Q? | A.")
    out = c.correct(["Q?"], ["A."])
    assert len(out) == 1 and out[0].completion_tokens >= 1


def test_template_echo_is_cut_from_corrections():
    from w2s.aligner.correct import strip_template_echo

    assert strip_template_echo("Be kind to yourself.\n##Correction:  ASS") == ("Be kind to yourself.\n", True)
    assert strip_template_echo("Paris. BEGINNING OF CONVERSATION: USER:") == ("Paris. ", True)
    assert strip_template_echo("A plain answer.") == ("A plain answer.", False)
    # Legitimate text that mentions the markers mid-line is kept whole.
    quoted = "In the transcript the ASSISTANT: line is the bot, and ##Answer: marks the key."
    assert strip_template_echo(quoted) == (quoted, False)
    assert strip_template_echo("Fine.\n  ASSISTANT: more") == ("Fine.\n", True)
    assert strip_template_echo("I have done this for years, and\n##Cor") == ("I have done this for years, and\n", True)
    assert strip_template_echo("A list:\n- item\n- US") == ("A list:\n- item\n- US", False)  # not a line start


def test_a_second_writer_of_the_same_output_is_refused(corrector, answers, tmp_path):
    from tests.data.test_files import _holder

    out = tmp_path / "out.jsonl"
    holder = _holder(tmp_path / ".out.jsonl.lock")  # what a running `w2s aligner correct` holds
    try:
        with pytest.raises(W2SError, match=rf"{out} is being written by pid {holder.pid}"):
            _run(corrector, answers, out)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    _run(corrector, answers, out)
    assert len(_ids(out)) == len(ROWS)


def test_rows_whose_answer_changed_are_corrected_again_on_resume(corrector, answers, tmp_path):
    out = tmp_path / "out.jsonl"
    _run(corrector, answers, out)
    rows = [dict(r) for r in ROWS]
    rows[3]["answer"] = "A different answer now."
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = _run(corrector, answers, out)
    # Row 3 again, with the rest of its chunk (rows 3-5): every row as one run over the new input makes it.
    assert stats["new_rows"] == 3 and stats["resumed_rows"] == len(ROWS) - 3
    written = {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}
    assert len(written) == len(ROWS) == len(out.read_text().splitlines())
    assert written["row-3"]["answer"] == "A different answer now."
    fresh = tmp_path / "fresh.jsonl"
    _run(corrector, answers, fresh)
    assert written == {json.loads(line)["id"]: json.loads(line) for line in fresh.read_text().splitlines()}


def test_an_input_field_named_like_the_output_is_refused(corrector, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "question": "q", "answer": "a", "correction": "mine"}) + "\n")
    with pytest.raises(DataError, match=r"in.jsonl: row 1 \(id 'a'\) already has a field 'correction'.*output_key"):
        _run(corrector, src, tmp_path / "out.jsonl")


def test_a_long_answer_is_cut_at_its_end_so_the_question_and_template_survive(corrector, tmp_path, monkeypatch):
    """The engines cut an over-long prompt from the left, which would drop the template's head and the question:
    the answer gives way instead, and the cut is counted."""
    from omegaconf import OmegaConf

    question, long_answer = "What is the capital of France?", " ".join(["Paris is lovely."] * 60)
    seen = []
    real = corrector.generator.generate
    monkeypatch.setattr(corrector.generator, "generate", lambda prompts, cfg, **kw: seen.extend(prompts) or
                        real(prompts, cfg, **kw))
    monkeypatch.setattr(corrector, "cfg", OmegaConf.merge(OmegaConf.structured(corrector.cfg),
                                                          {"max_prompt_tokens": 64}))
    short, long = corrector.correct([question, question], ["Paris.", long_answer])
    assert short.answer_cut_tokens == 0 and long.answer_cut_tokens > 0
    assert seen[0] == corrector.render(question, "Paris.")
    head = corrector.render(question, "")[:20]
    assert seen[1].startswith(head) and question in seen[1] and "Paris is lovely." in seen[1]
    assert len(corrector.tokenizer(seen[1])["input_ids"]) <= 64 and long.prompt_tokens <= 64
    # Written rows and their statistics say how many answers were cut.
    src = tmp_path / "long.jsonl"
    src.write_text(json.dumps({"id": 1, "question": question, "answer": long_answer}) + "\n")
    stats = correct_file(corrector.aligner_path, str(src), str(tmp_path / "out.jsonl"), model_cfg=None,
                         correct_cfg=corrector.cfg, corrector=corrector, progress=False, echo=None, seed=11)
    assert stats["answers_cut"] == 1
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row["w2s_correction"]["answer_cut_tokens"] == long.answer_cut_tokens
