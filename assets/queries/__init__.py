"""Synthetic queries: for each chunk, an LLM writes the queries a user might ask that the chunk answers.

Three styles, so the model learns more than one way people search: a natural question, a keyword search,
and a statement or claim to verify. Each chunk gets `queries_per_chunk` queries, styles assigned in a
stable round-robin from the chunk's hash. Outputs are filtered by the LLM resource (empty, duplicate, an
echo of a few-shot example, or a copy of the passage; resources/prompts.py) and counted by reason. Every LLM response is cached before it is used
(resources/llm_cache.py), so a rerun pays only for chunks it has not seen.
"""

from collections import Counter

import dagster as dg
import pandas as pd

from assets.common import preview, progress_logger, stable_fraction, stable_hash, stable_sample
from resources.llm import LLMResource, QueryRequest
from resources.compute import compute_tags
from resources.prompts import QUERY_STYLES


class QueryGenConfig(dg.Config):
    queries_per_chunk: int = 1          # 1 x 1,400 cranfield chunks ~ 8 min with the bundled 270M model on 2 cores
    styles: list[str] = list(QUERY_STYLES)
    max_chunks: int = 2500              # a stable sample: 2,500 x 0.53 s ~ 22 min on 2 CPU cores, so a 5,000-document
                                        # corpus stays within about an hour end to end; 0 = every chunk
    seed: int = 0


def plan_requests(chunks: pd.DataFrame, config: QueryGenConfig) -> list[QueryRequest]:
    """One request per (chunk, style), the styles spread round-robin from a stable per-chunk offset."""
    unknown = set(config.styles) - set(QUERY_STYLES)
    if unknown or not config.styles:
        raise ValueError(f"unknown query styles {sorted(unknown)}; choose from {list(QUERY_STYLES)}")
    selected = stable_sample(chunks, "chunk_id", config.max_chunks, config.seed)
    requests = []
    for row in selected.itertuples(index=False):
        offset = int(stable_fraction(row.chunk_id, config.seed) * len(config.styles))
        per_style = Counter(config.styles[(offset + i) % len(config.styles)] for i in range(config.queries_per_chunk))
        requests += [QueryRequest(chunk_id=row.chunk_id, text=row.text, style=s, n=n) for s, n in per_style.items()]
    return requests


def queries_frame(generated, chunks: pd.DataFrame) -> pd.DataFrame:
    """One row per generated query (already filtered by the LLM resource), with a stable id."""
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    rows = [{"query_id": stable_hash([g.chunk_id, g.style, g.text]), "chunk_id": g.chunk_id,
             "doc_id": chunk_doc[g.chunk_id], "style": g.style, "text": g.text, "model": g.model,
             "prompt_version": g.prompt_version} for g in generated]
    df = pd.DataFrame(rows, columns=["query_id", "chunk_id", "doc_id", "style", "text", "model", "prompt_version"])
    return df.drop_duplicates("query_id").reset_index(drop=True)


@dg.asset(group_name="queries", compute_kind="llm", pool="llm", op_tags=compute_tags("llm"))
def synthetic_queries(context: dg.AssetExecutionContext, chunks: pd.DataFrame, llm: LLMResource,
                      config: QueryGenConfig) -> dg.Output[pd.DataFrame]:
    """LLM-written queries (question, keywords, claim) for each chunk, filtered, one row per query."""
    requests = plan_requests(chunks, config)
    planned = sum(r.n for r in requests)
    context.log.info(f"synthetic_queries: {len(requests)} LLM requests for {planned} queries "
                     f"({config.queries_per_chunk} per chunk, {len(requests and set(r.chunk_id for r in requests))} "
                     f"chunks) with {llm.model_id()}; cached responses are not paid again")
    generated, stats = llm.write_queries(requests, progress=progress_logger(context, "synthetic_queries"))
    df = queries_frame(generated, chunks)
    reasons = stats.filter_reasons
    df.attrs.update(chunks.attrs)
    if df.empty:
        raise ValueError(f"the LLM wrote no usable query for {len(requests)} requests (failures={stats.failures}, "
                         f"parse failures={stats.parse_failures}, filtered={dict(reasons)}); check the llm resource "
                         f"settings and the failure examples in the logs: {stats.failure_examples[:3]}")
    return dg.Output(df, metadata={
        "n_queries": len(df),
        "requests": len(requests),
        "llm_calls": stats.calls,
        "llm_cache_hits": stats.cache_hits,
        "llm_failures": stats.failures,
        "llm_parse_failures": stats.parse_failures,
        "filtered": dg.MetadataValue.json(dict(reasons)),
        "failure_examples": dg.MetadataValue.json(stats.failure_examples[:5]),
        "by_style": dg.MetadataValue.json(df["style"].value_counts().to_dict()),
        "model": llm.model_id(),
        "preview": preview(df[["style", "text", "chunk_id"]], 8),
    })
