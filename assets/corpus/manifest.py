"""What changed in the corpus since the last run, in chunks and documents.

The chunks asset keeps a manifest of the chunk ids it produced last time (`<home>/state/chunks_manifest.parquet`:
chunk_id, doc_id). Chunk ids are hashes of the chunk text, so comparing two manifests says exactly which
chunks are new (a new or edited document) and which are gone (a deleted or edited document). The counts go
to the chunks asset's metadata and to `reports/run_stats.json`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

MANIFEST_COLUMNS = ["chunk_id", "doc_id"]


def read_manifest(path: Path) -> pd.DataFrame | None:
    """The previous run's (chunk_id, doc_id) rows, or None on a first run."""
    return pd.read_parquet(path, columns=MANIFEST_COLUMNS) if path.exists() else None


def write_manifest(path: Path, chunks: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    chunks[MANIFEST_COLUMNS].astype(str).to_parquet(tmp, index=False)
    tmp.replace(path)   # a crash mid-write leaves the old manifest, never half a new one


def chunk_changes(previous: pd.DataFrame | None, current: pd.DataFrame) -> dict[str, int]:
    """Counts of new / removed / unchanged chunks and new / removed / changed documents since `previous`.

    A first run (no previous manifest) counts every chunk and document as new.
    """
    prev = previous if previous is not None else pd.DataFrame(columns=MANIFEST_COLUMNS)
    now_ids, prev_ids = set(current["chunk_id"].astype(str)), set(prev["chunk_id"].astype(str))
    new_ids, gone_ids = now_ids - prev_ids, prev_ids - now_ids
    now_docs, prev_docs = set(current["doc_id"].astype(str)), set(prev["doc_id"].astype(str))
    touched = set(current.loc[current["chunk_id"].astype(str).isin(new_ids), "doc_id"].astype(str))
    touched |= set(prev.loc[prev["chunk_id"].astype(str).isin(gone_ids), "doc_id"].astype(str))
    return {
        "chunks_total": len(now_ids),
        "chunks_new": len(new_ids),
        "chunks_removed": len(gone_ids),
        "chunks_unchanged": len(now_ids & prev_ids),
        "documents_new": len(now_docs - prev_docs),
        "documents_removed": len(prev_docs - now_docs),
        "documents_changed": len(touched & now_docs & prev_docs),
    }
