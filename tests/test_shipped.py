"""A plain (non-editable) install finds its recipes, their data, the PopAlign demos and the Slurm templates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """w2s built as a wheel and installed into a folder of its own (dependencies come from this environment)."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("w2s-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    return tmp / "site"


def _w2s(site: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # Ahead of the editable install on sys.path, and run away from the checkout, so nothing can come from it.
    environ = {**os.environ, "PYTHONPATH": str(site)}
    environ.pop("W2S_RECIPES", None)
    environ.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def test_the_installed_package_runs_from_its_own_copy(installed, tmp_path):
    probe = ("import json, w2s, w2s.shipped as s; from w2s.shipped import resolve_path; "
             "from w2s.popalign.strategies import DEFAULT_DEMOS; "
             "print(json.dumps([w2s.__file__, str(s.RECIPES_DIR), s.CHECKOUT, "
             "str(resolve_path('recipes/data/quickstart/triples.jsonl')), DEFAULT_DEMOS.is_file()]))")
    out = _w2s(installed, tmp_path, "-c", probe)
    assert out.returncode == 0, out.stderr
    module, recipes, checkout, triples, demos = json.loads(out.stdout)
    assert Path(module).is_relative_to(installed) and checkout is None and demos
    assert Path(recipes) == installed / "w2s" / "_recipes"
    assert Path(triples) == installed / "w2s" / "_recipes" / "data" / "quickstart" / "triples.jsonl"
    assert Path(triples).read_bytes() == (ROOT / "recipes/data/quickstart/triples.jsonl").read_bytes()


def test_recipes_validate_and_launch_from_an_installed_package(installed, tmp_path):
    listed = _w2s(installed, tmp_path, "-m", "w2s.cli", "recipes")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    shipped = {str(p.relative_to(ROOT / "recipes").with_suffix("")) for p in (ROOT / "recipes").rglob("*.yaml")
               if not any(part.startswith("_") for part in p.relative_to(ROOT / "recipes").parts)}
    assert names == shipped

    ok = _w2s(installed, tmp_path, "-m", "w2s.cli", "validate", "quickstart")
    assert ok.returncode == 0 and "valid" in ok.stdout, ok.stdout + ok.stderr
    missing = _w2s(installed, tmp_path, "-m", "w2s.cli", "validate", "quickstart",
                   "loop.prompts.path=recipes/data/quickstart/nope.jsonl")
    assert missing.returncode == 2 and "loop.prompts.path" in missing.stderr + missing.stdout

    launch = _w2s(installed, tmp_path, "-m", "w2s.cli", "launch", "slurm", "tiny/slurm", "--nodes", "1",
                  "--gpus-per-node", "0", "--dry-run", "--run-dir", str(tmp_path / "run"))
    assert launch.returncode == 0, launch.stderr
    assert "#SBATCH --nodes=1" in launch.stdout and "w2s_main" in launch.stdout


def test_a_copied_recipes_folder_falls_back_to_the_shipped_data(installed, tmp_path):
    mine = tmp_path / "my-recipes"
    mine.mkdir()
    shutil.copy(ROOT / "recipes" / "quickstart.yaml", mine / "mine.yaml")
    env = {"W2S_RECIPES": str(mine)}
    listed = _w2s(installed, tmp_path, "-m", "w2s.cli", "recipes", env=env)
    assert listed.stdout.split()[0] == "mine", listed.stdout + listed.stderr
    ok = _w2s(installed, tmp_path, "-m", "w2s.cli", "validate", "mine", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
