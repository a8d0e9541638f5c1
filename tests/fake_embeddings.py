"""A fault-injecting OpenAI-compatible /v1/embeddings on 127.0.0.1, for the provider-embedder tests.

The vectors are a bag-of-words hashing projection: each lower-cased word has a fixed random Gaussian vector
of `dim` (seeded by a hash of the word), and a text's vector is the sum of its words' vectors, times 3 (never
unit length, so the client's normalisation is what makes it so). Texts that share words are near each other,
so dense retrieval over them means something, as with a real model.

Faults, served instead of an answer (the chat endpoint's, tests/fake_endpoint.py, where they overlap):

    "429"      429 with Retry-After / retry-after-ms (`retry_after` seconds)     "500", "503"  a server error
    "400"      a client error (never worth a retry)      "hang"  no answer for `hang_s`, then the socket closes
    "html"     a 200 whose body is an HTML error page    "short" a 200 with one vector fewer than texts sent
    "slow"     a good answer after 0.15 s                "echo401" a 401 echoing the Authorization header

`fail_next([...])` queues faults for the next requests, in arrival order; a request with a text containing
"fault=<name>" gets that fault every time. `requests` counts requests, `answered` how many times each text
was given a vector, so a test can assert that none was paid for twice.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler

import numpy as np

from tests.fake_endpoint import LoopbackServer, _send, serve_fault

_TEXT_FAULT = re.compile(r"fault=([a-z0-9]+)")


def word_vector(word: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim)


def fake_vector(text: str, dim: int) -> np.ndarray:
    """The endpoint's (unnormalised) vector of `text`: 3 x the sum of its words' hashed Gaussian vectors."""
    words = re.findall(r"[a-z0-9]+", text.lower()) or ["<empty>"]
    return 3.0 * sum(word_vector(w, dim) for w in words)


class FakeEmbeddingsEndpoint(LoopbackServer):
    """See the module docstring."""

    def __init__(self, dim: int = 64, hang_s: float = 1.0, retry_after: float = 0.0):
        self.dim, self.hang_s, self.retry_after = dim, hang_s, retry_after
        self.queued: deque[str] = deque()
        self.requests = 0
        self.batches: list[list[str]] = []          # the inputs of every request, in arrival order
        self.bodies: list[dict] = []
        self.auth: list[str] = []                   # every request's Authorization header
        self.answered: Counter = Counter()          # text -> good answers that included it
        self.served: Counter = Counter()            # fault (or "ok") -> times served
        self._start()

    def fail_next(self, faults: list[str]) -> None:
        with self.lock:
            self.queued.extend(faults)

    def paid_twice(self) -> list[str]:
        return [t for t, n in self.answered.items() if n > 1]

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        if not handler.path.endswith("/embeddings"):
            return _send(handler, 404, {"error": {"message": f"no route {handler.path}"}})
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        with self.lock:
            self.requests += 1
            self.batches.append(list(texts))
            self.bodies.append(body)
            self.auth.append(handler.headers.get("Authorization", ""))
            fault = self.queued.popleft() if self.queued else next(
                (m.group(1) for t in texts if (m := _TEXT_FAULT.search(t))), "ok")
            self.served[fault] += 1
        if serve_fault(handler, fault, self.retry_after, self.hang_s):
            return
        dim = int(body.get("dimensions") or self.dim)
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, dim).tolist()}
                for i, t in enumerate(texts)]
        if fault == "short":
            data = data[:-1]
        data.reverse()   # the API does not promise order: the client must sort by index
        if fault in ("ok", "slow"):   # counted before it is sent, as the chat endpoint does
            with self.lock:
                self.answered.update(texts)
        _send(handler, 200, {"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}})
