"""LanceDB: one table per encoder, holding every chunk's text, ids and vector, with a native BM25 index.

Three first-stage retrievers read the same table: BM25 (LanceDB's full-text index), dense (cosine over
the normalised vectors) and hybrid (reciprocal rank fusion of the two, RRF k=60 as in Cormack et al. 2009).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    import numpy as np

RETRIEVERS = ("bm25", "dense", "hybrid")
_FTS_UNSAFE = re.compile(r"[^\w\s]", re.UNICODE)


def fts_query_text(query: str, max_terms: int = 64) -> str:
    """Plain terms only: quotes, colons and operators in a user's query must not reach the FTS parser."""
    terms = _FTS_UNSAFE.sub(" ", query).split()
    return " ".join(terms[:max_terms])


def rrf_fuse(rankings: list[list[str]], k: int = 60, limit: int | None = None) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: score(d) = sum over lists of 1 / (k + rank), rank starting at 1."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return fused[:limit] if limit else fused


@dataclass
class ChunkIndex:
    """Search over one LanceDB chunk table. Results are (chunk_id, score) lists, best first."""

    table: object
    name: str

    def count(self) -> int:
        return self.table.count_rows()

    def vectors(self) -> tuple[list[str], "np.ndarray"]:
        """Every chunk id and its stored (normalised) vector, for exact scoring in memory."""
        import numpy as np

        tbl = self.table.to_arrow().select(["chunk_id", "vector"])
        ids = tbl.column("chunk_id").to_pylist()
        flat = tbl.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return ids, np.asarray(flat, dtype="float32").reshape(len(ids), -1)

    def bm25(self, query: str, k: int = 100) -> list[tuple[str, float]]:
        text = fts_query_text(query)
        if not text:
            return []
        rows = self.table.search(text, query_type="fts").limit(k).select(["chunk_id"]).to_list()
        return [(r["chunk_id"], float(r["_score"])) for r in rows]

    def dense(self, vector, k: int = 100) -> list[tuple[str, float]]:
        rows = (
            self.table.search(vector, query_type="vector", vector_column_name="vector")
            .metric("cosine")
            .limit(k)
            .select(["chunk_id"])
            .to_list()
        )
        return [(r["chunk_id"], 1.0 - float(r["_distance"])) for r in rows]

    def hybrid(self, query: str, vector, k: int = 100, depth: int | None = None) -> list[tuple[str, float]]:
        depth = depth or max(k, 100)
        lexical = [c for c, _ in self.bm25(query, depth)]
        semantic = [c for c, _ in self.dense(vector, depth)]
        return rrf_fuse([lexical, semantic], limit=k)

    def search(self, retriever: str, query: str, vector=None, k: int = 100) -> list[tuple[str, float]]:
        if retriever == "bm25":
            return self.bm25(query, k)
        if retriever == "dense":
            return self.dense(vector, k)
        if retriever == "hybrid":
            return self.hybrid(query, vector, k)
        raise ValueError(f"unknown retriever {retriever!r}; expected one of {RETRIEVERS}")


def _sql_in(column: str, values: list[str]) -> str:
    quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


class LanceDBResource(dg.ConfigurableResource):
    """Where the indices live: a local folder by default, or an object-store URI (s3://bucket/prefix).

    `storage_options` go to LanceDB's object-store client as they are: for S3 or an S3-compatible server,
    e.g. {"aws_endpoint": "http://minio:9000", "aws_region": "us-east-1", "allow_http": "true",
    "aws_access_key_id": ..., "aws_secret_access_key": ...} (keys as dg.EnvVar in a deployment).
    """

    uri: str
    storage_options: dict[str, str] = {}

    def connect(self):
        import lancedb

        return lancedb.connect(self.uri, storage_options=self.storage_options or None)

    def stored_vectors(self, name: str, model: str) -> dict[str, "np.ndarray"]:
        """chunk_id -> vector already in table `name` if it was embedded by `model`: unchanged chunks are not
        embedded again. Empty when the table is absent or holds another model's vectors."""
        db = self.connect()
        if name not in db.table_names():
            return {}
        tbl = db.open_table(name)
        if "model" not in tbl.schema.names:
            return {}
        data = tbl.to_arrow().select(["chunk_id", "model", "vector"])
        if set(data.column("model").unique().to_pylist()) != {model}:
            return {}
        ids = data.column("chunk_id").to_pylist()
        mat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(len(ids), -1)
        return dict(zip(ids, mat))

    def index_vectors(self, index: dict, chunk_ids: list[str]) -> tuple["np.ndarray | None", list[str]]:
        """(vectors in `chunk_ids` order, []) from the table an index asset wrote (its output dict: `table`, and
        `vector_key`, or `model` in older outputs), or (None, the chunk ids it lacks) when it has not got them
        all: no table, another model or precision, chunks it has not seen."""
        import numpy as np

        if not index or index.get("enabled") is False or not index.get("table"):
            return None, list(chunk_ids)
        stored = self.stored_vectors(index["table"], index.get("vector_key") or index.get("model", ""))
        missing = [c for c in chunk_ids if c not in stored]
        if missing or not chunk_ids:
            return None, missing
        return np.asarray([stored[c] for c in chunk_ids], dtype="float32"), []

    def write_chunk_table(self, name: str, chunks, vectors, model: str = "") -> ChunkIndex:
        """(Re)write `name` from a chunks DataFrame and its vectors, then rebuild the full-text index.

        LanceDB does not update an FTS index on `add`, so the index is rebuilt after every write.
        """
        from lancedb.index import FTS

        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors for table {name!r}")
        table = self._arrow_rows(chunks, vectors, model)
        tbl = self.connect().create_table(name, data=table, mode="overwrite")
        tbl.create_index("text", config=FTS(stem=True, remove_stop_words=True), replace=True)
        return ChunkIndex(tbl, name)

    def sync_chunk_table(self, name: str, chunks, vectors, model: str = "",
                         delete_batch: int = 500) -> tuple[ChunkIndex, dict[str, int | str]]:
        """Make table `name` hold exactly `chunks` (with `vectors`), touching only the rows that differ.

        When the table exists and holds this model's vectors, rows whose chunk is gone (a deleted or edited
        document) are deleted, rows for new chunks are added, and `optimize()` folds the new rows into the
        full-text index (and compacts the files), so a nightly run on object storage writes the change, not
        the table. Otherwise (first run, another model, an old schema) the table is rewritten. Returns the
        index and {"mode", "rows_added", "rows_deleted"}.
        """
        from lancedb.index import FTS

        db = self.connect()
        if name in db.table_names():
            tbl = db.open_table(name)
            if {"model", "doc_id", "chunk_id"} <= set(tbl.schema.names):
                data = tbl.to_arrow().select(["chunk_id", "doc_id", "model"])
                models = set(data.column("model").unique().to_pylist())
                if models <= {model}:
                    stored = dict(zip(data.column("chunk_id").to_pylist(), data.column("doc_id").to_pylist()))
                    wanted = dict(zip(chunks["chunk_id"].astype(str), chunks["doc_id"].astype(str)))
                    stale = [c for c, d in stored.items() if wanted.get(c) != d]   # gone, or moved to another doc
                    for start in range(0, len(stale), delete_batch):
                        tbl.delete(_sql_in("chunk_id", stale[start:start + delete_batch]))
                    keep = set(stored) - set(stale)
                    mask = ~chunks["chunk_id"].astype(str).isin(keep).to_numpy()
                    if mask.any():
                        tbl.add(self._arrow_rows(chunks[mask], vectors[mask], model))
                    if stale or mask.any():
                        tbl.optimize()   # indexes the added rows in the FTS index and drops deleted ones
                    if not any(i.index_type == "FTS" for i in tbl.list_indices()):
                        tbl.create_index("text", config=FTS(stem=True, remove_stop_words=True), replace=True)
                    return ChunkIndex(tbl, name), {"mode": "incremental", "rows_added": int(mask.sum()),
                                                   "rows_deleted": len(stale)}
        index = self.write_chunk_table(name, chunks, vectors, model=model)
        return index, {"mode": "rewrite", "rows_added": len(chunks), "rows_deleted": 0}

    @staticmethod
    def _arrow_rows(chunks, vectors, model: str):
        import pyarrow as pa

        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        dim = int(vectors.shape[1])
        return pa.table(
            {
                "chunk_id": pa.array(chunks["chunk_id"].astype(str).tolist()),
                "doc_id": pa.array(chunks["doc_id"].astype(str).tolist()),
                "text": pa.array(chunks["text"].astype(str).tolist()),
                "model": pa.array([model] * len(chunks), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
            }
        )

    def open(self, name: str) -> ChunkIndex:
        db = self.connect()
        if name not in db.table_names():
            raise ValueError(f"LanceDB table {name!r} not found under {self.uri}; materialize the index asset first")
        return ChunkIndex(db.open_table(name), name)
