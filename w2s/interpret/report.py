"""The interpretability section of a report, from the files ``w2s interpret`` wrote into a folder."""

from __future__ import annotations

import json
from pathlib import Path

from w2s.eval.html import Figure, Samples, Section, Table, Text


def interpret_sections(folder: Path) -> list[Section]:
    sections = []
    lat_path, control_path = folder / "lat.json", folder / "control.json"
    if lat_path.exists():
        lat = json.loads(lat_path.read_text())
        sep, ev = lat["separation"], lat["explained_variance"]
        cases = lat["cases"]
        blocks = [
            Text(f"Reading vector V_c per layer from {lat['pairs']} (question, answer) pairs the Aligner corrected "
                 f"({lat['copied']} copied, left out): PCA of the normalised differences between its residual stream "
                 "while writing its correction and while following the original answer, at each of the first "
                 "generated tokens. Held-out separation: the share of held-out positions where the correction state "
                 f"projects above the copy state (0.5 is chance). Best layer: {lat['best_layer']} "
                 f"({sep[lat['best_layer']]:.2f})."),
            Figure(folder / "lat_correction.png", "LAT scan of a correction (cf. the paper's Fig. 4a)."),
            Figure(folder / "lat_copy.png", f"LAT scan of a copy: {cases['copy']['kind']} (cf. Fig. 4b)."),
            Figure(folder / "separation.png", "Held-out separation and variance explained, by layer."),
            Table(["layer", "held-out separation", "train separation", "variance explained"],
                  [[i, round(sep[i], 3), round(lat["train_separation"][i], 3), round(ev[i], 3)]
                   for i in range(len(sep))]),
            Samples(["question", "answer", "correction"],
                    [[cases[k][f] for f in ("question", "answer", "correction")] for k in ("correction", "copy")],
                    "The two scanned cases.")]
        sections.append(Section("Interpretability: where the Aligner decides to correct", blocks))
    if control_path.exists():
        ctl = json.loads(control_path.read_text())
        rows = []
        for name, series in ctl["series"].items():
            rows += [[name, r["alpha"], round(r["levenshtein_ratio"], 3), round(r["copy_rate"], 3),
                      round(r["mean_tokens"], 1)] for r in series]
        fits = "; ".join(f"{n}: slope {f['slope']:+.3f}, R² {f['r2']:.2f}" for n, f in ctl["fits"].items())
        sections.append(Section("Representation control", [
            Text(f"alpha x V_c added to the output of layers {ctl['layers']} (scale: {ctl['scale']}) while the model "
                 f"corrects {ctl['pairs']} pairs; D_L = token edit distance to the answer / answer tokens. {fits}."),
            Figure(folder / "control.png", "Mean Levenshtein ratio against the control coefficient (cf. Fig. 4c)."),
            Table(["model", "alpha", "mean Levenshtein ratio", "copy rate", "mean tokens"], rows)]))
    return sections
