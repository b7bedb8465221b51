"""The chat-completions client against a real HTTP server on localhost (a scripted OpenAI-compatible one: it can
be told to rate-limit, fail or refuse a key), the judgement cache, and a pairwise judge over both."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from w2s.eval.cache import JudgementCache
from w2s.eval.endpoint import ChatEndpoint, EndpointError
from w2s.eval.pairwise import Pair, PairwiseJudge
from w2s.eval.presets import PRESETS


class Script:
    def __init__(self):
        self.failures: list[tuple[int, dict]] = []   # responses to give before answering normally
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Condition()
        self.answer = lambda body: "- Better: [[responseA]]"
        # Each request waits (up to 5 s) until this many are in flight: overlap that does not depend on the
        # machine's load, so that a concurrency limit is seen exactly.
        self.hold_until = 0


@pytest.fixture
def server():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append(body)
                script.headers.append(dict(self.headers))
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
                failure = script.failures.pop(0) if script.failures else None
                script.lock.notify_all()
                script.lock.wait_for(lambda: script.in_flight >= script.hold_until, timeout=5)
            time.sleep(0.05)
            if failure:
                status, headers = failure
                payload = b'{"error": "scripted"}'
            else:
                status, headers = 200, {}
                payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                               "content": script.answer(body)}}]}).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            with script.lock:
                script.in_flight -= 1
                script.lock.notify_all()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield script
    httpd.shutdown()
    httpd.server_close()


def _cfg(url, **kw):
    base = dict(base_url=url, model="judge", api_key_env="", concurrency=2, timeout_s=10.0, max_retries=4,
                backoff_s=0.05, backoff_max_s=0.2)
    return SimpleNamespace(**{**base, **kw})


def test_rate_limits_and_server_errors_are_retried(server):
    server.failures = [(429, {"Retry-After": "0.1"}), (503, {}), (500, {})]
    chat = ChatEndpoint(_cfg(server.url, concurrency=1))
    assert chat.complete([[{"role": "user", "content": "hi"}]]) == ["- Better: [[responseA]]"]
    assert chat.requests_sent == 4 and chat.retries == 3
    assert server.requests[-1]["model"] == "judge" and server.requests[-1]["temperature"] == 0.0


def test_a_bad_key_fails_at_once_and_keys_come_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("W2S_TEST_KEY", "sk-secret")
    server.failures = [(401, {})]
    chat = ChatEndpoint(_cfg(server.url, api_key_env="W2S_TEST_KEY"))
    with pytest.raises(EndpointError, match="HTTP 401.*check the API key"):
        chat.complete_one([{"role": "user", "content": "hi"}])
    assert chat.requests_sent == 1  # not retried
    assert server.headers[0]["Authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in json.dumps(chat.identity)  # what cache keys and reports see
    monkeypatch.delenv("W2S_TEST_KEY")
    with pytest.raises(EndpointError, match=r"\$W2S_TEST_KEY, which is not set"):
        ChatEndpoint(_cfg(server.url, api_key_env="W2S_TEST_KEY"))


def test_gives_up_after_max_retries_with_a_clear_message(server):
    chat = ChatEndpoint(_cfg("http://127.0.0.1:9/v1", max_retries=2))  # nothing listens on port 9
    with pytest.raises(EndpointError, match="no answer after 3 attempts.*ConnectError"):
        chat.complete_one([{"role": "user", "content": "hi"}])


def test_concurrency_limit_is_honoured(server):
    server.hold_until = 3  # the server waits for a third request: a client that allowed more would send a fourth
    chat = ChatEndpoint(_cfg(server.url, concurrency=3))
    texts = chat.complete([[{"role": "user", "content": str(i)}] for i in range(12)])
    assert len(texts) == 12 and server.max_in_flight == 3


def test_pairwise_judge_both_orders_and_the_cache_resumes_without_asking_again(server, tmp_path):
    # A judge that always names responseA: position bias, so every pair is inconsistent and a tie.
    chat = ChatEndpoint(_cfg(server.url))
    pairs = [Pair(str(i), f"q{i}", f"good {i}", f"bad {i}") for i in range(5)]
    with JudgementCache(tmp_path / "cache.jsonl") as cache:
        judged = PairwiseJudge("helpful", PRESETS["helpfulness"], chat, cache=cache).judge(pairs)
    assert chat.requests_sent == 10  # two orders per pair
    assert all(j.outcome == "tie" and j.consistent is False for j in judged)
    assert {j["candidate"] for j in judged[0].judgements} == {"A", "B"}
    # A judge that prefers the answer containing "good": consistent wins; a new cache key (another answer text).
    server.answer = lambda body: ("Better: [[responseA]]" if "<responseA>: good" in body["messages"][-1]["content"]
                                  else "Better: [[responseB]]")
    chat2 = ChatEndpoint(_cfg(server.url, model="judge-2"))
    with JudgementCache(tmp_path / "cache.jsonl") as cache:
        judged = PairwiseJudge("helpful", PRESETS["helpfulness"], chat2, cache=cache).judge(pairs)
        assert len(cache) == 20
    assert [j.outcome for j in judged] == ["win"] * 5 and all(j.consistent for j in judged)
    # Rerun: every judgement is in the cache, nothing is sent.
    chat3 = ChatEndpoint(_cfg(server.url, model="judge-2"))
    with JudgementCache(tmp_path / "cache.jsonl") as cache:
        again = PairwiseJudge("helpful", PRESETS["helpfulness"], chat3, cache=cache).judge(pairs)
    assert chat3.requests_sent == 0 and [j.outcome for j in again] == ["win"] * 5


def test_cache_survives_a_torn_line_and_has_one_writer(tmp_path):
    path = tmp_path / "c.jsonl"
    with JudgementCache(path) as cache:
        cache.put("k1", "one")
        cache.put("k2", "two")
        with pytest.raises(Exception, match="being written by"):
            JudgementCache(path)
    with open(path, "a") as f:
        f.write('{"key": "k3", "te')  # a process killed mid-line
    with JudgementCache(path) as cache:
        assert len(cache) == 2 and cache.get("k2") == "two" and cache.get("k3") is None
        cache.put("k3", "three")
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k1", "k2", "k3"]


def test_single_order_draws_the_position_per_prompt(server):
    chat = ChatEndpoint(_cfg(server.url))
    pairs = [Pair(str(i), f"q{i}", "c", "b") for i in range(40)]
    judged = PairwiseJudge("h", PRESETS["helpfulness"], chat, both_orders=False, seed=3).judge(pairs)
    positions = [j.judgements[0]["candidate"] for j in judged]
    assert chat.requests_sent == 40 and 10 < positions.count("A") < 30  # neither position always
    # The judge always names A: the candidate wins exactly where it was A.
    assert all((j.outcome == "win") == (j.judgements[0]["candidate"] == "A") for j in judged)


def test_identical_answers_are_a_tie_without_asking(server):
    chat = ChatEndpoint(_cfg(server.url))
    judged = PairwiseJudge("h", PRESETS["helpfulness"], chat).judge([Pair("1", "q", "same text ", "same text"),
                                                                    Pair("2", "q", "good", "bad")])
    assert chat.requests_sent == 2  # both orders of the second pair only
    assert judged[0].outcome == "tie" and judged[0].judgements[0]["identical_answers"]
