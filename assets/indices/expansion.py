"""Document expansion (doc2query): each chunk's full-text field gets the synthetic queries already written for it.

Nogueira et al. 2019 (doc2query) append queries a model wrote for a document to its text, so BM25 also matches
the words people ask with; doc2query-- (Gospodinov et al. 2023) shows that dropping the queries that do not fit
their document matters as much as adding the rest. Here no LLM is called: the queries are `synthetic_queries`,
kept only when

1. their split (`query_splits`) is train or validation. A synthetic test query is never in the index it is
   scored against, and neither is a human query: a query whose normalised text equals a synthetic test query's
   or a human query's is dropped too (an asset check reads the written table back and proves it);
2. the judge did not deny them: a query whose source chunk `relevance_labels` graded below `relevant_grade`
   is dropped (unlabelled queries are kept, as their source stays their positive in `query_splits`);
3. optionally (`drop_lowest_fraction`), they are not among the lowest-scoring share by the base model's cosine
   between the query and its source chunk's stored vector (doc2query--'s relevance filter; the queries are
   embedded, the chunks are not).

The vectors are the baseline table's stored ones, reused as they are (no chunk is embedded again): only the
text field changes, so dense search on this table is `dense_base`, and the evaluation gets `bm25_expanded`
(vs `bm25`) and `hybrid_expanded` (the same RRF, vs `hybrid_base`).

What the synthetic test rows can show: queries are split by source document, so no chunk of a test document is
ever expanded; on the synthetic test split the expansion can only make the other chunks compete harder. The
human queries, whose relevant documents lie in every split, are the measure of the gain.
"""

import dagster as dg
import numpy as np
import pandas as pd

from assets.common import preview
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.prompts import normalise_query

EXPANDED_TABLE = "chunks_expanded"
EXPANSION_SPLITS = ("train", "validation")
SEPARATOR = "\n"     # between the chunk's text and each appended query: the FTS tokenizer splits on it


class ExpansionConfig(dg.Config):
    enabled: bool = True
    relevant_grade: int = 2             # the labels' threshold: a source graded below it denied the query
    drop_lowest_fraction: float = 0.0   # doc2query--: also drop this share of the kept queries, the lowest by the
    #   base model's query/chunk cosine (0.3 ~ the paper's best on MS MARCO; costs one embedding per kept query)


def expansion_queries(synthetic_queries: pd.DataFrame, query_splits: pd.DataFrame, relevance_labels: pd.DataFrame,
                      forbidden_texts: set[str], relevant_grade: int = 2) -> tuple[pd.DataFrame, dict[str, int]]:
    """The queries that may expand their source chunk: (query_id, chunk_id, split, text) and the count dropped per
    reason. forbidden_texts: normalised texts that must never be in the index (the test and human queries)."""
    split = dict(zip(query_splits["query_id"], query_splits["split"]))
    source_grade = {r.query_id: r.grade for r in relevance_labels.itertuples(index=False) if r.is_source}
    stats = {"queries_written": len(synthetic_queries), "not_in_splits": 0, "test_split": 0, "judge_denied": 0,
             "same_text_as_test": 0, "duplicate": 0}
    rows, seen = [], set()
    for q in synthetic_queries.itertuples(index=False):
        norm = normalise_query(q.text)
        if q.query_id not in split:
            stats["not_in_splits"] += 1       # query_splits dropped it: no positive left
        elif split[q.query_id] not in EXPANSION_SPLITS:
            stats["test_split"] += 1
        elif source_grade.get(q.query_id, relevant_grade) < relevant_grade:
            stats["judge_denied"] += 1
        elif not norm or norm in forbidden_texts:
            stats["same_text_as_test"] += 1
        elif (q.chunk_id, norm) in seen:
            stats["duplicate"] += 1
        else:
            seen.add((q.chunk_id, norm))
            rows.append({"query_id": q.query_id, "chunk_id": q.chunk_id, "split": split[q.query_id],
                         "text": " ".join(str(q.text).split())})
    return pd.DataFrame(rows, columns=["query_id", "chunk_id", "split", "text"]), stats


def drop_lowest(kept: pd.DataFrame, scores: np.ndarray, fraction: float) -> tuple[pd.DataFrame, float | None]:
    """`kept` without its lowest-scoring `fraction` (floor of the count; ties by query id), and the lowest score
    kept (None when nothing is dropped or nothing is left)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"drop_lowest_fraction must be in [0, 1), got {fraction}: it is the share of queries dropped")
    n_drop = int(fraction * len(kept))
    if n_drop == 0:
        return kept, None
    order = sorted(range(len(kept)), key=lambda i: (scores[i], kept["query_id"].iloc[i]))
    keep = sorted(order[n_drop:])
    return kept.iloc[keep].reset_index(drop=True), float(min(scores[i] for i in keep))


def expanded_chunks(chunks: pd.DataFrame, kept: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """`chunks` with each one's kept queries appended to its text (in query order), and the chunks expanded."""
    extra = kept.groupby("chunk_id", sort=False)["text"].agg(SEPARATOR.join).to_dict()
    out = chunks.copy()
    out["text"] = [t + SEPARATOR + extra[c] if c in extra else t for c, t in zip(chunks["chunk_id"], chunks["text"])]
    return out, int(chunks["chunk_id"].isin(extra).sum())


def appended_queries(table_text: str, chunk_text: str) -> list[str]:
    """The queries an expanded field holds after its chunk's own text (the whole field when it does not start so)."""
    rest = table_text[len(chunk_text):] if table_text.startswith(chunk_text) else table_text
    return [q for q in rest.split(SEPARATOR) if q.strip()]


def leaked_test_queries(fields: dict[str, str], chunk_text: dict[str, str], test_texts: set[str]) -> list[str]:
    """Appended queries of an expanded table (chunk id -> field) whose normalised text is a test query's."""
    return sorted({q for c, field in fields.items() for q in appended_queries(field, chunk_text.get(c, ""))
                   if normalise_query(q) in test_texts})


def held_out_texts(query_splits: pd.DataFrame, human_queries: list) -> set[str]:
    """Normalised texts of every synthetic test query and every human query."""
    from assets.feedback import human_test_texts

    synthetic = {normalise_query(t) for t in query_splits.loc[query_splits["split"] == "test", "text"]}
    return (synthetic | human_test_texts(human_queries)) - {""}


def stored_base_vectors(lancedb: LanceDBResource, baseline_index: dict, chunk_ids: list[str]) -> np.ndarray:
    """The baseline table's vectors in `chunk_ids` order: expansion changes text only, it never embeds a chunk."""
    vectors, missing = lancedb.index_vectors(baseline_index, chunk_ids)
    if missing:
        raise dg.Failure(description=f"{len(missing)} chunks (e.g. {missing[0]}) have no vector in "
                                     f"{baseline_index['table']}: materialize baseline_index with these chunks first")
    return vectors if vectors is not None else np.asarray([], dtype="float32")   # no chunks


def expansion_systems(expanded_index: dict, lancedb: LanceDBResource) -> dict[str, tuple]:
    """The evaluation rows of the expanded table (BM25, and the same RRF hybrid with the base model's query
    vectors); none when expansion is off."""
    if not expanded_index.get("enabled"):
        return {}
    table = lancedb.open(expanded_index["table"])
    return {"bm25_expanded": (table, "bm25", None), "hybrid_expanded": (table, "hybrid", None)}


def expansion_markdown(expansion: dict | None) -> str:
    if not expansion or not expansion.get("enabled"):
        return ""
    f, by = expansion["filtered"], expansion["queries_by_split"]
    return (f"`bm25_expanded` / `hybrid_expanded`: {expansion['chunks_expanded']} of {expansion['n_rows']} chunks "
            f"expanded with {expansion['queries_used']} of {expansion['queries_written']} synthetic queries "
            f"(train {by['train']}, validation {by['validation']}); "
            "left out: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in f.items()) + ". No test-split or human "
            "query is in the table; test documents' chunks are never expanded, so the synthetic test rows measure only "
            "what expanding the others costs, and the human queries measure the gain.")


@dg.asset(group_name="indices", compute_kind="lancedb")   # the cpu profile: it embeds no chunk, at most the queries
def expanded_index(context: dg.AssetExecutionContext, chunks: pd.DataFrame, synthetic_queries: pd.DataFrame,
                   relevance_labels: pd.DataFrame, query_splits: pd.DataFrame, human_queries: list,
                   baseline_index: dict, embedder: EmbedderResource, lancedb: LanceDBResource,
                   config: ExpansionConfig) -> dg.Output[dict]:
    """LanceDB table of every chunk, its text expanded with its train/validation synthetic queries, base vectors."""
    if not config.enabled:
        return dg.Output({"enabled": False}, metadata={"skipped": "expansion is off (--no-expansion)"})
    kept, stats = expansion_queries(synthetic_queries, query_splits, relevance_labels,
                                    held_out_texts(query_splits, human_queries), config.relevant_grade)
    ids = chunks["chunk_id"].astype(str).tolist()
    vectors = stored_base_vectors(lancedb, baseline_index, ids)
    min_score = None
    if config.drop_lowest_fraction > 0 and len(kept):
        row = {c: i for i, c in enumerate(ids)}
        q = np.asarray(embedder.encode(kept["text"].tolist()), dtype="float32")   # the queries only
        scores = (q * vectors[[row[c] for c in kept["chunk_id"]]]).sum(axis=1)    # normalised: a cosine
        n_before = len(kept)
        kept, min_score = drop_lowest(kept, scores, config.drop_lowest_fraction)
        stats["lowest_scoring"] = n_before - len(kept)
    expanded, n_expanded = expanded_chunks(chunks, kept)
    index = lancedb.write_chunk_table(EXPANDED_TABLE, expanded, vectors,
                                      model=baseline_index.get("vector_key") or baseline_index["model"])
    info = {"enabled": True, "table": EXPANDED_TABLE, "uri": lancedb.uri, "model": baseline_index["model"],
            "n_rows": index.count(), "chunks_expanded": n_expanded, "queries_used": len(kept),
            "queries_by_split": {s: int((kept["split"] == s).sum()) for s in EXPANSION_SPLITS},
            "filtered": {k: v for k, v in stats.items() if k != "queries_written"},
            "queries_written": stats["queries_written"], "drop_lowest_fraction": config.drop_lowest_fraction,
            "min_score_kept": None if min_score is None else round(min_score, 6)}
    context.log.info(f"{EXPANDED_TABLE}: {n_expanded} of {len(chunks)} chunks expanded with {len(kept)} of "
                     f"{stats['queries_written']} synthetic queries; vectors reused from {baseline_index['table']}")
    shown = expanded[chunks["chunk_id"].isin(set(kept["chunk_id"]))]
    return dg.Output(info, metadata={
        **{k: v for k, v in info.items() if k not in ("filtered", "queries_by_split")},
        **{f"filtered_{k}": v for k, v in info["filtered"].items()},
        **{f"queries_{s}": n for s, n in info["queries_by_split"].items()},
        "chunks_embedded": 0,   # the vectors are chunks_base's
        "preview": preview(shown.assign(text=shown["text"].str.slice(-300))[["chunk_id", "text"]], 5),
    })


@dg.asset_check(asset=expanded_index, blocking=True,
                additional_ins={"chunks": dg.AssetIn("chunks"), "query_splits": dg.AssetIn("query_splits"),
                                "human_queries": dg.AssetIn("human_queries")},
                description="No synthetic test query and no human query is appended to any chunk of the table.")
def no_test_query_in_expansion(expanded_index: dict, chunks: pd.DataFrame, query_splits: pd.DataFrame,
                               human_queries: list, lancedb: LanceDBResource) -> dg.AssetCheckResult:
    if not expanded_index.get("enabled"):
        return dg.AssetCheckResult(passed=True, metadata={"skipped": "expansion is off"})
    rows = lancedb.open(expanded_index["table"]).table.to_arrow().select(["chunk_id", "text"])
    fields = dict(zip(rows.column("chunk_id").to_pylist(), rows.column("text").to_pylist()))
    texts = held_out_texts(query_splits, human_queries)
    leaked = leaked_test_queries(fields, dict(zip(chunks["chunk_id"], chunks["text"])), texts)
    return dg.AssetCheckResult(passed=not leaked, metadata={"leaked_queries": len(leaked), "test_queries": len(texts),
                                                            "examples": dg.MetadataValue.json(leaked[:10])})
