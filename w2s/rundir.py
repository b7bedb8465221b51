"""The run directory: atomic writes, per-stage manifests, resume and fork.

Layout::

    RUN_DIR/
      config.yaml          the fully resolved config (header: w2s version, git revision, command)
      attempts/            config-N.yaml: the resolved config of attempt N, every attempt's kept
      run.json             recipe, overrides, version, git revision, start times of each attempt
      cluster.json         Ray nodes and where every role actor ran
      metrics.jsonl        one JSON object per round and stage
      report.html          the researcher-facing summary, self-contained (report.md and plots/ beside it)
      tensorboard/
      judge-cache/         judge outputs by judge, so a resumed evaluation does not ask again
      aligner/             the Aligner trained as the first stage (when aligner.train.enabled)
      aligner-eval/        its corrections of held-out triples, judged against the original answers
      round-01/<stage>/    each stage's outputs and its manifest.json
      round-01/compare/    per-prompt outcomes and judge verdicts of the round's comparisons

A stage is done exactly when its ``manifest.json`` exists (written last, atomically). Its manifest records
the resolved values of the config sections the stage depends on (:mod:`w2s.stage_config`); re-running with a
changed value for a finished stage (a default changed by an upgrade included) is refused, naming the keys, unless
``run.resume=fork``, which redoes that stage and everything after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from w2s import __version__
from w2s.console import say
from w2s.data.files import HashCache, WriterLock, append_jsonl, atomic_write_json, atomic_write_text
from w2s.errors import RunDirError, WorkerError
from w2s.metrics_sinks import MetricsSink, sinks_for
from w2s.stage_config import config_changes, config_hash, config_values
from w2s.stages import RUN_ORDER, Stage

MANIFEST = "manifest.json"


# The fields of the run directory's state files that w2s reads, and their JSON types.
RUN_JSON_FIELDS: dict[str, type | tuple[type, ...]] = {"recipe": str, "attempts": list}
MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "stage": str, "config_hash": str, "inputs": dict, "outputs": dict, "metrics": dict,
    "round": (int, type(None)), "seconds": (int, float)}


def read_state(path: Path) -> dict[str, Any]:
    """A JSON state file of the run directory (``run.json``, a stage's manifest): an object whose fields have the
    types w2s wrote. A corrupt or misshapen one is one clear error naming the file, the field and the fix."""
    fix = ("restore it from a backup, or delete it (a manifest: that stage is redone; run.json: the run's attempt "
           "history is lost) and re-run")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: corrupt ({e}); {fix}") from None
    if not isinstance(state, dict):
        raise RunDirError(f"{path}: holds a JSON {type(state).__name__}, not the object w2s wrote; {fix}")
    fields = RUN_JSON_FIELDS if path.name == "run.json" else MANIFEST_FIELDS
    for name, kind in fields.items():
        value = state.get(name, ...)
        if value is not ... and (not isinstance(value, kind) or isinstance(value, bool)):  # no field is a bool
            raise RunDirError(f"{path}: field {name!r} is {value!r}, not {_type_names(kind)}; {fix}")
    if path.name == "run.json" and "attempts" not in state:
        raise RunDirError(f"{path}: field 'attempts' is missing; {fix}")
    return state


def _type_names(kind: type | tuple[type, ...]) -> str:
    names = {"str": "a string", "list": "a list", "dict": "an object", "int": "a number", "float": "a number",
             "NoneType": "null"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(dict.fromkeys(names.get(k.__name__, k.__name__) for k in kinds))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every row of a run's ``metrics.jsonl``, in the order written (the one reader of that file; a partial last
    line from a killed run, or any line that is not a JSON object, is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def refuse_fewer_rounds(run_dir: Path, rounds: int) -> None:
    """A loop run directory holds one experiment: rounds finished beyond ``loop.rounds`` would stay in its status,
    report and metrics, beside a "final policy" that is not the last one. Refused, before anything is written."""
    beyond = sorted({int(m.parent.parent.name[len("round-"):]) for m in run_dir.glob("round-*/*/manifest.json")
                     if m.parent.parent.name[len("round-"):].isdigit()} - set(range(rounds + 1)))
    if beyond:
        raise RunDirError(
            f"{run_dir} holds finished work of round(s) {', '.join(map(str, beyond))}, beyond loop.rounds={rounds}: "
            f"its report and status would show them beside round {rounds}'s \"final\" policy. Set "
            f"loop.rounds={beyond[-1]} to resume it as it is, or give a new run.dir (round {rounds}'s results are "
            f"already in round-{rounds:02d}/)")


def git_revision() -> str:
    """The checkout w2s runs from (``+dirty`` with uncommitted changes to tracked files that run: Markdown files
    and docs/ aside, so that results files a benchmark writes one after another do not mark the next), or
    ``unknown`` for an installed package: a repository that merely holds the environment it is installed in is
    not its source."""
    package = Path(__file__).resolve().parent
    try:
        top, rev = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel", "HEAD"],
                                  capture_output=True, text=True, timeout=5, check=True).stdout.split()
        if not (Path(top) / "w2s" / Path(__file__).name).resolve() == Path(__file__).resolve():
            return "unknown"
        return rev + ("+dirty" if code_changed(top) else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"


def code_changed(checkout: str | os.PathLike) -> bool:
    """Whether a git checkout has uncommitted changes to tracked files other than Markdown and docs/."""
    changed = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no", "--", ".",
                              ":(exclude)docs", ":(exclude)*.md"], capture_output=True, text=True, timeout=5)
    return bool(changed.stdout.strip())


def source_file(path: str) -> str:
    """A data or model path as a stage input: the local file or folder it names, else the name itself (hub names
    are compared by name)."""
    from w2s.shipped import resolve_path

    if not path or path.startswith(("hub:", "asset:")):
        return path
    p = resolve_path(path)
    return str(p.resolve()) if p.exists() else path


def _run_order(round_index: Any, stage: Any) -> tuple[int, int]:
    """Where a metrics row sorts: by round, then by its stage in :data:`w2s.stages.RUN_ORDER`
    (``aligner-eval/<judge>`` is ``aligner-eval``'s row); rows of no declared stage (the ``eval-vs-*`` comparisons)
    close their round."""
    stage = str(stage).split("/", 1)[0]
    position = RUN_ORDER.index(stage) if stage in RUN_ORDER else len(RUN_ORDER)
    return (-1 if round_index is None else int(round_index), position)


def training_metrics(result: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """A training stage's metrics row and loss curve, from a trainer's result (the round's train stage, PopAlign's).
    """
    losses = list(result.get("losses") or [])
    return ({"steps": result.get("steps"), "samples": result.get("samples"), "seconds": result.get("seconds"),
             "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}, losses)


def say_losses(what: str, losses: list[float]) -> None:
    if losses:
        say(f"{what}: {len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


# ----------------------------------------------------------------------------------------------- the run
def stage_activity(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the role services did between two :meth:`w2s.roles.Services.activity` readings: role groups started,
    the refit checks of the weights taken in place, and the colocated roles' turns ([role, sleep|wake_up])."""
    started = {role: n - before.get("started", {}).get(role, 0) for role, n in after.get("started", {}).items()}
    return {"started": {role: n for role, n in started.items() if n > 0},
            **{k: after.get(k, [])[len(before.get(k, [])):] for k in ("refits", "turns")}}


@dataclass
class StageRecord:
    """What a stage body makes (:meth:`RunDir.run` hands it one, and writes it into the stage's manifest once the
    body returns): its output files, its metrics row, and what else is worth keeping with them."""

    fingerprint: str  # what this attempt makes its outputs from (w2s.data.partial keeps chunks under it)
    outputs: dict[str, Path] = field(default_factory=dict)  # name -> file or folder, hashed into the manifest
    metrics: dict[str, Any] = field(default_factory=dict)  # the stage's row of metrics.jsonl
    provenance: dict[str, Any] = field(default_factory=dict)  # which engine, Aligner, template made the outputs
    losses: list[float] | None = None  # a training's per-step losses
    resumed_rows: int | None = None  # rows kept from before a stop (w2s.data.partial)
    extra: dict[str, Any] = field(default_factory=dict)  # anything else the stage keeps in its manifest

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's fields from this record (besides outputs): those the body set."""
        fields: dict[str, Any] = {"metrics": self.metrics}
        if self.provenance:
            fields["provenance"] = self.provenance
        if self.losses is not None:
            fields["losses"] = self.losses
        if self.resumed_rows is not None:
            fields["resumed_rows"] = self.resumed_rows
        return {**fields, **self.extra}


class StageServices(Protocol):
    """What a run directory reads of the role services its stages work on (:class:`w2s.roles.Services`)."""

    work_s: float  # seconds spent in work calls so far: a manifest's work_seconds is its share

    def activity(self) -> dict[str, Any]:
        """Groups started, refit checks, turns so far: a manifest records a stage's share."""

    def close(self) -> None:
        """Stop every role: the next call starts them afresh."""


class RunDir:
    """A run's directory: its one writer's lock, each stage run once (:meth:`run`), metrics and manifests.

    Args:
        path: the run directory.
        cfg: the run's whole config.
        sinks: where metrics go besides ``metrics.jsonl`` (default: those ``cfg.log`` asks for,
            :func:`w2s.metrics_sinks.sinks_for`).
    """

    def __init__(self, path: str | os.PathLike, cfg: DictConfig, *, sinks: list[MetricsSink] | None = None):
        self.path = Path(path).resolve()
        self.cfg = cfg
        self.fork = cfg.run.resume == "fork"
        self._forked_from: str | None = None  # the first stage redone in fork mode; everything after is redone
        self._cluster_info: dict[str, Any] = {}
        self.sinks = sinks_for(self.path, cfg) if sinks is None else sinks
        self._lock: WriterLock | None = None
        self._hashes = HashCache(self.path / ".hashes.json")
        self.attempt = 0  # this driver's attempt number (1, 2, ...), set by open()
        # The role services the stages work on, given by the driver that owns them (attach): their work time and
        # activity go into each manifest, and a stage whose actor died (WorkerError) is retried up to
        # run.max_retries times on fresh services (the failed role's group is gone; every role starts afresh).
        self.services: StageServices | None = None

    def attach(self, services: StageServices) -> None:
        """The role services this run's stages work on from now on (see ``services``)."""
        self.services = services

    def _work_s(self) -> float:
        return self.services.work_s if self.services is not None else 0.0

    def _activity(self) -> dict[str, Any]:
        return self.services.activity() if self.services is not None else {}

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
        info = read_state(self.path / "run.json") if existing else {
            "recipe": recipe, "overrides": overrides, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "attempts": []}
        revision = git_revision()
        info["attempts"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "w2s_version": __version__,
                                 "git_revision": revision, "overrides": overrides, "pid": os.getpid(),
                                 "host": os.uname().nodename})
        self.attempt = len(info["attempts"])
        atomic_write_json(self.path / "run.json", info)
        header = (f"# w2s {__version__}, git {revision}\n# recipe: {recipe}\n"
                  f"# overrides: {' '.join(overrides) or '(none)'}\n")
        resolved = header + OmegaConf.to_yaml(self.cfg, resolve=True)
        atomic_write_text(self.path / "config.yaml", resolved)
        atomic_write_text(self.path / "attempts" / f"config-{self.attempt}.yaml", resolved)
        return existing

    def release(self) -> None:
        """Let another driver open this run directory (the lock is also released when this process exits)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def stage_dir(self, round_index: int | None, stage: str) -> Path:
        base = self.path if round_index is None else self.path / f"round-{round_index:02d}"
        return base / stage

    # -- stages
    def finished(self, stage_dir: Path, config_keys: list[str], inputs: dict[str, Any] | None = None,
                 ) -> dict[str, Any] | None:
        """The manifest of a finished stage that still holds; None when the stage must (re)run.

        A stage holds when its config sections, the contents of its ``inputs`` (files, folders such as models;
        paths that are not local, like hub names, are compared by name) and its recorded outputs are what the
        manifest says. Anything else is refused with what changed, unless ``run.resume=fork``, which redoes this
        stage and every stage after it.
        """
        manifest_path = stage_dir / MANIFEST
        if self._forked_from is not None or not manifest_path.exists():
            return None
        label = stage_dir.relative_to(self.path)
        manifest = read_state(manifest_path)
        changed = []
        if "config_values" in manifest:  # the values it ran with: a default changed by an upgrade is seen
            keys = config_changes(manifest["config_values"], self.cfg, config_keys)
            if keys:
                changed.append(f"the config ({', '.join(keys)})")
        elif manifest.get("config_hash") != config_hash(self.cfg, config_keys):  # a manifest of an older w2s
            changed.append(f"the config (sections {', '.join(config_keys)})")
        changed += self._changed_files("input", manifest.get("inputs", {}), self._describe(inputs or {}))
        changed += self._changed_files("output", manifest.get("outputs", {}), None)
        self._hashes.save()
        if not changed:
            say(f"{label}: finished earlier, skipped")
            return manifest
        if not self.fork:
            raise RunDirError(
                f"finished stage {label} no longer matches its manifest: {'; '.join(changed)} changed. Re-run with "
                "the original config and files to resume, set run.resume=fork to redo this stage and everything "
                "after it, or choose a new run.dir")
        say(f"{label}: {'; '.join(changed)} changed; redoing it and every later stage (run.resume=fork)")
        self._forked_from = str(stage_dir)
        self._drop_metrics_from(manifest.get("round"), manifest.get("stage"))
        return None

    def _describe(self, files: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, value in files.items():
            if value is None or value == "":
                continue
            p = Path(str(value))
            out[name] = {**self._hashes.describe(p), "path": self._rel(p)} if p.exists() else {
                "path": str(value), "size": None, "sha256": None}
        return out

    def sha256(self, value: str) -> str:
        """The contents' sha256 of a file or folder (remembered by file stamps, as the manifests' are); a name that
        is not a local path (a hub model) stands for itself."""
        p = Path(value)
        return self._hashes.sha256(p) if p.exists() else str(value)

    def _rel(self, p: Path) -> str:
        """Paths inside the run directory are recorded relative to it, so that the directory can move."""
        p = Path(p).absolute()
        return str(p.relative_to(self.path)) if p.is_relative_to(self.path) else str(p)

    def _changed_files(self, kind: str, recorded: dict[str, Any], now: dict[str, Any] | None) -> list[str]:
        """What differs between a manifest's record of files and their state now (``now`` None: look at the
        recorded paths themselves, as for outputs)."""
        problems = []
        for name, rec in recorded.items():
            rec = rec if isinstance(rec, dict) else {"path": rec}  # manifests before hashes were recorded
            path = Path(rec["path"]) if Path(rec["path"]).is_absolute() else self.path / rec["path"]
            if now is None:
                if not path.exists():
                    problems.append(f"{kind} {name} ({path}) is missing")
                    continue
                cur = self._hashes.describe(path) if rec.get("sha256") else {}
            else:
                if name not in now:
                    problems.append(f"{kind} {name} is no longer given")
                    continue
                cur = now[name]
                if str(cur["path"]) != str(rec["path"]):
                    problems.append(f"{kind} {name} is now {cur['path']} (was {rec['path']})")
                    continue
            if rec.get("size") is not None and cur.get("size") != rec["size"]:
                problems.append(f"{kind} {name} ({path}: {rec['size']} -> {cur.get('size')} bytes)")
            elif rec.get("sha256") and cur.get("sha256") != rec["sha256"]:
                problems.append(f"{kind} {name} ({path}: contents)")
        if now is not None:
            problems += [f"{kind} {name} is new" for name in now if name not in recorded]
        return problems

    @contextmanager
    def stage(self, stage_dir: Path, config_keys: list[str], *, round_index: int | None, name: str,
              inputs: dict[str, Any] | None = None) -> Iterator[StageRecord]:
        """Run a stage body; on success its manifest is written (the stage is then done).

        The body fills the yielded dict with ``outputs`` (name -> path), ``metrics`` and anything else worth
        keeping. On an exception no manifest is written, so the stage reruns on resume. The manifest records the
        size and sha256 of every input and output, which :meth:`finished` checks on resume.
        """
        stage_dir.mkdir(parents=True, exist_ok=True)
        # What this attempt makes its outputs from (config values, input contents): the body's partial rows are
        # kept under it (w2s.data.partial), so that a rerun keeps them only when they were made from the same.
        fingerprint = hashlib.sha256(json.dumps({"config": config_values(self.cfg, config_keys),
                                                 "inputs": self._describe(inputs or {})}, sort_keys=True,
                                                default=str).encode()).hexdigest()
        record = StageRecord(fingerprint)
        started, work, activity = time.time(), self._work_s(), self._activity()
        yield record
        outputs = {}
        for k, v in record.outputs.items():
            outputs[k] = {**self._hashes.describe(Path(v)), "path": self._rel(Path(v))}
        manifest = {
            "stage": name, "round": round_index, "config_hash": config_hash(self.cfg, config_keys),
            "config_keys": config_keys, "config_values": config_values(self.cfg, config_keys),
            "seed": int(self.cfg.run.seed), "inputs": self._describe(inputs or {}),
            "outputs": outputs, "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 2), "work_seconds": round(self._work_s() - work, 2),
            "attempt": self.attempt, "services": stage_activity(activity, self._activity()),
            **record.manifest_fields(),
        }
        self._hashes.save()
        atomic_write_json(stage_dir / MANIFEST, manifest)

    def run(self, stage: Stage, round_index: int | None, inputs: dict[str, Any] | None,
            work: Callable[[Path, StageRecord], None]) -> dict[str, Path]:
        """The one runner of every stage (the loop's, the Aligner's, evaluation's, PopAlign's): the outputs of a
        finished stage that still holds (:meth:`finished`), else ``work(stage_dir, record)`` run as :meth:`stage`
        runs a body (it writes into ``stage_dir`` and fills its :class:`StageRecord`), then
        the stage's row of metrics.jsonl. Work that fails because an actor died or timed out
        (:class:`~w2s.errors.WorkerError`) is rerun up to ``run.max_retries`` times on restarted services (an
        unfinished stage has no manifest, so a rerun starts it cleanly). Returns output name -> path.

        Raises:
            RunDirError: a finished stage no longer matches its manifest (and ``run.resume`` is not ``fork``).
            WorkerError: the work still failed after its retries.
        """
        stage_dir = self.stage_dir(round_index, stage.name)
        keys = list(stage.keys)
        done = self.finished(stage_dir, keys, inputs)
        if done and set(stage.outputs) <= set(done["outputs"]):  # (an older w2s may have recorded fewer)
            return {name: self.output(done, name) for name in done["outputs"]}
        retries = int(self.cfg.run.max_retries) if self.services is not None else 0
        for attempt in range(retries + 1):
            try:
                return self._work(stage, round_index, stage_dir, inputs, work)
            except WorkerError as e:
                if attempt == retries:
                    raise
                say(f"{stage_dir.relative_to(self.path)} failed ({e}); retry {attempt + 1}/{retries} "
                    "(run.max_retries)")
                self.services.close()
        raise AssertionError("unreachable")

    def _work(self, stage: Stage, round_index: int | None, stage_dir: Path, inputs: dict[str, Any] | None,
              work: Callable[[Path, StageRecord], None]) -> dict[str, Path]:
        with self.stage(stage_dir, list(stage.keys), round_index=round_index, name=stage.name, inputs=inputs) as rec:
            work(stage_dir, rec)
            outputs = {name: Path(path) for name, path in rec.outputs.items()}
            missing = [name for name in stage.outputs if name not in outputs]
            if missing:  # the declaration and the work disagree: a bug, caught before a manifest says "done"
                raise RuntimeError(f"stage {stage.name} recorded no {', '.join(missing)} output")
            if stage.metrics_row:
                self.log_metrics(round_index, stage.name, rec.metrics)
        return outputs

    def output(self, manifest: dict[str, Any], name: str) -> Path:
        rec = manifest["outputs"][name]
        p = Path(rec["path"] if isinstance(rec, dict) else rec)
        return p if p.is_absolute() else self.path / p

    # -- metrics
    def log_metrics(self, round_index: int | None, stage: str, metrics: dict[str, Any]) -> None:
        """One line of metrics.jsonl, and the numbers as TensorBoard scalars (step: the round)."""
        row = {"round": round_index, "stage": stage, **metrics}
        if self._last_metrics().get((round_index, stage)) == row:
            return  # a finished run re-run: the same numbers again are no new information
        append_jsonl(self.path / "metrics.jsonl", {**row, "attempt": self.attempt,
                                                   "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        numbers = {f"{stage}/{k}": v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for sink in self.sinks:
            sink.log(numbers, round_index or 0)

    def _last_metrics(self) -> dict[tuple[Any, Any], dict[str, Any]]:
        """The latest row per (round, stage), without its attempt and time."""
        return {(r.get("round"), r.get("stage")): {k: v for k, v in r.items() if k not in ("attempt", "time")}
                for r in self.metrics()}

    def _drop_metrics_from(self, round_index: Any, stage: Any) -> None:
        """Forget the metrics rows of a stage being redone and of every stage that runs after it."""
        cut = _run_order(round_index, stage)
        rows = self.metrics()
        kept = [r for r in rows if _run_order(r.get("round"), r.get("stage")) < cut]
        if len(kept) != len(rows):
            atomic_write_text(self.path / "metrics.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in kept))

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    # -- cluster
    def record_cluster(self, info: dict[str, Any]) -> None:
        self._cluster_info = info
        atomic_write_json(self.path / "cluster.json", {**info, "actors": []})

    def record_placements(self, actors: list[dict[str, Any]]) -> None:
        """Where every role actor of this attempt ran (RUN_DIR/cluster.json)."""
        atomic_write_json(self.path / "cluster.json", {**self._cluster_info, "actors": actors})
