"""Synthetic queries: for each chunk, an LLM writes the queries a user might ask that the chunk answers.

Three styles, so the model learns more than one way people search: a natural question, a keyword search,
and a statement or claim to verify. Each chunk gets `queries_per_chunk` queries, styles assigned in a
stable round-robin from the chunk's hash. Outputs are filtered by the LLM resource (empty, duplicate, an
echo of a few-shot example, or a copy of the passage; resources/prompts.py) and counted by reason. Every LLM response is cached before it is used
(resources/llm_cache.py), so a rerun pays only for chunks it has not seen.

Your users' style: with a feedback log, `fewshot` "logged" (or "auto" when the log has enough examples) shows
the writer a few logged queries with a passage each one cited, in place of the generic examples, and asks for
queries in that style (style "user"). Promptagator (Dai et al. 2022) lifted a synthetic-data retriever on
SciFact from 0.623 to 0.650 nDCG@10 with 8 real queries. The examples' hash is part of the prompt version (and
so of every cache key); a human test query is never an example.
"""

from collections import Counter

import dagster as dg
import pandas as pd

from assets.common import md_text, preview, progress_logger, stable_fraction, stable_hash, stable_sample
from resources.llm import LLMResource, QueryRequest, check_failure_share
from resources.compute import compute_tags
from resources.prompts import ALL_STYLES, QUERY_STYLES, USER_STYLE, examples_version


class QueryGenConfig(dg.Config):
    queries_per_chunk: int = 1          # 1 x 1,400 cranfield chunks ~ 8 min with the bundled 270M model on 2 cores
    styles: list[str] = list(QUERY_STYLES)
    max_chunks: int = 2500              # a stable sample: 2,500 x 0.53 s ~ 22 min on 2 CPU cores, so a 5,000-document
                                        # corpus stays within about an hour end to end; 0 = every chunk
    seed: int = 0
    fewshot: str = "generic"            # "generic": the three built-in examples per style; "logged": logged queries and
    #   a passage each cited, in the style "user" (needs a feedback log); "auto": logged when the log has
    #   `fewshot_examples` usable ones, else generic
    fewshot_examples: int = 4           # Promptagator used 8; 4 keeps the local 270M model's prompt ~2x the generic one


FEWSHOT_MODES = ("generic", "logged", "auto")


def logged_examples(logged_queries: pd.DataFrame, feedback_pairs: pd.DataFrame, chunks: pd.DataFrame, n: int,
                    exclude: set[str], seed: int = 0) -> tuple[tuple[str, str], ...]:
    """Up to n (passage, query) pairs: logged queries (never one whose normalised text is in `exclude`, the
    human test queries) with the chunk of their best positive, in a stable order; the same on every run."""
    if logged_queries.empty or feedback_pairs.empty or n <= 0:
        return ()
    positives = feedback_pairs[feedback_pairs["label"] == "positive"].sort_values("grade", ascending=False,
                                                                                  kind="stable")
    text_of = dict(zip(chunks["chunk_id"], chunks["text"]))
    first_chunk = chunks.drop_duplicates("doc_id").set_index("doc_id")["text"].to_dict()
    best = {}
    for r in positives.itertuples(index=False):
        passage = text_of.get(r.chunk_id) if isinstance(r.chunk_id, str) else first_chunk.get(r.doc_id)
        if passage and r.query_id not in best:
            best[r.query_id] = passage
    rows = logged_queries[logged_queries["query_id"].isin(best) & ~logged_queries["norm"].isin(exclude)]
    order = sorted(rows.itertuples(index=False), key=lambda r: (stable_fraction(r.query_id, seed + 404), r.query_id))
    return tuple((best[r.query_id], r.text) for r in order[:n])


def plan_requests(chunks: pd.DataFrame, config: QueryGenConfig,
                  examples: tuple[tuple[str, str], ...] = ()) -> list[QueryRequest]:
    """One request per (chunk, style), the styles spread round-robin from a stable per-chunk offset. With
    logged examples, one style: the users' ("user")."""
    unknown = set(config.styles) - set(ALL_STYLES)
    if unknown or not config.styles:
        raise ValueError(f"unknown query styles {sorted(unknown)}; choose from {list(QUERY_STYLES)}")
    if examples:
        config = config.model_copy(update={"styles": [USER_STYLE]})
    selected = stable_sample(chunks, "chunk_id", config.max_chunks, config.seed)
    requests = []
    for row in selected.itertuples(index=False):
        offset = int(stable_fraction(row.chunk_id, config.seed) * len(config.styles))
        per_style = Counter(config.styles[(offset + i) % len(config.styles)] for i in range(config.queries_per_chunk))
        requests += [QueryRequest(chunk_id=row.chunk_id, text=row.text, style=s, n=n, examples=examples)
                     for s, n in per_style.items()]
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
def synthetic_queries(context: dg.AssetExecutionContext, chunks: pd.DataFrame, logged_queries: pd.DataFrame,
                      feedback_pairs: pd.DataFrame, human_queries: list, llm: LLMResource,
                      config: QueryGenConfig) -> dg.Output[pd.DataFrame]:
    """LLM-written queries (question, keywords, claim; or the users' style) for each chunk, filtered, one row
    per query."""
    from assets.feedback import human_test_texts

    if config.fewshot not in FEWSHOT_MODES:
        raise ValueError(f"fewshot={config.fewshot!r}: use one of {', '.join(FEWSHOT_MODES)}")
    examples = ()
    if config.fewshot != "generic":
        examples = logged_examples(logged_queries, feedback_pairs, chunks, config.fewshot_examples,
                                   human_test_texts(human_queries), config.seed)
        if config.fewshot == "logged" and not examples:
            raise ValueError("fewshot='logged' needs logged queries with a cited passage: pass a feedback log "
                             "(flywheel run --feedback PATH), or use fewshot='generic' or 'auto'")
        if config.fewshot == "auto" and len(examples) < config.fewshot_examples:
            examples = ()
    requests = plan_requests(chunks, config, examples)
    planned = sum(r.n for r in requests)
    context.log.info(f"synthetic_queries: {len(requests)} LLM requests for {planned} queries "
                     f"({config.queries_per_chunk} per chunk, {len(requests and set(r.chunk_id for r in requests))} "
                     f"chunks) with {llm.model_id()}; cached responses are not paid again")
    generated, stats = llm.write_queries(requests, progress=progress_logger(context, "synthetic_queries"))
    llm.release()   # the weights leave memory before the next stage (a no-op for an endpoint)
    check_failure_share(stats, "synthetic_queries", llm.max_failure_share)
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
        "llm_parse_retries": stats.parse_retries,       # cached answers that did not parse, asked again
        "filtered": dg.MetadataValue.json(dict(reasons)),
        "failure_examples": dg.MetadataValue.json(stats.failure_examples[:5]),
        "by_style": dg.MetadataValue.json(df["style"].value_counts().to_dict()),
        "model": llm.model_id(),
        "fewshot": f"logged: {examples_version(examples)}" if examples else "generic",
        "fewshot_examples": dg.MetadataValue.md(
            "\n".join(f"- {md_text(q)}" for _, q in examples) if examples else "_the three generic examples per style_"),
        "preview": preview(df[["style", "text", "chunk_id"]], 8),
    })
