"""Aligner interpretability: residual hooks, the reading vector on planted directions, the control metrics, and
`w2s interpret lat` then `control` end to end on the tiny models; the hooks on the real SmolLM2 as well."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from w2s.interpret.control import levenshtein_ratio, linear_fit, token_levenshtein
from w2s.interpret.reading import band_vector, lat_scan, reading_vectors, separation
from w2s.interpret.residual import ResidualReader, ResidualSteer, decoder_layers


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(params=["tiny", "smollm2"])
def hooked_model_dir(request):
    # A fixture, not a lookup in the test: SmolLM2's first build (about 20 s) counts as set-up, not as the test.
    return request.getfixturevalue("tiny_weak" if request.param == "tiny" else "smollm2")


def test_hooks_read_the_residual_stream_and_change_nothing_at_alpha_zero(hooked_model_dir):
    model = _model(hooked_model_dir)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        ref = model(input_ids=ids, output_hidden_states=True)
        layers = decoder_layers(model)
        with ResidualReader(model) as reader:
            model(input_ids=ids)
        # Layer l's output is hidden_states[l + 1] (the last one is also normed by the model).
        for i in range(len(layers) - 1):
            assert torch.allclose(reader.states[i], ref.hidden_states[i + 1], atol=1e-5)
        zero = {i: torch.zeros(model.config.hidden_size) for i in range(len(layers))}
        with ResidualSteer(model, zero):
            same = model(input_ids=ids).logits
        assert torch.equal(same, ref.logits)
        push = {len(layers) // 2: torch.randn(model.config.hidden_size)}
        with ResidualSteer(model, push):
            moved = model(input_ids=ids).logits
        assert not torch.allclose(moved, ref.logits, atol=1e-3)
    after = model(input_ids=ids).logits  # hooks are gone once the block ends
    assert torch.allclose(after, ref.logits)


def test_the_reading_vector_finds_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    layers, rows, hidden = 3, 400, 32
    direction = torch.zeros(layers, hidden)
    direction[0, 3] = direction[1, 7] = 1.0  # layers 0 and 1 carry the correction; layer 2 does not
    copy = torch.randn(layers, rows, hidden, generator=g)
    corr = copy + 0.8 * direction[:, None, :] + 0.3 * torch.randn(layers, rows, hidden, generator=g)
    vectors, explained, step = reading_vectors(corr[:, :200], copy[:, :200])
    assert vectors[0, 3] > 0.9 and vectors[1, 7] > 0.9  # found, with the sign that means "correct"
    sep = separation(vectors, corr[:, 200:], copy[:, 200:])  # held-out rows
    assert sep[0] > 0.95 and sep[1] > 0.95 and 0.3 < sep[2] < 0.7
    assert explained[0] > explained[2] and step.shape == (layers,)
    assert band_vector(corr, copy, 0, 1).norm() == pytest.approx(1.0, abs=1e-5)
    scan = lat_scan(corr[:, :20], vectors)
    assert scan.shape == (layers, 20) and scan[0].mean() > lat_scan(copy[:, :20], vectors)[0].mean()


def test_token_levenshtein_and_the_linear_fit():
    assert token_levenshtein([1, 2, 3], [1, 2, 3]) == 0
    assert token_levenshtein([1, 2, 3], [1, 3]) == 1
    assert token_levenshtein([1, 2, 3], [4, 5, 6, 7]) == 4
    assert token_levenshtein([], [1, 2]) == 2
    fit = linear_fit([-1, 0, 1, 2], [1, 3, 5, 7])
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(3) and fit["r2"] == pytest.approx(1)


@pytest.mark.slow  # trains an Aligner, w2s interpret
def test_lat_then_control_end_to_end_on_the_tiny_models(tmp_path, tiny_weak, benched_tiny_aligner):
    """A w2s Aligner (trained for real, briefly, by `w2s aligner train`) on the tiny models: the LAT outputs, then
    control reusing them."""
    aligner = benched_tiny_aligner[0] / "seed-1" / "aligner"
    out = tmp_path / "interpret"
    # Sampled at temperature 1: greedy, the tiny Aligner writes a prefix of the answer and stops (nothing to contrast).
    args = ["--aligner", str(aligner), "--output", str(out),
            "interpret.pairs.path=recipes/data/tiny/aligner_triples.jsonl", "interpret.max_pairs=12",
            "interpret.tokens=6", "interpret.generate.max_new_tokens=8", "interpret.generate.preset=",
            "interpret.generate.temperature=1.0", "interpret.control.max_pairs=3",
            "interpret.control.alphas=[-0.5,0.0,0.5]", "model.aligner.dtype=float32"]
    lat = subprocess.run([sys.executable, "-m", "w2s.cli", "interpret", "lat", "interpret/quickstart", *args],
                         capture_output=True, text=True, timeout=600)
    assert lat.returncode == 0, lat.stdout[-2000:] + lat.stderr[-2000:]
    # The hooks ran in the role services' corrector actor, as a round's corrections do: its log is in the output.
    assert "starting 1 corrector actor(s)" in lat.stdout and (out / "logs" / "corrector-0.log").is_file()
    result = json.loads((out / "lat.json").read_text())
    n_layers = len(decoder_layers(_model(tiny_weak)))
    assert result["layers"] == n_layers and len(result["separation"]) == n_layers
    # The best layer is the one that separates the held-out pairs best, and control steers the top quarter of
    # layers by that separation (checked below).
    sep = result["separation"]
    assert sep[result["best_layer"]] == max(sep)
    top_quarter = sorted(sorted(range(n_layers), key=lambda layer: -sep[layer])[:math.ceil(n_layers / 4)])
    scan = result["cases"]["correction"]["scan"]
    assert len(scan) == n_layers and 1 <= len(scan[0]) <= 6
    # Separation is measured on held-out pairs: some of the 12, not all (the rest found the reading vectors).
    assert result["heldout_pairs"] and set(result["heldout_pairs"]) < set(range(12))
    for png in ("lat_correction.png", "lat_copy.png", "separation.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    written = tmp_path / "interpret.md"
    control = subprocess.run([sys.executable, "-m", "w2s.cli", "interpret", "control", "interpret/quickstart", *args,
                              "--write", str(written)], capture_output=True, text=True, timeout=600)
    assert control.returncode == 0, control.stdout[-2000:] + control.stderr[-2000:]
    assert "finding them" not in control.stdout  # the reading vectors of the lat run were reused
    assert "pynvml" not in control.stderr  # torch's import-time warning about its own dependency stays off
    c = json.loads((out / "control.json").read_text())
    assert set(c["series"]) == {"aligner", "base model"}  # the base model it was trained from, steered too
    assert [r["alpha"] for r in c["series"]["aligner"]] == [-0.5, 0.0, 0.5]
    assert c["layers"] == top_quarter and c["pairs"] == 3
    # The metrics are those of the corrections written: each alpha's three corrections (all of them are kept as
    # examples) give its mean token-level edit ratio to the answer and its copy rate.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(aligner)
    for r in c["series"]["aligner"]:
        examples = r["examples"]
        assert len(examples) == 3
        ratios = [levenshtein_ratio(tokenizer, e["answer"], e["correction"]) for e in examples]
        assert r["levenshtein_ratio"] == pytest.approx(sum(ratios) / 3)
        assert r["copy_rate"] == sum(e["correction"].strip() == e["answer"].strip() for e in examples) / 3
    rows = c["series"]["aligner"]
    assert c["fits"]["aligner"] == pytest.approx(linear_fit([r["alpha"] for r in rows],
                                                            [r["levenshtein_ratio"] for r in rows]))
    assert (out / "control.png").exists()
    html = (out / "report.html").read_text()
    assert "Representation control" in html and "where the Aligner decides to correct" in html
    # The results file a README quotes: both parts' tables, each with the command and seconds that measured it.
    text = written.read_text()
    assert f"interpret lat interpret/quickstart --aligner {aligner}" in text
    assert f"interpret control interpret/quickstart --aligner {aligner}" in text and "--write" in text
    assert f"in {result['seconds']} s" in text and f"in {c['seconds']} s" in text and 0 < result["seconds"]
    assert f"| {result['best_layer']} | {round(sep[result['best_layer']], 3)} |" in text
    assert f"| aligner | 0.5 | {round(rows[-1]['levenshtein_ratio'], 3)} | {round(rows[-1]['copy_rate'], 3)} |" in text
    assert ".png" not in text  # the figures stay in the output folder's report
