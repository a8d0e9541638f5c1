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


class LanceDBResource(dg.ConfigurableResource):
    """Where the indices live: a local folder by default, or an object-store URI (s3://bucket/prefix)."""

    uri: str

    def connect(self):
        import lancedb

        return lancedb.connect(self.uri)

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

    def write_chunk_table(self, name: str, chunks, vectors, model: str = "") -> ChunkIndex:
        """(Re)write `name` from a chunks DataFrame and its vectors, then rebuild the full-text index.

        LanceDB does not update an FTS index on `add`, so the index is rebuilt after every write.
        """
        import pyarrow as pa
        from lancedb.index import FTS

        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors for table {name!r}")
        dim = int(vectors.shape[1])
        table = pa.table(
            {
                "chunk_id": pa.array(chunks["chunk_id"].astype(str).tolist()),
                "doc_id": pa.array(chunks["doc_id"].astype(str).tolist()),
                "text": pa.array(chunks["text"].astype(str).tolist()),
                "model": pa.array([model] * len(chunks), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
            }
        )
        tbl = self.connect().create_table(name, data=table, mode="overwrite")
        tbl.create_index("text", config=FTS(stem=True, remove_stop_words=True), replace=True)
        return ChunkIndex(tbl, name)

    def open(self, name: str) -> ChunkIndex:
        db = self.connect()
        if name not in db.table_names():
            raise ValueError(f"LanceDB table {name!r} not found under {self.uri}; materialize the index asset first")
        return ChunkIndex(db.open_table(name), name)
