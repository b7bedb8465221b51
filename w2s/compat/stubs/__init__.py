"""Import-only stand-ins put on ``sys.path`` by :mod:`w2s.compat.cpu` (this file only makes setuptools ship them)."""
