"""The run directory: atomic writes, per-stage manifests, resume and fork.

Layout::

    RUN_DIR/
      config.yaml          the fully resolved config (header: w2s version, git revision, command)
      run.json             recipe, overrides, version, git revision, start times of each attempt
      cluster.json         Ray nodes and where every role actor ran
      metrics.jsonl        one JSON object per round and stage
      report.md, plots/    the researcher-facing summary
      tensorboard/
      aligner/             the Aligner trained as the first stage (when aligner.train.enabled)
      round-01/<stage>/    each stage's outputs and its manifest.json

A stage is done exactly when its ``manifest.json`` exists (written last, atomically). Its manifest records
the hash of the config sections the stage depends on; re-running with a changed config for a finished
stage is refused unless ``run.resume=fork``, which redoes that stage and everything after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from w2s import __version__
from w2s.data.files import WriterLock, append_jsonl, atomic_write_json, atomic_write_text
from w2s.errors import RunDirError

MANIFEST = "manifest.json"


def say(msg: str) -> None:
    """A progress line from the driver."""
    print(f"[w2s {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        h.update(str(q.relative_to(p) if p.is_dir() else q.name).encode())
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def to_plain(node: Any) -> Any:
    """A config node as plain Python (dicts, lists, scalars), e.g. to send to an actor or to hash."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _changes(value: Any, default: Any) -> Any:
    """The parts of ``value`` that differ from ``default`` (nested dicts compared key by key)."""
    if isinstance(value, dict) and isinstance(default, dict):
        out = {k: _changes(v, default.get(k, _ABSENT)) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _ABSENT}
    return _ABSENT if value == default else value


_ABSENT = object()


def config_hash(cfg: DictConfig, keys: list[str]) -> str:
    """Hash of what a stage depends on: the values of the given config sections that differ from the schema's
    defaults, so that a field added to the schema later (with a default) does not invalidate finished stages."""
    from w2s.config.schema import W2SConfig

    defaults = OmegaConf.structured(W2SConfig)

    parts = {k: _changes(to_plain(OmegaConf.select(cfg, k)), to_plain(OmegaConf.select(defaults, k))) for k in keys}
    parts = {k: v for k, v in parts.items() if v is not _ABSENT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_revision() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------------------------- the run
class RunDir:
    def __init__(self, path: str | os.PathLike, cfg: DictConfig):
        self.path = Path(path).resolve()
        self.cfg = cfg
        self.fork = cfg.run.resume == "fork"
        self._forked_from: str | None = None  # the first stage redone in fork mode; everything after is redone
        self._cluster_info: dict[str, Any] = {}
        self._tb: Any = None  # TensorBoard writer, opened on the first metrics
        self._lock: WriterLock | None = None

    # -- set-up
    def open(self, *, recipe: str, overrides: list[str]) -> bool:
        """Create or reopen the run directory; returns True when resuming an existing run."""
        existing = (self.path / "run.json").exists()
        # One driver per run directory, held until this process exits.
        self._lock = WriterLock(self.path / ".w2s.lock", f"run directory {self.path}").acquire()
        if existing and self.cfg.run.resume == "never":
            raise RunDirError(f"{self.path} already holds a run and run.resume=never; choose another run.dir, "
                              "or run.resume=auto to continue it")
        self.path.mkdir(parents=True, exist_ok=True)
        info = json.loads((self.path / "run.json").read_text()) if existing else {
            "recipe": recipe, "overrides": overrides, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "attempts": []}
        info["attempts"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "w2s_version": __version__,
                                 "git_revision": git_revision(), "overrides": overrides, "pid": os.getpid(),
                                 "host": os.uname().nodename})
        atomic_write_json(self.path / "run.json", info)
        header = (f"# w2s {__version__}, git {git_revision()}\n# recipe: {recipe}\n"
                  f"# overrides: {' '.join(overrides) or '(none)'}\n")
        atomic_write_text(self.path / "config.yaml", header + OmegaConf.to_yaml(self.cfg, resolve=True))
        return existing

    def stage_dir(self, round_index: int | None, stage: str) -> Path:
        base = self.path if round_index is None else self.path / f"round-{round_index:02d}"
        return base / stage

    # -- stages
    def finished(self, stage_dir: Path, config_keys: list[str]) -> dict[str, Any] | None:
        """The manifest of a finished stage whose config is unchanged; None when the stage must (re)run."""
        manifest_path = stage_dir / MANIFEST
        if self._forked_from is not None or not manifest_path.exists():
            return None
        manifest = json.loads(manifest_path.read_text())
        now = config_hash(self.cfg, config_keys)
        if manifest.get("config_hash") == now:
            say(f"{stage_dir.relative_to(self.path)}: finished earlier, skipped")
            return manifest
        if not self.fork:
            raise RunDirError(
                f"the config of finished stage {stage_dir.relative_to(self.path)} changed (sections "
                f"{', '.join(config_keys)}). Re-run with the original config to resume, set run.resume=fork to "
                "redo this stage and everything after it with the new config, or choose a new run.dir")
        self._forked_from = str(stage_dir)
        return None

    @contextmanager
    def stage(self, stage_dir: Path, config_keys: list[str], *, round_index: int | None, name: str,
              inputs: dict[str, Path] | None = None) -> Iterator[dict[str, Any]]:
        """Run a stage body; on success its manifest is written (the stage is then done).

        The body fills the yielded dict with ``outputs`` (name -> path), ``metrics`` and anything else worth
        keeping. On an exception no manifest is written, so the stage reruns on resume.
        """
        stage_dir.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"outputs": {}, "metrics": {}}
        started = time.time()
        yield record
        outputs = {k: str(Path(v).relative_to(self.path)) if Path(v).is_relative_to(self.path) else str(v)
                   for k, v in record.pop("outputs").items()}
        manifest = {
            "stage": name, "round": round_index, "config_hash": config_hash(self.cfg, config_keys),
            "config_keys": config_keys, "seed": int(self.cfg.run.seed),
            "inputs": {k: {"path": str(v), "sha256": file_sha256(Path(v))} for k, v in (inputs or {}).items()},
            "outputs": outputs, "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 2), **record,
        }
        atomic_write_json(stage_dir / MANIFEST, manifest)

    def output(self, manifest: dict[str, Any], name: str) -> Path:
        p = Path(manifest["outputs"][name])
        return p if p.is_absolute() else self.path / p

    # -- metrics
    def log_metrics(self, round_index: int | None, stage: str, metrics: dict[str, Any]) -> None:
        """One line of metrics.jsonl, and the numbers as TensorBoard scalars (step: the round)."""
        append_jsonl(self.path / "metrics.jsonl", {"round": round_index, "stage": stage, **metrics,
                                                   "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        if self.cfg.log.tensorboard:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path / "tensorboard" / "rounds"))
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{stage}/{key}", value, round_index or 0)
            self._tb.flush()

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a partial last line from a killed run
        return rows

    # -- cluster
    def record_cluster(self, info: dict[str, Any]) -> None:
        self._cluster_info = info
        atomic_write_json(self.path / "cluster.json", {**info, "actors": []})

    def record_placements(self, actors: list[dict[str, Any]]) -> None:
        """Where every role actor of this attempt ran (RUN_DIR/cluster.json)."""
        atomic_write_json(self.path / "cluster.json", {**self._cluster_info, "actors": actors})
