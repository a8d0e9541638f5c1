"""Relevance labels: an LLM judge grades each synthetic query against its source chunk and the top
candidates the baseline retrievers return for it (0 = not relevant ... 3 = highly relevant).

Why: a generated query often has more than one right answer in the corpus. Treating those other answers
as negatives teaches the model to push away relevant text (the false-negative problem of GPL, Wang et al.
2022). The labels make them extra positives instead, and can deny a source chunk its query when the
generator wrote something the passage does not answer.

Cost: judge calls = labelled queries x (candidates + 1). The defaults label a stable sample of queries
(`max_queries`) against `candidates_per_query` hybrid candidates; the count is logged before any call.
"""

import dagster as dg
import pandas as pd

from assets.common import preview, progress_logger, stable_sample
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.llm import JudgeRequest, LLMResource, check_failure_share

LABEL_COLUMNS = ["query_id", "chunk_id", "grade", "score", "judge", "is_source"]


class LabelConfig(dg.Config):
    candidates_per_query: int = 3   # top hybrid hits besides the source: where false negatives concentrate
    max_queries: int = 300          # 300 x 4 = 1,200 QL scorings, ~3 min on 2 cores (0.15 s each); 0 = every query
    relevant_grade: int = 2         # grade >= this counts as relevant (a positive, never a negative)
    seed: int = 0


def plan_judgements(queries: pd.DataFrame, candidates: dict[str, list[str]], chunk_text: dict[str, str],
                    config: LabelConfig) -> list[JudgeRequest]:
    """The source chunk plus the top `candidates_per_query` other candidates of each query."""
    requests = []
    for q in queries.itertuples(index=False):
        others = [c for c in candidates.get(q.query_id, []) if c != q.chunk_id][: config.candidates_per_query]
        for chunk_id in [q.chunk_id, *others]:
            requests.append(JudgeRequest(query=q.text, chunk_id=chunk_id, passage=chunk_text[chunk_id],
                                         source_chunk_id=q.chunk_id))
    return requests


def labels_frame(judgments, queries: pd.DataFrame) -> pd.DataFrame:
    by_text_source = {(q.text, q.chunk_id): q.query_id for q in queries.itertuples(index=False)}
    rows = []
    for j, source in judgments:
        qid = by_text_source.get((j.query, source))
        if qid is not None:
            rows.append({"query_id": qid, "chunk_id": j.chunk_id, "grade": int(j.grade), "score": float(j.score),
                         "judge": j.judge, "is_source": j.chunk_id == source})
    return pd.DataFrame(rows, columns=LABEL_COLUMNS)


@dg.asset(group_name="labels", compute_kind="llm", pool="llm", op_tags=compute_tags("llm"))
def relevance_labels(context: dg.AssetExecutionContext, synthetic_queries: pd.DataFrame, chunks: pd.DataFrame,
                     baseline_index: dict, llm: LLMResource, embedder: EmbedderResource,
                     lancedb: LanceDBResource, config: LabelConfig) -> dg.Output[pd.DataFrame]:
    """Graded LLM judgments of (synthetic query, candidate chunk) pairs: the source and the top hybrid hits."""
    index = lancedb.open(baseline_index["table"])
    sample = stable_sample(synthetic_queries, "query_id", config.max_queries, config.seed + 1)
    vectors = embedder.encode(sample["text"].tolist())
    depth = config.candidates_per_query + 1
    candidates = {q.query_id: [c for c, _ in index.hybrid(q.text, v, depth)]
                  for q, v in zip(sample.itertuples(index=False), vectors)}
    chunk_text = dict(zip(chunks["chunk_id"], chunks["text"]))
    requests = plan_judgements(sample, candidates, chunk_text, config)
    context.log.info(f"relevance_labels: {len(requests)} judge calls planned ({len(sample)} queries x up to "
                     f"{config.candidates_per_query + 1} chunks) with {llm.model_id()}; cached ones are free")
    judgments, stats = llm.judge(requests, progress=progress_logger(context, "relevance_labels"))
    llm.release()   # the weights leave memory before the next stage (a no-op for an endpoint)
    check_failure_share(stats, "relevance_labels", llm.max_failure_share)  # not labels from a judge that was down
    source_of = {(r.query, r.chunk_id): r.source_chunk_id for r in requests}
    df = labels_frame([(j, source_of.get((j.query, j.chunk_id))) for j in judgments], sample)
    relevant = df[df["grade"] >= config.relevant_grade]
    return dg.Output(df, metadata={
        "n_labels": len(df),
        "labelled_queries": int(df["query_id"].nunique()) if len(df) else 0,
        "judge_calls_planned": len(requests),
        "llm_calls": stats.calls,
        "llm_cache_hits": stats.cache_hits,
        "llm_failures": stats.failures,
        "llm_failure_share": round(stats.failure_share, 4),
        "llm_parse_failures": stats.parse_failures,
        "llm_parse_retries": stats.parse_retries,       # cached answers that did not parse, asked again
        "grade_counts": dg.MetadataValue.json({str(k): int(v) for k, v in df["grade"].value_counts().items()}),
        "sources_denied": int(((df["is_source"]) & (df["grade"] < config.relevant_grade)).sum()),
        "extra_positives": int(((~relevant["is_source"])).sum()),
        "judge": df["judge"].iloc[0] if len(df) else llm.model_id(),
        "preview": preview(df.merge(synthetic_queries[["query_id", "text"]], on="query_id")
                           [["text", "chunk_id", "is_source", "grade", "score"]], 8),
    })

from assets.labels.judge_agreement import judge_agreement  # noqa: E402,F401  (the judge, measured: its own module)
