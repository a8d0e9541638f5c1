"""A sqlite cache of a provider's embeddings, so that a rerun or a crash never pays for the same vector twice.

One table, one row per (model, text):

    model TEXT        the embedder's model key (OpenAIEmbedderResource.base_model_path(): "openai:<model>")
    text_hash TEXT    sha256 of the exact text sent
    dim INTEGER       the vector's length
    vector BLOB       the vector as the provider returned it, float32 (normalised on the way out, not here)
    created_at REAL   unix seconds
    PRIMARY KEY (model, text_hash)

The resource writes (and commits) each batch's vectors as soon as the batch is answered, before any of them
is used, so a run that dies half way keeps what it paid for. One connection is shared by the threads of a
run behind a lock; WAL mode lets another process (the multiprocess executor, `flywheel ui`) read meanwhile.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (model, text_hash)
)
"""
_MAX_VARS = 500   # bound parameters per query: sqlite's old default limit is 999


def text_hash(text: str) -> str:
    """sha256 hex digest of the exact text (whitespace included: the provider sees it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Vectors by (model, text hash), under `path` (a sqlite file, created with its folder)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()

    def get_many(self, model: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached vectors of `hashes` for `model` (missing ones are absent from the dict)."""
        wanted = list(dict.fromkeys(hashes))
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(wanted), _MAX_VARS):
                part = wanted[i:i + _MAX_VARS]
                rows = self._conn.execute(
                    f"SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN "
                    f"({','.join('?' * len(part))})", [model, *part]).fetchall()
                out.update({h: np.frombuffer(blob, dtype="float32") for h, blob in rows})
        return out

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store (text hash, vector) pairs for `model` and commit; returns how many were written."""
        now = time.time()
        rows = [(model, h, int(v.shape[0]), np.asarray(v, dtype="float32").tobytes(), now) for h, v in items]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)
            self._conn.commit()
        return len(rows)

    def dim(self, model: str) -> int | None:
        """The length of `model`'s cached vectors, or None when none is cached."""
        with self._lock:
            row = self._conn.execute("SELECT dim FROM embeddings WHERE model = ? LIMIT 1", (model,)).fetchone()
        return int(row[0]) if row else None

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            return int(self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
