"""A client for OpenAI-compatible chat-completions endpoints: a hosted model, or ``vllm serve`` on the cluster.

The API key is read from the environment variable the config names, at call time, and is never written
anywhere (not to the run directory, not to logs). Requests run ``concurrency`` at a time; rate limits (429),
server errors (5xx), timeouts and refused connections are retried with exponential backoff and jitter, honouring
``Retry-After``, up to ``max_retries`` times, so an endpoint that restarts mid-evaluation costs a wait, not the
evaluation. Other errors (a wrong key, an unknown model) fail at once with the server's message.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from w2s.errors import W2SError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(W2SError):
    """An endpoint refused a request, or kept failing after every retry."""


def api_key(env_var: str) -> str | None:
    """The key in ``env_var`` (None when no variable is named); an error naming the variable when it is unset."""
    if not env_var:
        return None
    key = os.environ.get(env_var)
    if not key:
        raise EndpointError(f"the endpoint's API key is read from ${env_var}, which is not set: export {env_var}=... "
                            "(the key is never stored in a config or the run directory)")
    return key


class ChatEndpoint:
    """Chat completions from one endpoint (:class:`w2s.config.schema.EndpointConfig`)."""

    def __init__(self, cfg: Any, *, temperature: float = 0.0, max_tokens: int = 1024, seed: int | None = 0):
        import httpx

        if not cfg.base_url or not cfg.model:
            raise EndpointError("an endpoint needs base_url (e.g. http://127.0.0.1:8000/v1) and model")
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.model, self.cfg = cfg.model, cfg
        self.params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if seed is not None:
            self.params["seed"] = seed
        key = api_key(cfg.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=float(cfg.timeout_s),
                                    limits=httpx.Limits(max_connections=int(cfg.concurrency)))
        self._lock = threading.Lock()
        self.requests_sent = 0  # HTTP requests, retries included: what the cache saves shows here
        self.retries = 0

    @property
    def identity(self) -> dict[str, Any]:
        """What makes two answers of this endpoint interchangeable (for cache keys): never the key."""
        return {"base_url": self.cfg.base_url, "model": self.model, **self.params}

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        wait, last = float(self.cfg.backoff_s), ""
        for attempt in range(int(self.cfg.max_retries) + 1):
            with self._lock:
                self.requests_sent += 1
                self.retries += attempt > 0
            try:
                resp = self._client.post(self.url, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                last, retry_after = f"{type(e).__name__}: {e}", None
            else:
                if resp.status_code == 200:
                    return resp.json()
                if resp.status_code not in RETRY_STATUS:
                    raise EndpointError(f"{self.url} answered HTTP {resp.status_code}: {resp.text[:500]}"
                                        + (" (check the API key)" if resp.status_code in (401, 403) else ""))
                last, retry_after = f"HTTP {resp.status_code}: {resp.text[:200]}", resp.headers.get("retry-after")
            if attempt == int(self.cfg.max_retries):
                break
            pause = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else wait
            time.sleep(min(pause, float(self.cfg.backoff_max_s)) * random.uniform(0.5, 1.0))
            wait = min(wait * 2.0, float(self.cfg.backoff_max_s))
        raise EndpointError(f"{self.url}: no answer after {int(self.cfg.max_retries) + 1} attempts (last: {last}); "
                            "raise max_retries or backoff_max_s, or check that the server is up")

    def complete_one(self, messages: list[dict[str, str]]) -> str:
        data = self._post({"model": self.model, "messages": messages, **self.params})
        try:
            return data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise EndpointError(f"{self.url} returned no choices[0].message.content: {str(data)[:300]}") from e

    def complete(self, conversations: Sequence[list[dict[str, str]]],
                 on_done: Callable[[int, str], None] | None = None) -> list[str]:
        """Answers to many conversations, ``concurrency`` at a time, in order; ``on_done(i, text)`` is called as
        each finishes (from worker threads), so a caller can save results before the rest come in."""
        def one(i: int) -> str:
            text = self.complete_one(conversations[i])
            if on_done is not None:
                on_done(i, text)
            return text

        with ThreadPoolExecutor(max_workers=max(1, int(self.cfg.concurrency))) as pool:
            return list(pool.map(one, range(len(conversations))))

    def close(self) -> None:
        self._client.close()
