"""A second representation of each document: an LLM-written summary, indexed beside its chunks.

The playbook's "queries -> summaries": a searcher's words often match what a document is *about* better than
any one of its passages. `document_summaries` asks the LLM for a short summary of each document (the text the
prompt holds is cut to `max_passage_chars`, like every prompt); `summary_index` is the base table plus one row
per summary, whose `doc_id` is its document's, so a hit on a summary is a hit on the document. Chunk rows keep
the base table's stored vectors (no chunk is embedded again); only the summaries are embedded, with the base
model. The evaluation gets `bm25_summaries` (vs `bm25`), `dense_summaries` (vs `dense_base`) and
`hybrid_summaries` (vs `hybrid_base`).

What the rows can show: the human query sets judge documents, so a summary row counts for its document there.
The synthetic sets judge chunks, and a summary is no chunk: on them the rows can only lose (a summary that
outranks the positive chunk pushes it down). The human queries are the measure of the gain.

Off by default: one LLM call per document, and on 2 CPU cores the bundled 270M writer's summaries did not pay
for those calls (README, "Summaries"). Each summary is cached by the text it was written from, so a document
that does not change is never summarised twice.
"""

import time

import dagster as dg
import numpy as np
import pandas as pd

from assets.common import preview, progress_logger
from assets.indices.expansion import stored_base_vectors
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.llm import LLMResource, check_failure_share
from resources.llm_cache import text_hash

SUMMARY_TABLE = "chunks_summaries"
SUMMARY_PREFIX = "summary:"   # a summary row's chunk id: the prefix and a hash of (document, summary)


class SummaryConfig(dg.Config):
    enabled: bool = False      # one LLM call per document; off until it pays on your corpus (README, Summaries)
    max_documents: int = 0     # 0 = every document; else the first N in doc-id order (a sample to measure on)
    min_chars: int = 0         # only documents at least this long: a short one is already its own summary


def documents_to_summarise(documents: pd.DataFrame, chunks: pd.DataFrame, max_documents: int = 0,
                           min_chars: int = 0) -> pd.DataFrame:
    """(doc_id, text) of the documents that are chunked (the index's documents) and long enough, in doc-id order,
    at most `max_documents` of them (0 = all). The text is the title and the body, as a reader sees it."""
    docs = documents[documents["doc_id"].isin(set(chunks["doc_id"]))]
    text = (docs["title"].fillna("").str.strip() + "\n" + docs["text"]).str.strip()
    out = pd.DataFrame({"doc_id": docs["doc_id"].astype(str), "text": text})
    out = out[out["text"].str.len() >= min_chars].sort_values("doc_id", kind="stable").reset_index(drop=True)
    return out.head(max_documents) if max_documents > 0 else out


def summary_chunk_id(doc_id: str, summary: str) -> str:
    """A summary row's id: it changes with the summary, so an index keeps no stale vector for an edited one."""
    return SUMMARY_PREFIX + text_hash(f"{doc_id}\n{summary}")[:16]


def summary_rows(summaries: pd.DataFrame) -> pd.DataFrame:
    """The summaries as index rows: (chunk_id, doc_id, text)."""
    return pd.DataFrame({
        "chunk_id": [summary_chunk_id(d, s) for d, s in zip(summaries["doc_id"], summaries["summary"])],
        "doc_id": summaries["doc_id"].astype(str).tolist(), "text": summaries["summary"].astype(str).tolist(),
    }, columns=["chunk_id", "doc_id", "text"])


def with_summary_rows(chunks: pd.DataFrame, summary_index: dict) -> pd.DataFrame:
    """`chunks` (chunk_id, doc_id, text) with the summary table's extra rows, so the evaluation can map a summary
    hit to its document and show its text; `chunks` itself when summaries are off."""
    extra = summary_index.get("summary_rows") if summary_index.get("enabled") else None
    if not extra:
        return chunks
    rows = pd.DataFrame(extra, columns=["chunk_id", "doc_id", "text"])
    return pd.concat([chunks[["chunk_id", "doc_id", "text"]], rows], ignore_index=True)


def summary_systems(summary_index: dict, lancedb: LanceDBResource) -> dict[str, tuple]:
    """The evaluation rows of the summary table (BM25, dense and the RRF hybrid, with the base model's query
    vectors); none when summaries are off."""
    if not summary_index.get("enabled"):
        return {}
    table = lancedb.open(summary_index["table"])
    return {"bm25_summaries": (table, "bm25", None), "dense_summaries": (table, "dense", None),
            "hybrid_summaries": (table, "hybrid", None)}


def summaries_markdown(info: dict | None) -> str:
    if not info or not info.get("enabled"):
        return ""
    return (f"`bm25_summaries` / `dense_summaries` / `hybrid_summaries`: the base table plus {info['n_summaries']} LLM-written document "
            f"summaries (one row each, pointing to its document; {info['llm_calls']} LLM calls this run, "
            f"{info['llm_cache_hits']} from the cache). Human queries judge documents, so a summary hit counts for "
            "its document there; the synthetic sets judge chunks, where a summary can only push a positive down.")


@dg.asset(group_name="indices", compute_kind="llm", pool="llm", op_tags=compute_tags("llm"))
def document_summaries(context: dg.AssetExecutionContext, documents: pd.DataFrame, chunks: pd.DataFrame,
                       llm: LLMResource, config: SummaryConfig) -> dg.Output[pd.DataFrame]:
    """An LLM-written summary of each indexed document (doc_id, summary, model, prompt_version, cached)."""
    columns = ["doc_id", "summary", "model", "prompt_version", "cached"]
    if not config.enabled:
        return dg.Output(pd.DataFrame(columns=columns), metadata={
            "enabled": False, "skipped": "summaries are off (document_summaries.enabled; --summaries turns them on)"})
    todo = documents_to_summarise(documents, chunks, config.max_documents, config.min_chars)
    t0 = time.perf_counter()
    summaries, stats = llm.summarize(list(zip(todo["doc_id"], todo["text"])),
                                     progress=progress_logger(context, "document_summaries"))
    seconds = time.perf_counter() - t0
    llm.release()   # the weights leave memory before the next stage (a no-op for an endpoint)
    check_failure_share(stats, "document_summaries", llm.max_failure_share)
    df = pd.DataFrame([{"doc_id": s.doc_id, "summary": s.text, "model": s.model, "prompt_version": s.prompt_version,
                        "cached": s.cached} for s in summaries], columns=columns)
    lost = len(todo) - len(df)
    context.log.info(f"document_summaries: {len(df)} of {len(todo)} documents summarised with {llm.model_id()} "
                     f"({stats.calls} calls, {stats.cache_hits} cached, {lost} without a usable summary) "
                     f"in {seconds:.0f}s")
    return dg.Output(df, metadata={
        "enabled": True, "n_documents": len(todo), "n_summaries": len(df), "without_summary": lost,
        "llm_calls": stats.calls, "llm_cache_hits": stats.cache_hits, "llm_failures": stats.failures,
        "parse_failures": stats.parse_failures, "llm": llm.model_id(), "seconds": round(seconds, 1),
        "seconds_per_call": round(seconds / stats.calls, 3) if stats.calls else 0.0,
        "mean_words": round(float(df["summary"].str.split().str.len().mean()), 1) if len(df) else 0.0,
        "preview": preview(df[["doc_id", "summary"]], 5),
    })


@dg.asset(group_name="indices", compute_kind="lancedb", pool="gpu", op_tags=compute_tags("gpu"))
def summary_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, document_summaries: pd.DataFrame,
                  baseline_index: dict, embedder: EmbedderResource, lancedb: LanceDBResource) -> dg.Output[dict]:
    """LanceDB table of every chunk (base vectors, reused) and one row per document summary (embedded here)."""
    if document_summaries.empty:
        return dg.Output({"enabled": False}, metadata={"skipped": "no document summaries (document_summaries is off "
                                                                  "or summarised nothing)"})
    from assets.indices import embed_incrementally

    key = baseline_index.get("vector_key") or baseline_index["model"]
    base_rows = chunks[["chunk_id", "doc_id", "text"]]
    base_vectors = stored_base_vectors(lancedb, baseline_index, base_rows["chunk_id"].astype(str).tolist())
    extra = summary_rows(document_summaries)
    t0 = time.perf_counter()
    summary_vectors, n_new = embed_incrementally(extra, lancedb.stored_vectors(SUMMARY_TABLE, key),
                                                 lambda texts: embedder.encode(texts, None))
    embed_s = time.perf_counter() - t0
    rows = pd.concat([base_rows, extra], ignore_index=True)
    vectors = np.concatenate([base_vectors, summary_vectors]) if len(base_rows) else summary_vectors
    index, write = lancedb.sync_chunk_table(SUMMARY_TABLE, rows, vectors, model=key)
    info = {"enabled": True, "table": SUMMARY_TABLE, "uri": lancedb.uri, "model": baseline_index["model"],
            "n_rows": index.count(), "n_summaries": len(extra), "summaries_embedded": n_new,
            "llm_calls": int((~document_summaries["cached"].astype(bool)).sum()),
            "llm_cache_hits": int(document_summaries["cached"].astype(bool).sum()),
            "summary_rows": extra.values.tolist()}
    context.log.info(f"{SUMMARY_TABLE}: {len(base_rows)} chunks (vectors reused from {baseline_index['table']}) and "
                     f"{len(extra)} summaries ({n_new} embedded, in {embed_s:.1f}s)")
    return dg.Output(info, metadata={
        **{k: v for k, v in info.items() if k != "summary_rows"},
        "chunks_embedded": 0, "embed_seconds": round(embed_s, 2), "rows_added": write["rows_added"],
        "rows_deleted": write["rows_deleted"], "write_mode": write["mode"],
        "preview": preview(extra[["doc_id", "text"]], 5),
    })
