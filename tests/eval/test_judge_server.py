"""Pairwise judging over HTTP against a real OpenAI-compatible server: vLLM's own (`vllm serve`, the CPU build)
serving SmolLM2-135M-Instruct on localhost. The server is stopped and restarted in the middle of an evaluation
(the client's retries carry it through), and a rerun sends no request for the pairs already judged.

A 135M model is a poor judge: many verdicts are unparseable, and they are counted as such. What is tested here is
the path, not the judge's taste."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from w2s.eval.cache import JudgementCache
from w2s.eval.endpoint import ChatEndpoint
from w2s.eval.pairwise import Pair, PairwiseJudge
from w2s.eval.presets import PRESETS
from w2s.ports import rendezvous_port

pytestmark = [pytest.mark.slow, pytest.mark.vllm]



class VLLMServer:
    def __init__(self, model: str, port: int, log: Path):
        self.model, self.port, self.log = model, port, log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 600) -> None:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                 "--served-model-name", "smol", "--host", "127.0.0.1", "--port", str(self.port),
                 "--max-model-len", "2048", "--enforce-eager", "--dtype", "float32"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"vllm serve exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise AssertionError(f"vllm serve did not come up in {timeout_s} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its engine process, started by us
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def server(smollm2, tmp_path):
    s = VLLMServer(smollm2, rendezvous_port("127.0.0.1"), tmp_path / "vllm.log")
    s.start()
    yield s
    s.stop()


def _endpoint(url: str) -> SimpleNamespace:
    # Retries long enough to outlast a server restart (about a minute on two cores).
    return SimpleNamespace(base_url=url, model="smol", api_key_env="", concurrency=2, timeout_s=60.0,
                           max_retries=60, backoff_s=1.0, backoff_max_s=5.0)


PAIRS = [Pair(f"p{i}", q, good, bad) for i, (q, good, bad) in enumerate([
    ("What is the capital of France?", "The capital of France is Paris.", "France's capital is Berlin."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders have six legs."),
    ("Is it safe to mix bleach and ammonia?", "No. Mixing them releases toxic gas.", "Yes, it cleans better."),
    ("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
    ("Name a primary colour.", "Red is a primary colour.", "Green-brown."),
    ("What do bees make?", "Bees make honey and wax.", "Bees make milk."),
])]


def test_judging_survives_a_server_restart_and_the_cache_saves_every_request(server, tmp_path):
    cache_path = tmp_path / "judge.jsonl"
    chat = ChatEndpoint(_endpoint(server.url), temperature=0.0, max_tokens=24)
    results: dict[str, object] = {}

    def evaluate() -> None:
        try:
            with JudgementCache(cache_path) as cache:
                results["judged"] = PairwiseJudge("helpful", PRESETS["helpfulness"], chat, cache=cache).judge(PAIRS)
        except Exception as e:  # reported below
            results["error"] = e

    worker = threading.Thread(target=evaluate)
    worker.start()
    deadline = time.monotonic() + 300
    while (not cache_path.exists() or len(cache_path.read_text().splitlines()) < 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    done_before_stop = len(cache_path.read_text().splitlines())
    assert 3 <= done_before_stop < 2 * len(PAIRS), "the evaluation should be under way when the server stops"
    server.stop()
    time.sleep(3)  # requests in flight now fail: connection refused, retried with backoff
    server.start()
    worker.join(600)
    assert "error" not in results, results.get("error")
    judged = results["judged"]
    assert len(judged) == len(PAIRS) and chat.retries > 0
    assert all(len(j.judgements) == 2 and all(o["text"] for o in j.judgements) for j in judged)
    cached = [json.loads(line) for line in cache_path.read_text().splitlines()]
    assert len({c["key"] for c in cached}) == 2 * len(PAIRS)  # every judgement exactly once, none lost

    # The rerun asks nothing: every judgement comes from the cache, and the outcomes are the same.
    again_chat = ChatEndpoint(_endpoint(server.url), temperature=0.0, max_tokens=24)
    with JudgementCache(cache_path) as cache:
        again = PairwiseJudge("helpful", PRESETS["helpfulness"], again_chat, cache=cache).judge(PAIRS)
    assert again_chat.requests_sent == 0
    assert [j.outcome for j in again] == [j.outcome for j in judged]

    # The same server as a judge of `w2s eval` on two answer files, and as the endpoint its candidate answers.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": p.id, "prompt": p.prompt}) + "\n" for p in PAIRS))
    base = tmp_path / "baseline.jsonl"
    base.write_text("".join(json.dumps({"id": p.id, "answer": p.baseline}) + "\n" for p in reversed(PAIRS)))
    judge = ["eval.judges.similarity.enabled=false", "eval.judges.helpful.kind=pairwise",
             "eval.judges.helpful.preset=helpfulness", f"eval.judges.helpful.endpoint.base_url={server.url}",
             "eval.judges.helpful.endpoint.model=smol", "eval.judges.helpful.generate.max_new_tokens=24",
             "eval.generate.max_new_tokens=16"]
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "w2s.cli", "eval", "--prompts", str(prompts), "--candidate",
           f"openai:smol@{server.url}", "--baseline", str(base), "--output", str(out), *judge]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())["judges"]["helpful"]
    assert summary["n"] + summary["unparsed"] == len(PAIRS)
    assert len((out / "judgements.jsonl").read_text().splitlines()) == 2 * len(PAIRS)
    assert "judge helpful: 12 new judgement(s)" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "judge helpful: 0 new judgement(s)" in second.stdout
    assert "answers from openai:smol@" in second.stdout  # the endpoint's answers were kept, not asked again
