"""PopAlign: preference pairs from diversified contrasting patterns, with no labelling (arXiv 2410.13785).

:mod:`w2s.popalign.strategies` holds one pair builder per strategy; :mod:`w2s.popalign.pipeline` runs them
on Ray generator groups and writes the mixed dataset; ``w2s popalign RECIPE`` is the command.
"""
