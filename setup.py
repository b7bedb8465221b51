"""Everything else is in setup.cfg. This file only ships the top-level recipes/ and launch/ folders inside the
wheel, as the packages w2s._recipes and w2s._launch (see w2s/shipped.py), so that a non-editable install finds
its recipes, their data and the Slurm templates; the source tree keeps them at the top, where users copy from."""

from setuptools import find_packages, setup

SHIPPED = {"w2s._recipes": "recipes", "w2s._launch": "launch"}

setup(
    packages=find_packages(include=["w2s", "w2s.*"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={"w2s": ["popalign/demos.json"], **{name: ["**/*"] for name in SHIPPED}},
)
