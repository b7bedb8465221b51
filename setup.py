"""Everything else is in setup.cfg. This file only ships the top-level recipes/ and launch/ folders inside the
wheel, as the packages w2s._recipes and w2s._launch (see w2s/shipped.py), so that a non-editable install finds
its recipes, their data and the Slurm templates; the source tree keeps them at the top, where users copy from."""

from pathlib import Path

from setuptools import find_packages, setup

SHIPPED = {"w2s._recipes": "recipes", "w2s._launch": "launch"}


def folders(package: str, folder: str) -> list[str]:
    """The package and one subpackage per subfolder (setuptools ships data only from packages it lists)."""
    subs = sorted(p for p in Path(folder).rglob("*") if p.is_dir() and p.name != "__pycache__")
    return [package] + [".".join([package, *p.relative_to(folder).parts]) for p in subs]


shipped = [name for package, folder in SHIPPED.items() for name in folders(package, folder)]
setup(
    packages=find_packages(include=["w2s", "w2s.*"]) + shipped,
    package_dir=SHIPPED,
    package_data={"w2s": ["popalign/demos.json"], **{name: ["*"] for name in shipped}},
)
