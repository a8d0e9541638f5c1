"""Information-retrieval metrics, defined exactly as trec_eval defines them (tested against pytrec_eval).

- recall@k: relevant documents in the top k / all relevant documents of the query (trec_eval ``recall_k``).
- mrr@k: 1 / rank of the first relevant document, 0 when none is in the top k (``recip_rank`` on a run cut
  at k; trec_eval itself does not cut it).
- ndcg@k: sum over the top k of grade / log2(rank + 1), divided by the same sum for the ideal ranking of
  ALL the query's judged documents; gains are linear in the grade (``ndcg_cut_k``, not the 2^grade - 1
  variant some libraries use), so a grade-3 document is worth three grade-1 documents.
- accuracy@k: 1 when any relevant document is in the top k (``success_k``; "hit rate").

A document is relevant when its grade is > 0. A query with labels but no ranking scores 0 on everything:
a retriever that returns nothing for a query has failed on it, and dropping it would flatter the mean.
"""

from __future__ import annotations

import math

import pandas as pd

Qrels = dict[str, dict[str, int]]  # qid -> {doc_id: grade}, grade > 0 relevant
Ranking = dict[str, list[str]]  # qid -> doc ids, best first (no duplicates)

METRIC_NAMES = [
    "ndcg@10", "mrr@10",
    "recall@1", "recall@3", "recall@5", "recall@10", "recall@20", "recall@100",
    "accuracy@1", "accuracy@3",
]


def _relevant(rel: dict[str, int]) -> set[str]:
    return {d for d, g in rel.items() if g > 0}


def recall_at_k(ranked: list[str], rel: dict[str, int], k: int) -> float:
    """Share of the query's relevant documents found in the top ``k``."""
    relevant = _relevant(rel)
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: list[str], rel: dict[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document in the top ``k`` (0 if none)."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if rel.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: list[str], rel: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains and a log2(rank + 1) discount, as trec_eval's ndcg_cut."""
    dcg = sum(max(rel.get(doc, 0), 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], start=1))
    ideal_grades = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal_grades, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def accuracy_at_k(ranked: list[str], rel: dict[str, int], k: int) -> float:
    """1.0 when any relevant document is in the top ``k`` (hit rate, success@k), else 0.0."""
    return float(any(rel.get(doc, 0) > 0 for doc in ranked[:k]))


def _metric(name: str, ranked: list[str], rel: dict[str, int]) -> float:
    kind, k = name.split("@")
    fn = {"ndcg": ndcg_at_k, "mrr": mrr_at_k, "recall": recall_at_k, "accuracy": accuracy_at_k}[kind]
    return fn(ranked, rel, int(k))


def per_query_metrics(ranking: Ranking, qrels: Qrels) -> pd.DataFrame:
    """One row per query of ``qrels`` (qid + METRIC_NAMES); a query missing from ``ranking`` scores 0."""
    rows = []
    for qid, rel in qrels.items():
        ranked = list(dict.fromkeys(ranking.get(qid, [])))  # a repeated doc counts once, at its best rank
        rows.append({"qid": qid, **{name: _metric(name, ranked, rel) for name in METRIC_NAMES}})
    return pd.DataFrame(rows, columns=["qid", *METRIC_NAMES])


def mean_metrics(per_query: pd.DataFrame) -> dict[str, float]:
    """Mean of each metric over the queries (macro average, as trec_eval's 'all' line)."""
    if per_query.empty:
        raise ValueError("No queries to average: the qrels were empty. Check that the query set has labels.")
    return {name: float(per_query[name].mean()) for name in METRIC_NAMES if name in per_query}


def aggregate_to_documents(ranked_chunks: list[tuple[str, float]], chunk_to_doc: dict[str, str]) -> list[str]:
    """Documents in the order of their best chunk (MaxP). ``ranked_chunks`` must already be best first."""
    docs: dict[str, None] = {}
    for chunk_id, _score in ranked_chunks:
        try:
            docs.setdefault(chunk_to_doc[chunk_id], None)
        except KeyError:
            raise KeyError(
                f"chunk {chunk_id!r} is not in the chunk -> document map: the index was built from other "
                "chunks than the ones being evaluated; rebuild the index."
            ) from None
    return list(docs)
