"""Indices: every chunk embedded and stored in LanceDB with a BM25 full-text index.

`baseline_index` uses the base bi-encoder; `finetuned_index` the fine-tuned one. Each table serves three
first-stage retrievers: BM25, dense, and their reciprocal-rank-fusion hybrid (resources/lance.py).
"""

import time

import dagster as dg
import pandas as pd

from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource

BASELINE_TABLE = "chunks_base"
FINETUNED_TABLE = "chunks_finetuned"


def _build(context, chunks: pd.DataFrame, embedder: EmbedderResource, lancedb: LanceDBResource,
           table: str, model_path: str | None) -> dg.Output[dict]:
    t0 = time.perf_counter()
    vectors = embedder.encode(chunks["text"].tolist(), model_path, show_progress=False)
    embed_s = time.perf_counter() - t0
    index = lancedb.write_chunk_table(table, chunks, vectors)
    sample = chunks["text"].iloc[0] if len(chunks) else ""
    probe = index.bm25(sample, 1) if sample else []
    info = {"table": table, "uri": lancedb.uri, "model": model_path or embedder.base_model_path(),
            "n_rows": index.count(), "dim": int(vectors.shape[1]) if len(vectors) else 0}
    context.log.info(f"{table}: embedded {len(chunks)} chunks in {embed_s:.1f}s")
    return dg.Output(info, metadata={
        **{k: v for k, v in info.items()},
        "chunks_embedded": len(chunks),
        "embed_seconds": round(embed_s, 2),
        "chunks_per_second": round(len(chunks) / embed_s, 1) if embed_s else 0.0,
        "fts_self_probe_ok": bool(probe) and probe[0][0] == chunks["chunk_id"].iloc[0],
        "device": embedder.resolved_device(),
    })


@dg.asset(group_name="indices", compute_kind="lancedb", pool="gpu", op_tags={"flywheel/compute": "gpu"})
def baseline_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, embedder: EmbedderResource,
                   lancedb: LanceDBResource) -> dg.Output[dict]:
    """LanceDB table of every chunk with base-model vectors and a BM25 index."""
    return _build(context, chunks, embedder, lancedb, BASELINE_TABLE, None)


@dg.asset(group_name="indices", compute_kind="lancedb", pool="gpu", op_tags={"flywheel/compute": "gpu"})
def finetuned_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, finetuned_biencoder: dict,
                    embedder: EmbedderResource, lancedb: LanceDBResource) -> dg.Output[dict]:
    """LanceDB table of every chunk with fine-tuned-model vectors and a BM25 index."""
    return _build(context, chunks, embedder, lancedb, FINETUNED_TABLE, finetuned_biencoder["model_path"])
