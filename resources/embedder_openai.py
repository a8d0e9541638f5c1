"""A provider's embeddings: any OpenAI-compatible /v1/embeddings endpoint, every vector cached before use.

`OpenAIEmbedderResource` is an `EmbedderResource` (so every asset takes it as it takes the local model) whose
`encode` asks the endpoint instead of running a model:

1. Each text is looked up in `<home>/embedding_cache.sqlite` by (model key, sha256 of the text); only texts
   not found are sent, each distinct text once.
2. They go in batches of `batch_size` (one request each), at most `max_concurrency` requests in flight.
3. Timeouts, dropped connections, 408/409/429/5xx and a 200 that is not JSON (a gateway's error page) are
   retried with exponential backoff; a 429's Retry-After is waited for, up to `max_backoff_s` (the policy
   is the chat client's, resources/llm_openai.py). Anything else (400, 401, 404) fails at once.
4. Each answered batch is checked (one finite, non-zero vector per text, one length for all) and committed to
   the cache before any vector is used, so a run that fails half way keeps what it paid for and a rerun pays
   for no vector twice.
5. The vectors come back L2-normalised, float32, in the order of the texts.

The key never reaches error text: error bodies pass through resources/scrub.py on arrival, and our own
messages are scrubbed too. The model cannot be fine-tuned here: `frozen_reason()` says so, and the training
assets skip with it (the query adapter is the lever over frozen vectors). A provider's tokenizer is not
available locally, so the chunker counts tokens with the bundled MiniLM's word pieces (`tokenizer_path`).
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import numpy as np
from pydantic import Field, PrivateAttr

from resources.embedder import EmbedderResource, bundled_minilm_path
from resources.embedding_cache import EmbeddingCache, text_hash

# What to change, by the status of an error that is not worth a retry
_ADVICE = {400: "the endpoint refused the input: check that FLYWHEEL_EMBED_MODEL names an embeddings model and that "
                "no text is longer than it takes (ChunkingConfig.max_tokens)",
           401: "the key was refused: check FLYWHEEL_EMBED_API_KEY",
           403: "the key may not use this model: check FLYWHEEL_EMBED_API_KEY and FLYWHEEL_EMBED_MODEL",
           404: "nothing answers there: FLYWHEEL_EMBED_BASE_URL should end in /v1 (e.g. https://api.openai.com/v1), "
                "and FLYWHEEL_EMBED_MODEL must be served by it"}


class EmbeddingEndpointError(RuntimeError):
    """The embeddings endpoint failed a batch for good (after the retries, or at once for a client error)."""


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32; a row that is zero or not finite is an error (it ranks nothing)."""
    m = np.asarray(matrix, dtype="float32")
    norms = np.linalg.norm(m, axis=1, keepdims=True) if m.size else np.ones((len(m), 1), dtype="float32")
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        bad = int(np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))[0])
        raise ValueError(f"vector {bad} is zero or not finite: it cannot be normalised")
    return (m / norms).astype("float32")


def batch_vectors(data: list[Any], n_texts: int) -> list[np.ndarray]:
    """The vectors of one /v1/embeddings answer (`data`: items with `index` and `embedding`) in input order,
    checked: one per text, the same length for all, finite and non-zero."""
    if len(data) != n_texts:
        raise ValueError(f"the endpoint answered {len(data)} vectors for {n_texts} texts")
    ordered = sorted(data, key=lambda item: item.index)
    if [item.index for item in ordered] != list(range(n_texts)):
        raise ValueError(f"the answer's indices are {[item.index for item in ordered][:10]}..., not 0..{n_texts - 1}")
    vectors = [np.asarray(item.embedding, dtype="float32") for item in ordered]
    dims = {len(v) for v in vectors}
    if len(dims) != 1 or 0 in dims:
        raise ValueError(f"the answer's vectors have lengths {sorted(dims)}: expected one non-zero length")
    l2_normalise(np.stack(vectors))   # raises on a zero or non-finite vector, before anything is cached
    return vectors


class OpenAIEmbedderResource(EmbedderResource):
    """A provider's embeddings from any OpenAI-compatible /v1/embeddings endpoint, cached under the home."""

    base_url: str = Field(description="e.g. https://api.openai.com/v1 (FLYWHEEL_EMBED_BASE_URL)")
    model: str = Field(description="the embeddings model, e.g. text-embedding-3-small (FLYWHEEL_EMBED_MODEL)")
    api_key: str = "EMPTY"            # pass dg.EnvVar("FLYWHEEL_EMBED_API_KEY"); "EMPTY" for a keyless local server
    cache_path: str = Field(description="the sqlite cache of every vector paid for: <home>/embedding_cache.sqlite")
    dimensions: int = 0               # text-embedding-3 and later can shorten their vectors; 0 = the model's own
    batch_size: int = 128             # texts per request: 128 chunks of <= 256 word pieces is ~35k tokens, well under
    #                                   OpenAI's 2,048 inputs / 300k tokens a request
    max_concurrency: int = 4          # requests in flight at once
    max_retries: int = 5              # retries after the first try, on timeouts, 429, 5xx (as the chat client)
    timeout_s: float = 60.0
    retry_backoff_s: float = 1.0      # the first wait; doubles per retry, up to max_backoff_s
    max_backoff_s: float = 30.0       # the longest wait between two tries, a 429's Retry-After included

    _client: Any = PrivateAttr(default=None)
    _store: Any = PrivateAttr(default=None)
    _counts: Counter = PrivateAttr(default_factory=Counter)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    # -- what the assets ask of an embedder
    def base_model_path(self) -> str:
        """Not a path: the key of this model's vectors in LanceDB and in the cache, "openai:<model>"."""
        return f"openai:{self.model}" + (f"@{self.dimensions}" if self.dimensions else "")

    def inference_precision(self) -> str:
        return "fp32"   # the provider computes the vectors: nothing local to choose

    def frozen_reason(self) -> str:
        return (f"the embedder is a provider's model ({self.model}, an OpenAI-compatible endpoint): its weights "
                "cannot be fine-tuned here; the query adapter (query_adapter) is the lever over its frozen vectors")

    def tokenizer_path(self) -> str:
        return bundled_minilm_path()

    def tokenizer_note(self) -> str:
        return (f"the bundled all-MiniLM-L6-v2 word pieces: {self.model}'s own tokenizer is not available locally, "
                "so max_tokens counts MiniLM tokens, not the provider's")

    def usage(self) -> dict[str, int]:
        with self._lock:
            return {k: int(self._counts[k]) for k in ("embed_requests", "embed_texts_sent", "embed_cache_hits")}

    def load(self, path: str | None = None):
        raise ValueError(f"{self.base_model_path()} is a provider's model: it has no local weights to load or train "
                         "(use the sentence-transformers EmbedderResource, flywheel run without --embed-backend openai)")

    def unload(self, path: str) -> None:
        pass

    def encode(self, texts: list[str], path: str | None = None, *, show_progress: bool = False) -> np.ndarray:
        """L2-normalised float32 embeddings, shape (len(texts), dim): cached ones read, the rest paid for once."""
        if path not in (None, self.base_model_path()):
            raise ValueError(f"encode(path={path!r}) with a provider's embedder: only the provider's own model "
                             f"({self.base_model_path()}) can encode; a fine-tuned local model needs EmbedderResource")
        key, cache = self.base_model_path(), self._cache()
        hashes = [text_hash(t) for t in texts]
        found = cache.get_many(key, hashes)
        todo = {h: t for h, t in zip(hashes, texts) if h not in found}   # each distinct missing text once
        with self._lock:
            self._counts["embed_cache_hits"] += len(set(hashes)) - len(todo)
        if todo:
            found.update(self._fetch(list(todo.items()), key, cache))
        if not texts:
            return np.zeros((0, cache.dim(key) or 0), dtype="float32")
        return l2_normalise(np.stack([found[h] for h in hashes]))

    # -- the endpoint
    def _cache(self) -> EmbeddingCache:
        if self._store is None:
            self._store = EmbeddingCache(self.cache_path)
        return self._store

    def _secrets(self) -> tuple[str, ...]:
        return (self.api_key,)

    def _scrub(self, text: str) -> str:
        from resources.scrub import scrub_secrets
        from resources.tracking import without_credentials

        return scrub_secrets(without_credentials(text), self._secrets())

    def get_client(self) -> Any:
        if self._client is None:
            import openai

            from resources.llm_openai import require_json
            from resources.scrub import ScrubbingHttpClient

            self._client = openai.OpenAI(   # retries are ours (tenacity), so the client makes none of its own
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=0,
                http_client=ScrubbingHttpClient(self._secrets(), event_hooks={"response": [require_json]}))
        return self._client

    def _request(self, texts: list[str]) -> list[np.ndarray]:
        """One batch's vectors, retried on transient errors; EmbeddingEndpointError (scrubbed) when it fails."""
        from resources.llm_openai import transient_retrying

        client = self.get_client()
        extra = {"dimensions": self.dimensions} if self.dimensions else {}
        attempts = 0

        def once() -> list[np.ndarray]:
            nonlocal attempts
            attempts += 1
            with self._lock:
                self._counts["embed_requests"] += 1
            answer = client.embeddings.create(model=self.model, input=[t or " " for t in texts],  # "" is refused
                                              encoding_format="float", **extra)
            return batch_vectors(list(answer.data), len(texts))

        try:
            return transient_retrying(self.max_retries, self.retry_backoff_s, self.max_backoff_s)(once)
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            advice = _ADVICE.get(status, "transient errors outlasted the retries: raise max_retries or max_backoff_s, "
                                         "or try later" if attempts > 1 else "")
            raise EmbeddingEndpointError(self._scrub(
                f"embeddings endpoint {self.base_url} (model {self.model}) failed a batch of {len(texts)} texts after "
                f"{attempts} {'try' if attempts == 1 else 'tries'}: {type(exc).__name__}: {exc}"
                + (f". {advice}" if advice else ""))) from None

    def _fetch(self, items: list[tuple[str, str]], key: str, cache: EmbeddingCache) -> dict[str, np.ndarray]:
        """Vectors of (hash, text) items, in batches, at most max_concurrency at once; each batch cached as it
        arrives. When a batch fails the others still finish (and are cached); then the first error is raised."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        batches = [items[i:i + max(1, self.batch_size)] for i in range(0, len(items), max(1, self.batch_size))]
        out: dict[str, np.ndarray] = {}
        errors: list[Exception] = []
        known = cache.dim(key)   # every vector of one model key has one length
        self.get_client()   # built once, before the threads start
        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            futures = {pool.submit(self._request, [t for _, t in batch]): batch for batch in batches}
            for future in as_completed(futures):
                batch = futures[future]
                try:
                    vectors = future.result()
                except EmbeddingEndpointError as exc:
                    errors.append(exc)
                    continue
                if known is not None and len(vectors[0]) != known:
                    errors.append(EmbeddingEndpointError(
                        f"{key} answered vectors of length {len(vectors[0])}, but its earlier ones (cached) have "
                        f"{known}: set `dimensions`, or use a new home for a new model"))
                    continue
                known = len(vectors[0])
                cache.put_many(key, [(h, v) for (h, _), v in zip(batch, vectors)])   # committed before any use
                out.update({h: v for (h, _), v in zip(batch, vectors)})
                with self._lock:
                    self._counts["embed_texts_sent"] += len(batch)
        if errors:
            raise EmbeddingEndpointError(f"{errors[0]} ({len(errors)} of {len(batches)} batches failed; the "
                                         f"{len(out)} vectors received are cached, so a rerun pays only for the rest)")
        return out
