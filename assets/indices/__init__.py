"""Indices: every chunk embedded and stored in LanceDB with a BM25 full-text index.

Incremental by content: a chunk's id is the hash of its text, so a chunk already in the table (same id,
same model) keeps its vector and is not embedded again; the table then gets only the difference (rows of
deleted or edited documents removed, new rows added, the full-text index optimized to include them).

`baseline_index` uses the base bi-encoder; `finetuned_index` the fine-tuned one. Each table serves three
first-stage retrievers: BM25, dense, and their reciprocal-rank-fusion hybrid (resources/lance.py).
`expanded_index` (expansion.py) is the base table with each chunk's train/validation synthetic queries appended
to its full-text field (doc2query), its vectors reused. `summary_index` (summaries.py) is the base table plus one
LLM-written summary row per document (`document_summaries`), off by default.
"""

import time

import dagster as dg
import numpy as np
import pandas as pd

from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource

BASELINE_TABLE = "chunks_base"
FINETUNED_TABLE = "chunks_finetuned"
DISTILLED_TABLE = "chunks_distilled"


def embed_incrementally(chunks: pd.DataFrame, stored: dict, encode) -> tuple[np.ndarray, int]:
    """Vectors for every chunk, reusing `stored` ones (same chunk id = same text, same model); returns (vectors,
    number newly embedded)."""
    missing = [t for c, t in zip(chunks["chunk_id"], chunks["text"]) if c not in stored]
    fresh = iter(encode(missing)) if missing else iter(())
    rows = [stored[c] if c in stored else next(fresh) for c in chunks["chunk_id"]]
    dim = len(rows[0]) if rows else 0
    return np.asarray(rows, dtype="float32").reshape(len(rows), dim), len(missing)


def build_index(context, chunks: pd.DataFrame, embedder: EmbedderResource, lancedb: LanceDBResource,
                table: str, model_path: str | None, reuse_from: tuple[str, ...] = ()) -> dg.Output[dict]:
    """Sync `table` to `chunks` with `model_path`'s vectors (None: the base model), embedding only chunks that
    neither `table` nor the `reuse_from` tables hold with the same model."""
    model = model_path or embedder.base_model_path()
    key = embedder.vector_key(model_path)   # the model, and its precision when not fp32
    t0, paid = time.perf_counter(), embedder.usage()
    own = lancedb.stored_vectors(table, key)
    stored = {c: v for source in reuse_from for c, v in lancedb.stored_vectors(source, key).items()} | own
    vectors, n_new = embed_incrementally(chunks, stored, lambda texts: embedder.encode(texts, model_path))
    embed_s = time.perf_counter() - t0
    paid = {k: v - paid.get(k, 0) for k, v in embedder.usage().items()}   # a provider's requests and cache hits
    index, write = lancedb.sync_chunk_table(table, chunks, vectors, model=key)
    sample = chunks["text"].iloc[0] if len(chunks) else ""
    probe = index.bm25(sample, 1) if sample else []
    info = {"table": table, "uri": lancedb.uri, "model": model, "vector_key": key, "n_rows": index.count(),
            "dim": int(vectors.shape[1]) if len(vectors) else 0}
    context.log.info(f"{table}: embedded {n_new} new chunks, reused {len(chunks) - n_new}, in {embed_s:.1f}s")
    return dg.Output(info, metadata={
        **info,
        "chunks_embedded": n_new,
        "chunks_reused": len(chunks) - n_new,
        "chunks_removed": len(set(own) - set(chunks["chunk_id"])),
        "rows_added": write["rows_added"],
        "rows_deleted": write["rows_deleted"],
        "write_mode": write["mode"],
        "embed_seconds": round(embed_s, 2),
        "fts_self_probe_ok": bool(probe) and probe[0][0] == chunks["chunk_id"].iloc[0],
        "device": embedder.resolved_device(),
        **paid,
    })


@dg.asset(group_name="indices", compute_kind="lancedb", pool="gpu", op_tags=compute_tags("gpu"))
def baseline_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, embedder: EmbedderResource,
                   lancedb: LanceDBResource) -> dg.Output[dict]:
    """LanceDB table of every chunk with base-model vectors and a BM25 index."""
    return build_index(context, chunks, embedder, lancedb, BASELINE_TABLE, None)


@dg.asset(group_name="indices", compute_kind="lancedb", pool="gpu", op_tags=compute_tags("gpu"))
def finetuned_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, finetuned_biencoder: dict,
                    embedder: EmbedderResource, lancedb: LanceDBResource) -> dg.Output[dict]:
    """LanceDB table of every chunk with fine-tuned-model vectors and a BM25 index (none when no model was trained)."""
    if finetuned_biencoder.get("enabled") is False:   # a provider's embeddings: nothing was fine-tuned
        return dg.Output({"enabled": False, "skipped": finetuned_biencoder["skipped"]},
                         metadata={"skipped": finetuned_biencoder["skipped"]})
    return build_index(context, chunks, embedder, lancedb, FINETUNED_TABLE, finetuned_biencoder["model_path"])


@dg.asset(group_name="indices", compute_kind="lancedb", pool="gpu", op_tags=compute_tags("gpu"))
def distilled_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, distilled_biencoder: dict,
                    embedder: EmbedderResource, lancedb: LanceDBResource) -> dg.Output[dict]:
    """LanceDB table of every chunk with the distilled model's vectors (empty when distillation is off)."""
    if not distilled_biencoder.get("enabled"):
        why = distilled_biencoder.get("skipped", "distillation is off")
        return dg.Output({"enabled": False, "skipped": why}, metadata={"skipped": why})
    out = build_index(context, chunks, embedder, lancedb, DISTILLED_TABLE, distilled_biencoder["model_path"])
    return dg.Output({**out.value, "enabled": True}, metadata=out.metadata)

from assets.indices.expansion import expanded_index, no_test_query_in_expansion  # noqa: E402,F401  (doc2query)
from assets.indices.summaries import document_summaries, summary_index  # noqa: E402,F401  (queries -> summaries)
