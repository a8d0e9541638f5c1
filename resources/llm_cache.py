"""A sqlite cache of raw LLM responses, so that a crash or a rerun never pays for the same call twice.

One table, one row per call:

    key TEXT PRIMARY KEY   sha256 of everything the response depends on (see `cache_key`)
    kind TEXT              "query" or "judge"
    model TEXT             the model id the response came from
    prompt_version TEXT    the prompt family's version (resources/prompts.py)
    response TEXT          the raw response text, exactly as the backend returned it
    created_at REAL        unix seconds
    attempts INTEGER       how many answers this key has been paid for (1 unless earlier ones did not parse)

The resources write (and commit) each raw response as soon as it arrives, before it is parsed or used;
parsing happens on the way out, so a better parser needs no new calls. An answer that does not parse is
kept too, but it does not count as done: later runs ask again until `attempts` reaches the resource's
`parse_attempts` (resources/llm.py), so a bad spell of the endpoint does not stay in a home for good.
A cache written before `attempts` existed gets the column on open (its rows count as one attempt).

One connection is shared by the threads of a run behind a lock; sqlite's WAL mode lets other processes
read while a run writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_responses (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
)
"""
_MAX_VARS = 500  # sqlite's default limit on bound parameters is 999 (older builds): stay well under it


def text_hash(text: str) -> str:
    """sha256 hex digest of a text (a passage, as it appears in a prompt)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(kind: str, prompt_version: str, model_id: str, *parts: object) -> str:
    """sha256 of the kind, the prompt version, the model and the call's own parts.

    For a query call the parts are (chunk_id, passage hash, style, index); for a judge call
    (chunk_id, passage hash, query). The parts are JSON-encoded as a list, so ("a b", "c") and
    ("a", "b c") cannot collide.
    """
    payload = json.dumps([kind, prompt_version, model_id, *[str(p) for p in parts]], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class LLMCache:
    """Raw responses by key. `LLMCache("")` is a cache that stores nothing (for tests)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            with self._lock:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute(_SCHEMA)
                columns = {row[1] for row in self._conn.execute("PRAGMA table_info(llm_responses)")}
                if "attempts" not in columns:  # a cache from before attempts were counted
                    try:
                        self._conn.execute("ALTER TABLE llm_responses ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise
                self._conn.commit()

    @property
    def enabled(self) -> bool:
        return self._conn is not None

    def get_entries(self, keys: Iterable[str]) -> dict[str, tuple[str, int]]:
        """The cached rows among `keys`, as {key: (response, attempts)}; missing keys are absent."""
        if self._conn is None:
            return {}
        unique = list(dict.fromkeys(keys))
        found: dict[str, tuple[str, int]] = {}
        with self._lock:
            for start in range(0, len(unique), _MAX_VARS):
                batch = unique[start : start + _MAX_VARS]
                marks = ",".join("?" * len(batch))
                rows = self._conn.execute(
                    f"SELECT key, response, attempts FROM llm_responses WHERE key IN ({marks})", batch
                ).fetchall()
                found.update((key, (response, int(attempts))) for key, response, attempts in rows)
        return found

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The cached responses among `keys`, as {key: response}; missing keys are absent."""
        return {key: response for key, (response, _) in self.get_entries(keys).items()}

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, response: str, *, kind: str, model: str, prompt_version: str, attempts: int = 1) -> None:
        """Write one response and commit at once (a later crash keeps it). Overwrites an older one; `attempts`
        is how many answers the key has had, this one included."""
        if self._conn is None:
            return
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO llm_responses"
                " (key, kind, model, prompt_version, response, created_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, kind, model, prompt_version, response, time.time(), attempts),
            )
            self._conn.commit()

    def __len__(self) -> int:
        if self._conn is None:
            return 0
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM llm_responses").fetchone()[0]

    def close(self) -> None:
        if self._conn is not None:
            with self._lock:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> LLMCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
