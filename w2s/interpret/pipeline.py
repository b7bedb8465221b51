"""``w2s interpret lat`` and ``w2s interpret control``: the Aligner's correction representation, read and used.

lat: the Aligner corrects ``interpret.pairs``; the stimuli give paired correction/copy activations at every layer
and each of the first ``interpret.tokens`` generated tokens; half the contrasting pairs (seeded) find the reading
vector V_c per layer, the other half score how well each layer separates the conditions; two LAT scans (the
correction case with the largest edit, and a copy case) are drawn as the paper's Fig. 4a/b.

control: V_c (from the lat outputs in the same folder, or found again) is added at the chosen layers for each alpha
of ``interpret.control.alphas``; the mean token-level Levenshtein ratio and the copy rate against alpha, with a
linear fit (Fig. 4c), for the Aligner and for the base model it was trained from.

Outputs: ``reading.safetensors`` (the vectors; no pickle), ``lat.json``, ``control.json``, PNGs, and a
self-contained ``report.html``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from w2s.data.files import atomic_write_json
from w2s.errors import DataError, W2SError
from w2s.interpret.reading import Stimulus


def _correct_cfg(cfg: Any, template: str | None = None) -> Any:
    """The correction settings with the interpret decoding, on transformers (hooks need the model in process)."""
    from w2s.config.plain import to_plain

    return OmegaConf.merge(cfg.correct, to_plain(cfg.interpret.generate), {"backend": "transformers"},
                           {"template": template} if template else {})


def read_pairs(cfg: Any) -> list[tuple[str, str]]:
    from w2s.data.io import read_rows

    src = cfg.interpret.pairs
    rows = read_rows(src, required={"question": src.question_key, "answer": src.answer_key},
                     what="interpret.pairs").rows
    if not rows:
        raise DataError(f"interpret.pairs: {src.path} holds no (question, answer) pairs")
    return [(r[src.question_key], r[src.answer_key]) for r in rows]


def build_stimuli(corrector: Any, pairs: list[tuple[str, str]], cfg: Any, say: Any) -> list[Stimulus]:
    """The Aligner's corrections of ``pairs`` (the full stimuli set S_qac), tokenised."""
    say(f"interpret: the Aligner corrects {len(pairs)} pairs")
    outs = corrector.correct([q for q, _ in pairs], [a for _, a in pairs], seed=int(cfg.run.seed))
    tok, limit = corrector.tokenizer, int(cfg.interpret.generate.max_prompt_tokens)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return [Stimulus(q, a, o.text, corrector.generator.encode(corrector.render(q, a), limit), ids(a), ids(o.text))
            for (q, a), o in zip(pairs, outs)]


def find_reading(model: Any, stimuli: list[Stimulus], cfg: Any) -> dict[str, Any]:
    """Reading vectors from half the contrasting pairs, separation scores on the other half."""
    import torch

    from w2s.interpret.reading import paired_differences, reading_vectors, separation

    tokens = int(cfg.interpret.tokens)
    contrast = [i for i, s in enumerate(stimuli) if not s.copied]
    if len(contrast) < 2:
        raise W2SError(f"interpret: only {len(contrast)} of {len(stimuli)} corrections differ from their answers; a "
                       "reading vector needs at least 2 (use more pairs, or an Aligner that corrects)")
    order = list(contrast)
    random.Random(int(cfg.run.seed)).shuffle(order)
    n_held = min(len(order) - 1, max(1, round(len(order) * float(cfg.interpret.heldout_fraction))))
    held, train = sorted(order[:n_held]), sorted(order[n_held:])
    corr, copy, owner = paired_differences(model, stimuli, tokens)
    is_train = torch.tensor([int(o) in set(train) for o in owner])
    vectors, explained, step = reading_vectors(corr[:, is_train], copy[:, is_train])
    proj = torch.cat([(corr[:, is_train] * vectors[:, None]).sum(-1), (copy[:, is_train] * vectors[:, None]).sum(-1)],
                     dim=1)
    out = {"vectors": vectors, "explained": explained, "step_norm": step, "train_pairs": train, "heldout_pairs": held,
           "separation": separation(vectors, corr[:, ~is_train], copy[:, ~is_train]),
           "train_separation": separation(vectors, corr[:, is_train], copy[:, is_train]),
           "mid": proj.mean(dim=1), "sd": proj.std(dim=1).clamp_min(1e-6), "rows": int(len(owner))}
    band = list(cfg.interpret.band)
    if band:
        from w2s.interpret.reading import band_vector

        out["band_vector"] = band_vector(corr[:, is_train], copy[:, is_train], band[0], band[1])
    return out


def _edit_ratio(s: Stimulus) -> float:
    from w2s.interpret.control import token_levenshtein

    return token_levenshtein(s.answer_ids, s.correction_ids) / max(1, len(s.answer_ids))


def lat_cases(model: Any, stimuli: list[Stimulus], reading: dict[str, Any], tokens: int) -> dict[str, Any]:
    """LAT scans (z-scored per layer by the training projections) of the correction case with the largest edit
    among the held-out pairs, and of a copy case (a pair the Aligner copied, else the same pair's answer read as
    a copy)."""
    from w2s.interpret.reading import activations, lat_scan

    held = [stimuli[i] for i in reading["heldout_pairs"]]
    case = max(held, key=_edit_ratio)
    copied = [s for s in stimuli if s.copied and s.correction_ids]
    copy_case, copy_kind = (copied[0], "a pair the Aligner copied") if copied else (case, "the same pair's answer")
    z = lambda states: ((lat_scan(states, reading["vectors"]) - reading["mid"][:, None])  # noqa: E731
                        / reading["sd"][:, None])
    corr = z(activations(model, case.prompt_ids, case.correction_ids, tokens))
    copy = z(activations(model, copy_case.prompt_ids, copy_case.correction_ids if copied else copy_case.answer_ids,
                         tokens))
    return {"correction": {"question": case.question, "answer": case.answer, "correction": case.correction,
                           "scan": corr.tolist()},
            "copy": {"question": copy_case.question, "answer": copy_case.answer, "kind": copy_kind,
                     "correction": copy_case.correction, "scan": copy.tolist()}}


def save_reading(out: Path, reading: dict[str, Any], spec: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {k: reading[k].contiguous() for k in ("vectors", "explained", "step_norm", "mid", "sd", "band_vector")
               if k in reading}
    save_file(tensors, str(out / "reading.safetensors"), metadata={"spec": json.dumps(spec, sort_keys=True)})


def load_reading(out: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The saved reading vectors when they were found for the same Aligner, pairs and settings."""
    from safetensors import safe_open

    path = out / "reading.safetensors"
    if not path.exists() or not (out / "lat.json").exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        if json.loads((f.metadata() or {}).get("spec", "{}")) != spec:
            return None
        reading = {k: f.get_tensor(k) for k in f.keys()}
    reading["separation"] = json.loads((out / "lat.json").read_text())["separation"]
    return reading


def spec_of(cfg: Any, aligner: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    import hashlib

    from w2s.config.plain import to_plain

    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]
    section = to_plain(cfg.interpret)
    keep = {k: section[k] for k in ("max_pairs", "tokens", "heldout_fraction", "band", "generate")}
    return {"aligner": aligner, "pairs_sha256": digest, "seed": int(cfg.run.seed), **keep,
            "correct": {k: to_plain(cfg.correct)[k] for k in ("template", "instruction")}}


def run_lat(cfg: Any, aligner: str, out: Path, say: Any, services: Callable[[], Any]) -> dict[str, Any]:
    """The LAT half; the model-bound work runs in the role services' corrector (``services()``), see
    :class:`w2s.workers.interpreter.InterpreterWorker`."""
    from w2s.interpret.plots import plot_lat, plot_separation

    t0 = time.perf_counter()
    pairs = read_pairs(cfg)[: int(cfg.interpret.max_pairs) or None]
    say(f"interpret: the Aligner corrects {len(pairs)} pairs; reading vectors and LAT scans in a corrector actor")
    found = services().corrector.lat(aligner, _correct_cfg(cfg), pairs, cfg)
    reading, cases = found["reading"], found["cases"]
    save_reading(out, reading, spec_of(cfg, aligner, pairs))
    sep = reading["separation"]
    best = max(range(len(sep)), key=lambda layer: sep[layer])
    result = {"aligner": aligner, "pairs": len(pairs), "copied": found["copied"],
              "contrast_rows": reading["rows"], "layers": len(sep), "separation": sep,
              "train_separation": reading["train_separation"], "explained_variance": reading["explained"].tolist(),
              "best_layer": best, "cases": cases, "heldout_pairs": reading["heldout_pairs"], **_measured_by(t0)}
    atomic_write_json(out / "lat.json", result)
    plot_lat(cases["correction"]["scan"], out / "lat_correction.png", title="LAT scan: a correction")
    plot_lat(cases["copy"]["scan"], out / "lat_copy.png", title=f"LAT scan: a copy ({cases['copy']['kind']})")
    plot_separation(sep, result["explained_variance"], out / "separation.png")
    say(f"interpret lat: {len(pairs)} pairs ({result['copied']} copied), {reading['rows']} paired rows; held-out "
        f"separation best at layer {best} ({sep[best]:.2f}), mean {sum(sep) / len(sep):.2f}")
    return result


def _measured_by(t0: float) -> dict[str, Any]:
    """The command that measured a part and its seconds (the corrector actor's start included when this part started
    it), kept with the part's numbers for a results file to quote."""
    from w2s.results import command_line

    return {"command": command_line(), "seconds": round(time.perf_counter() - t0, 1)}


def control_layers(cfg: Any, separation: list[float]) -> list[int]:
    layers = [int(x) for x in cfg.interpret.control.layers]
    if layers:
        return layers
    quarter = max(1, math.ceil(len(separation) / 4))
    return sorted(sorted(range(len(separation)), key=lambda layer: -separation[layer])[:quarter])


def run_control(cfg: Any, aligner: str, out: Path, say: Any, services: Callable[[], Any]) -> dict[str, Any]:
    """The control half (the reading vectors of ``run_lat`` in ``out``, found again when missing); corrections
    with the vectors added run in the role services' corrector, see :class:`w2s.workers.interpreter.InterpreterWorker`.
    """
    from w2s.aligner.correct import read_metadata
    from w2s.interpret.control import linear_fit
    from w2s.interpret.plots import plot_control

    t0 = time.perf_counter()
    pairs = read_pairs(cfg)
    reading = load_reading(out, spec_of(cfg, aligner, pairs[: int(cfg.interpret.max_pairs) or None]))
    if reading is None:
        say("interpret control: no reading vectors for this Aligner and these settings in the output; finding them")
        run_lat(cfg, aligner, out, say, services)
        reading = load_reading(out, spec_of(cfg, aligner, pairs[: int(cfg.interpret.max_pairs) or None]))
    c = cfg.interpret.control
    layers = control_layers(cfg, list(reading["separation"]))
    # alpha = 1 shifts the residual stream by one step in all: each of the n layers adds 1/n of its own step (the
    # shifts add up along the stream; a full step at every layer of a band breaks the model's output).
    scale = {layer: (float(reading["step_norm"][layer]) if c.scale == "diff-norm" else 1.0) / len(layers)
             for layer in layers}
    directions = {layer: reading["vectors"][layer] * scale[layer] for layer in layers}
    grid_pairs = pairs[: int(c.max_pairs) or None]
    alphas = [float(a) for a in c.alphas]
    say(f"interpret control: layers {layers}, alphas {alphas}, {len(grid_pairs)} pairs")
    series: dict[str, list[dict[str, Any]]] = {}
    meta = read_metadata(aligner) or {}
    models = [("aligner", aligner, None)]
    if c.base_model and meta.get("base_model_resolved"):
        models.append(("base model", str(meta["base_model_resolved"]), str(meta.get("template") or "")))
    elif c.base_model:
        say("interpret control: the Aligner has no w2s metadata naming its base model; base model skipped")
    for name, path, template in models:
        say(f"  {name}: corrections at {len(alphas)} alphas")
        series[name] = services().corrector.control(path, _correct_cfg(cfg, template), grid_pairs, directions,
                                                    alphas, int(cfg.run.seed))
    fits = {name: linear_fit([r["alpha"] for r in rows], [r["levenshtein_ratio"] for r in rows])
            for name, rows in series.items()}
    result = {"aligner": aligner, "layers": layers, "scale": c.scale, "scale_by_layer": scale, "pairs": len(grid_pairs),
              "series": series, "fits": fits, **_measured_by(t0)}
    atomic_write_json(out / "control.json", result)
    plot_control(series, fits, out / "control.png")
    for name, f in fits.items():
        say(f"interpret control ({name}): Levenshtein ratio = {f['slope']:+.3f} alpha + {f['intercept']:.3f}, "
            f"R^2 {f['r2']:.2f}")
    return result
