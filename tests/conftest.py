"""Shared fixtures: offline environment, tiny model assets built once per test run, a private Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Any accidental model-hub access must fail fast, and no test may write to the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402

# The asset cache the user had before `w2s_cache` points W2S_CACHE at a private folder: SmolLM2 is a 93 MB
# download, built once per machine rather than once per test run.
_USER_CACHE = os.environ.get("W2S_CACHE")


# `make check` sets this: a test that is not marked `slow` and runs longer fails, naming itself, so that the fast
# tier stays fast as tests are added (the rule is "starts Ray, vLLM, a trainer, a browser or the CLI: slow").
FAST_LIMIT_S = float(os.environ.get("W2S_FAST_TEST_LIMIT_S") or 0)
# Processes a test run may leave behind are none: what is still alive this long after the last test fails the run.
SURVIVOR_GRACE_S = 60.0
_SERVICE_WORDS = ("ray::", "raylet", "gcs_server", "dashboard/agent", "runtime_env/agent", "vllm", "EngineCore",
                  "slurmctld", "slurmd", "munged")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (FAST_LIMIT_S and report.when == "call" and report.passed and "slow" not in item.keywords
            and report.duration > FAST_LIMIT_S):
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} took {report.duration:.1f} s, over the fast tier's {FAST_LIMIT_S:.0f} s: "
                           "mark it @pytest.mark.slow (it starts something heavy) or make it faster")


def _service_processes(since: float, tag: str, *, prefix: bool = False) -> dict[int, str]:
    """Ray, vLLM and Slurm processes of this test run (they inherit ``tag`` in their environment, wherever they
    were re-parented) started after ``since``; ``prefix``: the tag and every worker's tag under it."""
    import psutil

    found = {}
    for p in psutil.process_iter(["pid", "create_time", "cmdline", "status"]):
        info = p.info
        if (info["create_time"] or 0) < since or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(info["cmdline"] or [])
        if not any(w in cmd for w in _SERVICE_WORDS):
            continue
        try:
            theirs = p.environ().get("W2S_TEST_RUN") or ""
            if theirs == tag or (prefix and theirs.startswith(tag + "/")):
                found[info["pid"]] = cmd[:160]
        except psutil.Error:  # gone, or not ours to read
            pass
    return found


def _worker_id(config) -> str | None:
    """The pytest-xdist worker this process is (gw0, gw1, ...), None in the controller or a run without xdist."""
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else workerinput["workerid"]


def pytest_configure(config):
    import time

    config._w2s_started = time.time()
    # Inherited by every process the tests start (and by Ray's, which the driver starts): how survivors are told
    # from another test run's processes on the same machine. xdist workers inherit the controller's tag (they start
    # after this hook) and add their name, so that a worker's check never counts its neighbour's live processes.
    base = os.environ.get("W2S_TEST_RUN_BASE") or f"{os.getpid()}-{time.time():.0f}"
    os.environ["W2S_TEST_RUN_BASE"] = base
    worker = _worker_id(config)
    os.environ["W2S_TEST_RUN"] = base if worker is None else f"{base}/{worker}"


def _survivors(config, *, every_worker: bool) -> dict[int, str]:
    """Live children of this process and this run's Ray, vLLM or Slurm processes (``every_worker``: all workers')."""
    import psutil

    me = psutil.Process()
    found = {}
    for c in me.children(recursive=True):
        try:
            cmd = " ".join(c.cmdline())
            # multiprocessing's resource tracker belongs to pytest's own process and ends with it.
            if c.status() != psutil.STATUS_ZOMBIE and "multiprocessing.resource_tracker" not in cmd:
                found[c.pid] = cmd[:160]
        except psutil.Error:  # exited while being listed
            pass
    found.update(_service_processes(config._w2s_started, os.environ["W2S_TEST_RUN"], prefix=every_worker))
    found.pop(me.pid, None)
    return found


@pytest.hookimpl(trylast=True)  # after xdist has stopped its workers
def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test left a process behind: a child of a test process, or a Ray, vLLM or Slurm process
    started during the run, still alive SURVIVOR_GRACE_S after the last test. Each xdist worker checks its own
    children and reports them; the controller checks every worker's tagged processes, wherever they were
    re-parented."""
    import time

    config = session.config
    worker = _worker_id(config)
    deadline = time.time() + SURVIVOR_GRACE_S
    while True:
        survivors = _survivors(config, every_worker=worker is None)
        if not survivors or time.time() > deadline:
            break
        time.sleep(2)
    if worker is not None:
        config.workeroutput["w2s_survivors"] = survivors
        return
    survivors.update(getattr(config, "_w2s_worker_survivors", {}))
    if survivors:
        lines = "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in sorted(survivors.items()))
        print(f"\n{len(survivors)} process(es) survived the test run {SURVIVOR_GRACE_S:.0f} s after its end:\n{lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without pytest-xdist
def pytest_testnodedown(node, error):
    """xdist (controller): a worker's survivors, reported by its own pytest_sessionfinish."""
    reported = getattr(node, "workeroutput", {}).get("w2s_survivors") or {}
    node.config._w2s_worker_survivors = {**getattr(node.config, "_w2s_worker_survivors", {}), **reported}


# Tests that must not run beside each other under xdist (`--dist loadgroup` keeps a group in one worker): vLLM
# engines bound the suite's memory (two would take about 14 GB), the Slurm tests share one cluster and its ports,
# and a Slurm test does not run beside a vLLM engine's start either: both groups are one, "serial". (A Ray node
# of a one-CPU Slurm job, on a core a starting engine also loads, can miss Ray's own 30 s start-up wait; and a
# two-node job beside an engine was the suite's memory peak.)
_SERIAL_MARKERS = ("vllm", "slurm")
SERIAL_GROUP = "serial"
# Session fixtures built by a whole CLI run (a fixture of session scope is built once per worker): the tests that use
# one form a group, so that they run in one worker and it is built once.
SHARED_RUN_GROUPS = {"finished_dpo_run": "finished-dpo-run", "benched_tiny_aligner": "trained-aligner"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups in the workers
def pytest_collection_modifyitems(config, items):
    """Group the tests that must run one at a time (see _SERIAL_MARKERS) and those sharing a run built once (see
    SHARED_RUN_GROUPS); skip `gpu` tests without CUDA (checked lazily: torch is imported only when such a test
    exists)."""
    for item in items:
        if any(marker in item.keywords for marker in _SERIAL_MARKERS):
            item.add_marker(pytest.mark.xdist_group(SERIAL_GROUP))
            continue
        shared = [group for fixture, group in SHARED_RUN_GROUPS.items() if fixture in item.fixturenames]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def w2s_cache(tmp_path_factory):
    """A private asset cache for the test run (the real SmolLM2 asset is shared, see `smollm2_path`)."""
    path = tmp_path_factory.mktemp("w2s-cache")
    old = os.environ.get("W2S_CACHE")
    os.environ["W2S_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("W2S_CACHE", None)
    else:
        os.environ["W2S_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_weak(w2s_cache) -> str:
    """Path of the random tiny 'weak' Llama (asset:tiny-weak), built once per test run."""
    from w2s.assets import ensure_asset

    return str(ensure_asset("tiny-weak", progress=lambda _msg: None))


@pytest.fixture(scope="session")
def tiny_strong(w2s_cache) -> str:
    """Path of the random tiny 'strong' Llama (asset:tiny-strong), same tokenizer as tiny_weak."""
    from w2s.assets import ensure_asset

    return str(ensure_asset("tiny-strong", progress=lambda _msg: None))


@pytest.fixture(scope="session")
def smollm2() -> str:
    """Path of SmolLM2-135M-Instruct (asset:smollm2), built into the user's asset cache on first use."""
    from w2s.assets import ensure_asset

    with pytest.MonkeyPatch.context() as mp:
        if _USER_CACHE is None:
            mp.delenv("W2S_CACHE", raising=False)
        else:
            mp.setenv("W2S_CACHE", _USER_CACHE)
        return str(ensure_asset("smollm2", progress=lambda _msg: None))


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_weak, tmp_path_factory) -> str:
    """A one-label sequence-classification reward model on the tiny Llama (random, seeded head), saved once."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-rm")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_weak, num_labels=1, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_weak)
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def benched_tiny_aligner(tmp_path_factory, tiny_weak) -> tuple[Path, str]:
    """`w2s bench aligner --seeds 1,2` on tiny/aligner, run once: it trains the recipe's Aligner once per seed
    (`w2s aligner train`, into OUT/seed-N/aligner), measures each, then the two together. The output folder and
    the command's stdout; tests that need a trained tiny Aligner read OUT/seed-1/aligner."""
    out = tmp_path_factory.mktemp("bench-aligner") / "bench"
    cmd = [sys.executable, "-m", "w2s.cli", "bench", "aligner", "--recipe", "tiny/aligner", "--seeds", "1,2",
           "--json", "--output", str(out), "--write", str(out / "results.md"), "eval.max_prompts=4",
           "correct.max_new_tokens=8", "eval.generate.max_new_tokens=8"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out, result.stdout
