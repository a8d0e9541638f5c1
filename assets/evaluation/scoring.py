"""Query sets and per-query scoring shared by the evaluation report, the learning curve and the promotion gate.

A query set is what the report scores a retriever on: the synthetic test (or validation) split, judged at
chunk level, or a human-labelled BEIR qrels file, judged at document level (a document ranks at its best
chunk). `dense_hits` is exact cosine search in memory over already-normalised vectors, so a model can be
scored without building a LanceDB table for it (the learning curve trains several).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from assets.evaluation.metrics import aggregate_to_documents, per_query_metrics

DEPTH = 100            # documents (or chunks) scored per query: recall@100 needs 100
CHUNK_DEPTH = 300      # chunks fetched for a document ranking: several chunks of one document collapse into one


@dataclass
class QuerySet:
    name: str                               # "synthetic/test", "human/<folder>/<qrels file>"
    kind: str                               # "synthetic" | "human"
    queries: dict[str, str]                 # qid -> text
    qrels: dict[str, dict[str, int]]        # qid -> {chunk or doc id: grade}
    chunk_to_doc: dict[str, str] | None     # None: qrels judge chunks; else rankings collapse to documents

    @property
    def qids(self) -> list[str]:
        return [q for q in self.qrels if q in self.queries]

    @property
    def depth(self) -> int:
        """Chunks to fetch per query so that DEPTH documents (or chunks) can be scored."""
        return CHUNK_DEPTH if self.chunk_to_doc else DEPTH


def synthetic_query_set(query_splits: pd.DataFrame, split: str = "test") -> QuerySet:
    """The synthetic queries of one split, each judged by its positive chunks."""
    rows = query_splits[query_splits["split"] == split]
    return QuerySet(f"synthetic/{split}", "synthetic", dict(zip(rows["query_id"], rows["text"])),
                    {r.query_id: {c: 1 for c in r.positives} for r in rows.itertuples(index=False)}, None)


def build_query_sets(query_splits: pd.DataFrame, human_queries: list, chunks: pd.DataFrame,
                     synthetic_split: str = "test") -> dict[str, QuerySet]:
    """The synthetic split's set, then one set per human qrels file the corpus brought."""
    chunk_to_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    sets = {f"synthetic/{synthetic_split}": synthetic_query_set(query_splits, synthetic_split)}
    for hs in human_queries:
        sets[f"human/{hs.name}"] = QuerySet(f"human/{hs.name}", "human", hs.queries, hs.qrels, chunk_to_doc)
    return sets


def score_hits(query_set: QuerySet, hits: list[list[tuple[str, float]]]) -> pd.DataFrame:
    """Per-query metrics (qid + METRIC_NAMES) of chunk hits, one list per `query_set.qids`, best first."""
    qids = query_set.qids
    if query_set.chunk_to_doc:
        ranking = {q: aggregate_to_documents(h, query_set.chunk_to_doc)[:DEPTH] for q, h in zip(qids, hits)}
    else:
        ranking = {q: [c for c, _ in h][:DEPTH] for q, h in zip(qids, hits)}
    return per_query_metrics(ranking, {q: query_set.qrels[q] for q in qids})


def dense_hits(query_vectors: np.ndarray, chunk_ids: list[str], chunk_vectors: np.ndarray,
               k: int) -> list[list[tuple[str, float]]]:
    """Exact top-k by cosine (the vectors are L2-normalised, so a dot product), best first."""
    if len(chunk_ids) == 0:
        return [[] for _ in range(len(query_vectors))]
    k = min(k, len(chunk_ids))
    scores = np.asarray(query_vectors, dtype="float32") @ np.asarray(chunk_vectors, dtype="float32").T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    out = []
    for row, idx in zip(scores, top):
        order = idx[np.argsort(-row[idx], kind="stable")]
        out.append([(chunk_ids[i], float(row[i])) for i in order])
    return out


def dense_per_query(query_set: QuerySet, encode, chunk_ids: list[str], chunk_vectors: np.ndarray) -> pd.DataFrame:
    """Per-query metrics of dense retrieval with the model behind `encode(texts) -> normalised vectors`."""
    qids = query_set.qids
    vectors = encode([query_set.queries[q] for q in qids])
    return score_hits(query_set, dense_hits(vectors, chunk_ids, chunk_vectors, query_set.depth))
