"""Reading and checking row data (triples, prompts, answers) and text-comparison helpers."""

from w2s.data.io import RowsResult, read_rows

__all__ = ["RowsResult", "read_rows"]
