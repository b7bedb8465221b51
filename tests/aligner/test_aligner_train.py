"""w2s.aligner.train: identity warm-up ordering (recorded backend) and a tiny real end-to-end run on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from w2s.aligner import METADATA_FILE
from w2s.aligner import train as train_mod
from w2s.aligner.templates import render
from w2s.config.compose import load_config

pytestmark = pytest.mark.slow  # trains the tiny Aligner

ROWS = [{"id": f"r{i}", "question": f"What is {i} plus 1?", "answer": f"It is {i + 2}.",
         "correction": f"It is {i + 1}."} for i in range(20)]


class RecordingBackend:
    """Stands in for w2s.backends.openrlhf: records what is written and trained, in order."""

    def __init__(self, fail_on: str = ""):
        self.calls: list[tuple[str, dict]] = []
        self.files: dict[str, list[tuple[str, str]]] = {}
        self.fail_on = fail_on  # a training whose data file has this name dies (as a killed process would)

    def write_sft_rows(self, path, rows, *, chat):
        rows = list(rows)
        self.files[str(path)] = rows
        Path(path).write_text(json.dumps(rows))
        self.calls.append(("write", {"path": str(path), "chat": chat, "n": len(rows)}))
        return len(rows)

    def train_sft(self, cfg, model_path, data_path, output_dir, *, seed=42, chat=True, tensorboard_dir=None,
                  attn_implementation="sdpa", trust_remote_code=False):
        self.calls.append(("train", {"model": model_path, "data": data_path, "out": output_dir, "chat": chat}))
        if self.fail_on and Path(data_path).name == self.fail_on:
            raise KeyboardInterrupt("killed")
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(output_dir=output_dir, steps=2, samples=8, seconds=0.1, losses=[2.0, 1.0],
                               metrics={})


def _cfg(tmp_path, *overrides):
    data = tmp_path / "triples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return load_config("tiny/aligner", [f"aligner.train.data.path={data}", *overrides], job="aligner-train")


def test_identity_warmup_runs_first_on_answer_copies(tmp_path, monkeypatch, tiny_weak):
    backend = RecordingBackend()
    monkeypatch.setattr(train_mod, "_backend", lambda: backend)
    cfg = _cfg(tmp_path, "aligner.train.warmup_fraction=0.25", "aligner.train.eval_fraction=0.2")
    out = tmp_path / "aligner"
    meta = train_mod.train_aligner(cfg, out, echo=lambda _m: None)

    trains = [c for kind, c in backend.calls if kind == "train"]
    assert [kind for kind, _ in backend.calls] == ["write", "train", "write", "train"]
    warm, main = trains
    assert warm["model"] == str(Path(tiny_weak)) and main["model"] == warm["out"]  # stage 2 starts from stage 1
    assert main["out"] == str(out.resolve()) and not warm["chat"] and not main["chat"]
    warm_rows, main_rows = backend.files[warm["data"]], backend.files[main["data"]]
    assert len(main_rows) == 16 and len(warm_rows) == 4  # 20 rows, 4 held out; 25% of 16 warm up
    by_prompt = {render("aligner-v2", r["question"], r["answer"]): r for r in ROWS}
    assert all(target == by_prompt[prompt]["answer"] for prompt, target in warm_rows)  # identity: answer -> answer
    assert all(target == by_prompt[prompt]["correction"] for prompt, target in main_rows)
    assert not (out.with_name("aligner.work") / "warmup").exists()  # warm-up weights removed after success

    saved = json.loads((out / METADATA_FILE).read_text())
    assert saved == json.loads(json.dumps(meta))
    assert saved["template"] == "aligner-v2" and saved["warmup_fraction"] == 0.25
    assert saved["sizes"] == {"train": 16, "eval": 4, "warmup": 4, "overlong": 0}
    assert [s["stage"] for s in saved["stages"]] == ["warmup", "correction"] and len(saved["data_sha256"]) == 64
    assert saved["train"]["packing_samples"] is False  # the settings it trained with, packing among them
    eval_rows = (out.with_name("aligner.work") / "eval.jsonl").read_text().splitlines()
    assert len(eval_rows) == 4


def test_a_rerun_keeps_the_warmup_finished_before_a_kill(tmp_path, monkeypatch):
    out = tmp_path / "aligner"

    def killed_in_correction_sft(*overrides: str) -> list[str]:
        backend = RecordingBackend(fail_on="train_sft.jsonl")
        monkeypatch.setattr(train_mod, "_backend", lambda: backend)
        with pytest.raises(KeyboardInterrupt):
            train_mod.train_aligner(_cfg(tmp_path, "aligner.train.warmup_fraction=0.25", *overrides), out,
                                    echo=lambda _m: None)
        return [Path(c["data"]).name for kind, c in backend.calls if kind == "train"]

    assert killed_in_correction_sft() == ["warmup_sft.jsonl", "train_sft.jsonl"]
    # Other inputs (another seed) make another warm-up: it is trained again, not taken from the kept one.
    assert killed_in_correction_sft("run.seed=7") == ["warmup_sft.jsonl", "train_sft.jsonl"]
    rerun, said = RecordingBackend(), []
    monkeypatch.setattr(train_mod, "_backend", lambda: rerun)
    cfg = _cfg(tmp_path, "aligner.train.warmup_fraction=0.25", "run.seed=7")
    meta = train_mod.train_aligner(cfg, out, echo=said.append)
    # Only the correction SFT ran again, from the kept warm-up; the metadata still tells both stages.
    (main,) = [c for kind, c in rerun.calls if kind == "train"]
    work = out.with_name("aligner.work")
    assert Path(main["data"]).name == "train_sft.jsonl" and main["model"] == str(work / "warmup")
    assert any("identity warm-up: finished earlier, kept" in m for m in said)
    assert [s["stage"] for s in meta["stages"]] == ["warmup", "correction"]
    assert not (work / "warmup").exists() and not (work / "warmup.json").exists()  # gone once the Aligner is


def test_no_warmup_single_stage_and_chat_rows(tmp_path, monkeypatch, tiny_weak):
    backend = RecordingBackend()
    monkeypatch.setattr(train_mod, "_backend", lambda: backend)
    cfg = _cfg(tmp_path, "aligner.train.warmup_fraction=0.0", "aligner.train.template=chat",
               "aligner.train.instruction=concise")
    meta = train_mod.train_aligner(cfg, tmp_path / "out", echo=lambda _m: None)
    (train,) = [c for kind, c in backend.calls if kind == "train"]
    assert train["model"] == str(Path(tiny_weak)) and train["chat"]
    prompt, _ = backend.files[train["data"]][0]
    # chat=True: the backend gets the user message and applies the chat template itself.
    assert prompt.startswith("Edit the following Question-Answer pair to make it more concise:\n##Question: ")
    assert meta["chat"] and meta["instruction"].endswith("concise:")


@pytest.fixture(scope="module")
def trained_aligner(tmp_path_factory, tiny_weak):
    """A tiny Aligner really trained through OpenRLHF on CPU: identity warm-up, then correction SFT."""
    from w2s.aligner.train import train_aligner

    tmp = tmp_path_factory.mktemp("aligner-e2e")
    cfg = load_config("tiny/aligner", ["aligner.train.optim.lr=3.0e-3", "aligner.train.global_batch_samples=8",
                                       "aligner.train.micro_batch_samples_per_device=4",
                                       "aligner.train.epochs=4"], job="aligner-train")
    meta = train_aligner(cfg, tmp / "aligner", echo=lambda _m: None)
    return tmp / "aligner", meta, cfg


def test_tiny_aligner_trains_with_loss_going_down(trained_aligner):
    out, meta, _ = trained_aligner
    warm, main = meta["stages"]
    assert warm["stage"] == "warmup" and main["from"] == warm["output_dir"]
    assert main["steps"] >= 8
    losses = main["losses"]
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3, losses
    assert (out / "config.json").is_file() and (out / METADATA_FILE).is_file()
    print(f"\nwarm-up losses {warm['losses']}\ncorrection losses {losses}")


@pytest.mark.parametrize("instruction", ["", "empathy"])
def test_tiny_aligner_corrects_a_file(trained_aligner, tmp_path, instruction):
    from w2s.aligner.correct import correct_file, stats_path

    out, _, cfg = trained_aligner
    rows = [{"uid": i, "question": f"What is {i} plus 2?", "answer": f"It is {i + 5}."} for i in range(6)]
    src = tmp_path / "answers.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from omegaconf import OmegaConf

    correct_cfg = OmegaConf.merge(cfg.correct, {"instruction": instruction})
    stats = correct_file(str(out), str(src), str(tmp_path / "corrected.jsonl"), model_cfg=cfg.model.aligner,
                         correct_cfg=correct_cfg, progress=False, echo=None)
    written = [json.loads(line) for line in (tmp_path / "corrected.jsonl").read_text().splitlines()]
    assert [r["uid"] for r in written] == list(range(6)) and all(isinstance(r["correction"], str) for r in written)
    prov = written[0]["w2s_correction"]
    assert prov["template"] == "aligner-v2" and prov["template_source"] == METADATA_FILE
    assert prov["instruction"] == ("" if not instruction else
                                   "Edit the following Question-Answer pair to make it more empathic and helpful:")
    assert prov["generation"]["frequency_penalty"] == 1.2 and prov["aligner"] == str(out)
    # The statistics count what was written: copies are the corrections equal to their answers.
    copies = sum(r["correction"].strip() == str(r["answer"]).strip() for r in written)
    assert stats["rows"] == 6 and (stats["copies"], stats["copy_rate"]) == (copies, copies / 6)
    assert sum(stats["finish_reasons"].values()) == 6 and stats_path(tmp_path / "corrected.jsonl").exists()
