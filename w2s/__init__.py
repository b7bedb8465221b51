"""w2s: weak-to-strong alignment of large language models."""

__version__ = "0.1.0"
