"""The Aligner: a weak model that rewrites (question, answer) into a better answer.

* :mod:`w2s.aligner.templates`: prompt templates and instruction presets.
* :mod:`w2s.aligner.dataset`: triples -> train/eval rows, identity warm-up rows, duplicate report.
* :mod:`w2s.aligner.train`: SFT of the Aligner (optionally after an identity warm-up).
* :mod:`w2s.aligner.correct`: correcting answers with a trained Aligner (in memory or file to file).
"""

METADATA_FILE = "w2s_aligner.json"
