"""Monitoring: the flywheel's inbound half, what real users ask and how the serving retriever does on it.

`query_review` is the weekly review queue (assets/monitoring/review.py): a stable sample of the logged
queries, each retrieved from the serving index with the champion model, its top-k graded by the LLM judge
(precision@k), with the top-1 cosine, the fine-tuned reranker's top score and, where the feedback log
labelled it, recall@k; worst first, plus the documents no sampled query reaches and those always judged
irrelevant. Cost: judge calls = sampled queries x top_k (200 x 5 = 1,000 by default), cached, so a rerun
on the same log makes none.

`query_segments` clusters every logged query (assets/monitoring/segments.py) and tells, per segment, its
share of traffic, its judged precision, its recall and its trend: which segment to invest in next.

Both take the `feedback` asset's `logged_queries` and `feedback_pairs`; without a configured log those are
empty and both assets say so in their metadata instead of failing.
"""
import datetime as dt
import json

import dagster as dg
import pandas as pd

from assets.common import image, markdown_table, preview, progress_logger, save_figure
from assets.monitoring.review import (QUEUE_COLUMNS, append_history, doc_recall, document_view, history_row,
                                      judge_requests, positive_docs, retrieve, review_rows, review_sample,
                                      sort_queue, top_rerank_scores)
from assets.monitoring.segments import cluster_queries, segment_names, segment_table, segments_figure, top_terms
from assets.promotion import serving_query_vectors
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.llm import LLMResource
from resources.workspace import WorkspaceResource

NO_LOG_MESSAGE = "no logged queries: point `flywheel run --feedback PATH` (or FLYWHEEL_FEEDBACK) at a log"
QUEUE_FILE, HISTORY_FILE = "review_queue.parquet", "review_history.jsonl"
SEGMENTS_FILE, SEGMENTS_PLOT, SEGMENT_QUERIES_FILE = "segments.json", "plots/segments.png", "segment_queries.parquet"


class ReviewConfig(dg.Config):
    share: float = 0.2          # of the distinct logged queries reviewed each run (stable: the same ones every week)
    cap: int = 200              # at most this many: 200 x top_k 5 = 1,000 judge calls, ~2.5 min locally at 0.15 s
    top_k: int = 5              # hits judged per query: precision@5
    retriever: str = "hybrid"   # how the serving table is queried (dense, hybrid, bm25): hybrid, the best first stage
    relevant_grade: int = 2     # grade >= this counts as relevant, as in the labels
    low_precision: float = 0.5  # below this a query counts as "low precision" in the history
    preview_rows: int = 50      # worst queries shown in the metadata
    seed: int = 0


class SegmentConfig(dg.Config):
    n_segments: int = 0         # 0 = choose by silhouette over 2..max_segments
    max_segments: int = 8       # more segments than a person reads in a weekly review is noise
    top_k: int = 5              # recall@k of labelled queries: keep it the review's top_k
    retriever: str = "hybrid"   # as the review
    n_terms: int = 3            # top TF-IDF terms in a segment's name
    n_examples: int = 3         # most frequent queries shown per segment
    name_with_llm: bool = True  # an endpoint names the segments (one cached call each); the local model cannot
    seed: int = 0


def blanks(df: pd.DataFrame) -> pd.DataFrame:
    """Nulls shown as empty cells in the UI's tables, not as "nan"."""
    return df.astype(object).where(df.notna(), "")


def number(value: float | None):
    return dg.MetadataValue.float(float(value)) if value is not None else None


def load_top_reranker(finetuned_crossencoder: dict, device: str):
    """The fine-tuned cross-encoder as a reranker, or None when no model was trained."""
    if not (finetuned_crossencoder or {}).get("model_path"):
        return None
    from assets.evaluation.rerank import CrossEncoderReranker
    from assets.training.crossencoder import load_reranker

    model = load_reranker(finetuned_crossencoder["model_path"], device, finetuned_crossencoder.get("max_length", 256))
    return CrossEncoderReranker(model, name="finetuned cross-encoder")


@dg.asset(group_name="monitoring", compute_kind="llm", pool="llm", op_tags=compute_tags("llm"))
def query_review(context: dg.AssetExecutionContext, logged_queries: pd.DataFrame, feedback_pairs: pd.DataFrame,
                 chunks: pd.DataFrame, serving_index: dict, finetuned_crossencoder: dict, llm: LLMResource,
                 embedder: EmbedderResource, lancedb: LanceDBResource, workspace: WorkspaceResource,
                 config: ReviewConfig) -> dg.Output[pd.DataFrame]:
    """Weekly review queue: a stable sample of logged queries, served and judged, worst judged precision first."""
    path = workspace.reports_dir / QUEUE_FILE
    if logged_queries.empty:
        empty = pd.DataFrame(columns=QUEUE_COLUMNS)
        empty.to_parquet(path)
        return dg.Output(empty, metadata={"message": NO_LOG_MESSAGE, "n_logged": 0, "n_sampled": 0, "path": str(path)})
    # 1. The sample: the same queries every week
    sample = review_sample(logged_queries, config.share, config.cap, config.seed)
    texts = sample["text"].tolist()
    # 2. Served as production serves them: the champion's table and model
    index = lancedb.open(serving_index["table"])
    vectors = serving_query_vectors(texts, serving_index, embedder)
    hits = retrieve(index, config.retriever, texts, vectors, config.top_k)
    top_cosine = [next((s for _, s in index.dense(v, 1)), None) for v in vectors]
    # 3. Judged by the LLM, scored by the fine-tuned reranker where there is one
    chunk_text = dict(zip(chunks["chunk_id"], chunks["text"]))
    requests = judge_requests(sample, hits, chunk_text)
    context.log.info(f"query_review: {len(requests)} judge calls planned ({len(sample)} of {len(logged_queries)} "
                     f"logged queries x up to {config.top_k} hits) with {llm.model_id()}; cached ones are free")
    judgments, stats = llm.judge(requests, progress=progress_logger(context, "query_review"))
    llm.release()   # the weights leave memory before the next stage (a no-op for an endpoint)
    grades = {(j.query, j.chunk_id): j.grade for j in judgments}
    reranker = load_top_reranker(finetuned_crossencoder, embedder.resolved_device())
    rerank_top = top_rerank_scores(reranker, texts, hits, chunk_text)
    # 4. The queue, the documents view and the history
    doc_of = dict(zip(chunks["chunk_id"], chunks["doc_id"].astype(str)))
    queue = sort_queue(review_rows(sample, hits, top_cosine, grades, rerank_top, doc_of, positive_docs(feedback_pairs),
                                   config.relevant_grade))
    never, irrelevant = document_view(queue, chunks["doc_id"].astype(str).unique().tolist(), config.relevant_grade)
    queue.to_parquet(path)
    row = history_row(queue, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), len(logged_queries),
                      config.low_precision, stats.calls, stats.cache_hits, len(never), len(irrelevant))
    history = append_history(workspace.reports_dir / HISTORY_FILE, row)
    shown = queue[["query_id", "text", "precision", "top_cosine", "top_rerank", "recall", "n_interactions"]]
    return dg.Output(queue, metadata={
        "n_logged": len(logged_queries),
        "n_sampled": len(queue),
        **{k: number(row[k]) for k in ("mean_precision", "mean_top_cosine", "mean_recall")},   # null: none judged
        "n_low_precision": row["n_low_precision"],
        "n_with_labels": int(queue["recall"].notna().sum()),
        "reranker": "finetuned cross-encoder" if reranker else "none (no fine-tuned cross-encoder): top_rerank is null",
        "worst": preview(blanks(shown), config.preview_rows),
        "docs_never_retrieved": len(never),
        "docs_never_retrieved_examples": ", ".join(never[:20]),
        "docs_always_irrelevant": preview(irrelevant, 20),
        "history": dg.MetadataValue.md(markdown_table(blanks(history.iloc[::-1]), 12)),   # newest first
        "judge_calls_planned": len(requests),
        "llm_calls": stats.calls,
        "llm_cache_hits": stats.cache_hits,
        "llm_failures": stats.failures + stats.parse_failures,
        "path": str(path),
    })


def segment_records(table: pd.DataFrame) -> list[dict]:
    """The segments as JSON-ready dicts (NaN -> null)."""
    return [{k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
            for row in table.to_dict("records")]


@dg.asset(group_name="monitoring", compute_kind="scikit-learn", pool="gpu", op_tags=compute_tags("gpu"))
def query_segments(context: dg.AssetExecutionContext, logged_queries: pd.DataFrame, feedback_pairs: pd.DataFrame,
                   chunks: pd.DataFrame, query_review: pd.DataFrame, serving_index: dict, llm: LLMResource,
                   embedder: EmbedderResource, lancedb: LanceDBResource, workspace: WorkspaceResource,
                   config: SegmentConfig) -> dg.Output[dict]:
    """Logged queries clustered into named segments, each with its traffic share, judged precision and trend."""
    path = workspace.reports_dir / SEGMENTS_FILE
    value = {"segments": [], "n_segments": 0, "silhouette": None, "share_of": "interactions", "path": str(path)}
    if logged_queries.empty:
        path.write_text(json.dumps({**value, "message": NO_LOG_MESSAGE}, indent=2))
        return dg.Output(value, metadata={"message": NO_LOG_MESSAGE, "n_segments": 0, "path": str(path)})
    # 1. Embed with the serving model and cluster
    queries = logged_queries.reset_index(drop=True)
    texts = queries["text"].tolist()
    vectors = serving_query_vectors(texts, serving_index, embedder)
    labels, silhouette = cluster_queries(vectors, config.n_segments, config.max_segments, config.seed)
    queries = queries.assign(segment=labels)
    # 2. Name the segments: top terms, or the LLM where it can
    terms = top_terms(texts, labels, config.n_terms)
    by_segment = {s: g.sort_values("n_interactions", ascending=False)["text"].head(10).tolist()
                  for s, g in queries.groupby("segment")}
    llm_names, stats = llm.name_topics(list(by_segment.values())) if config.name_with_llm else ([], None)
    llm.release()   # the weights leave memory before the next stage (a no-op for an endpoint)
    names = segment_names(terms, dict(zip(by_segment, llm_names)))
    # 3. Recall of every labelled query (no LLM needed), precision from the review
    positives = positive_docs(feedback_pairs)
    labelled = queries.index[queries["query_id"].astype(str).isin(positives)].tolist()
    recall = {}
    if labelled:
        doc_of = dict(zip(chunks["chunk_id"], chunks["doc_id"].astype(str)))
        index = lancedb.open(serving_index["table"])
        hits = retrieve(index, config.retriever, [texts[i] for i in labelled], vectors[labelled], config.top_k)
        recall = {str(queries.at[i, "query_id"]): doc_recall([doc_of.get(c, "") for c, _ in ranked],
                                                             positives[str(queries.at[i, "query_id"])])
                  for i, ranked in zip(labelled, hits)}
    precision = dict(zip(query_review["query_id"].astype(str), query_review["precision"])) if len(query_review) else {}
    table = segment_table(queries.assign(query_id=queries["query_id"].astype(str)), names, terms, precision, recall,
                          config.n_examples)
    # 4. Files and metadata
    value.update(segments=segment_records(table), n_segments=len(table), silhouette=silhouette,
                 trend="least-squares slope of daily interactions x 7 / mean daily interactions (per week)")
    path.write_text(json.dumps(value, indent=2, default=str))
    queries[["query_id", "text", "n_interactions", "segment"]].assign(name=queries["segment"].map(names)).to_parquet(
        workspace.reports_dir / SEGMENT_QUERIES_FILE)
    plot = save_figure(segments_figure(table), workspace.reports_dir / SEGMENTS_PLOT)
    shown = table.drop(columns=["segment", "top_terms"]).assign(examples=table["examples"].map("; ".join))
    return dg.Output(value, metadata={
        "n_segments": len(table),
        "n_queries": len(queries),
        "silhouette": number(silhouette),
        "segments": dg.MetadataValue.md(markdown_table(blanks(shown), max_rows=len(shown), max_chars=160)),
        "plot": image(plot, "share of traffic vs judged precision per segment"),
        "share_of": "interactions (query_share: distinct queries)",
        "named_by": "llm" if any(llm_names) else "top TF-IDF terms",
        "llm_calls": stats.calls if stats else 0,
        "llm_cache_hits": stats.cache_hits if stats else 0,
        "path": str(path),
        "plot_path": str(plot),
    })

