"""The weekly review queue, as plain functions: which logged queries to review, how well the serving retriever
did on each, and which come first.

The playbook's two habits: "sample some % of user traffic, run the LLM ranker over retrieved chunks and
monitor questions that have low precision", and "a regular cadence to review questions or documents that get
poor recall or low cosine or re-ranker scores". A row of the queue is one sampled query: its serving hits,
the judge's grades of them (precision@k), the top-1 cosine, the fine-tuned reranker's top score and, where
the feedback log labelled the query, its recall@k at document level.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from assets.common import stable_fraction
from resources.llm import JudgeRequest

QUEUE_COLUMNS = ["query_id", "text", "n_interactions", "source", "precision", "n_judged", "top_cosine",
                 "top_rerank", "recall", "n_positive_docs", "hits", "hit_docs", "grades"]


def review_sample(logged_queries: pd.DataFrame, share: float, cap: int, seed: int = 0) -> pd.DataFrame:
    """The queries to review: every query whose stable hash falls below `share`, at least ceil(share x n) of them
    (small logs), at most `cap` (0 = no cap). Always a prefix of one hash order, so a rerun picks the same queries
    (their judge calls come from the cache), next week's log keeps last week's picks, and a larger cap a superset.
    """
    if logged_queries.empty or share <= 0:
        return logged_queries.iloc[:0]
    order = logged_queries["query_id"].map(lambda q: stable_fraction(str(q), seed)).sort_values(kind="stable")
    n = max(int((order < share).sum()), math.ceil(share * len(order)))
    n = min(n, cap) if cap else n
    return logged_queries.loc[order.index[:n]]


def retrieve(index, retriever: str, texts: list[str], vectors, k: int) -> list[list[tuple[str, float]]]:
    """Each query's top-k (chunk_id, score) from a ChunkIndex with `retriever` (dense, hybrid or bm25)."""
    return [index.search(retriever, text, vector, k) for text, vector in zip(texts, vectors)]


def judge_requests(queries: pd.DataFrame, hits: list[list[tuple[str, float]]],
                   chunk_text: dict[str, str]) -> list[JudgeRequest]:
    """One request per (query, retrieved chunk). No source chunk: a user's query has none, so the local judge
    grades by its absolute query-likelihood thresholds (resources/llm_local.py ql_grades)."""
    return [JudgeRequest(query=text, chunk_id=chunk_id, passage=chunk_text[chunk_id])
            for text, ranked in zip(queries["text"], hits) for chunk_id, _ in ranked if chunk_id in chunk_text]


def top_rerank_scores(reranker, texts: list[str], hits: list[list[tuple[str, float]]],
                      chunk_text: dict[str, str]) -> list[float | None]:
    """Each query's best reranker score over its hits (a Reranker of assets/evaluation/rerank.py); all None
    without a reranker."""
    if reranker is None:
        return [None] * len(texts)
    out = []
    for text, ranked in zip(texts, hits):
        scores, _ = reranker.score(text, [(c, chunk_text[c]) for c, _ in ranked if c in chunk_text])
        known = [s for s in scores if s is not None]
        out.append(max(known) if known else None)
    return out


def precision_at_k(grades: list[int | None], relevant_grade: int = 2) -> float | None:
    """Share of the judged hits graded relevant (None where the judge could not grade a hit; None if none were)."""
    judged = [g for g in grades if g is not None]
    return sum(g >= relevant_grade for g in judged) / len(judged) if judged else None


def doc_recall(retrieved_docs: list[str], positive_docs: set[str]) -> float | None:
    """Share of the labelled positive documents among the retrieved ones' documents; None without labels."""
    return len(positive_docs & set(retrieved_docs)) / len(positive_docs) if positive_docs else None


def positive_docs(feedback_pairs: pd.DataFrame) -> dict[str, set[str]]:
    """query_id -> the documents the feedback log labelled positive for it (weak labels included)."""
    pos = feedback_pairs[feedback_pairs["label"] == "positive"] if len(feedback_pairs) else feedback_pairs
    out: dict[str, set[str]] = defaultdict(set)
    for qid, doc in zip(pos.get("query_id", []), pos.get("doc_id", [])):
        out[str(qid)].add(str(doc))
    return dict(out)


def review_rows(queries: pd.DataFrame, hits: list[list[tuple[str, float]]], top_cosine: list[float | None],
                grades: dict[tuple[str, str], int], rerank_top: list[float | None], doc_of: dict[str, str],
                positives: dict[str, set[str]], relevant_grade: int = 2) -> pd.DataFrame:
    """The queue's rows (unsorted), one per sampled query, from its hits and the judge's grades by (query, chunk)."""
    rows = []
    for q, ranked, cosine, rr in zip(queries.itertuples(index=False), hits, top_cosine, rerank_top):
        chunk_ids = [c for c, _ in ranked]
        g = [grades.get((q.text, c)) for c in chunk_ids]
        docs = [doc_of.get(c, "") for c in chunk_ids]
        pos = positives.get(str(q.query_id), set())
        rows.append({"query_id": q.query_id, "text": q.text, "n_interactions": int(q.n_interactions),
                     "source": q.source, "precision": precision_at_k(g, relevant_grade),
                     "n_judged": sum(x is not None for x in g), "top_cosine": cosine, "top_rerank": rr,
                     "recall": doc_recall(docs, pos), "n_positive_docs": len(pos), "hits": chunk_ids,
                     "hit_docs": docs, "grades": [-1 if x is None else int(x) for x in g]})   # -1 = not graded
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS).astype({"precision": float, "top_cosine": float,
                                                             "top_rerank": float, "recall": float})


def sort_queue(queue: pd.DataFrame) -> pd.DataFrame:
    """Worst first: lowest judged precision, then lowest top-1 cosine, then lowest reranker score; unknown
    values after known ones at each step, the query id last so ties keep one order."""
    return queue.sort_values(["precision", "top_cosine", "top_rerank", "query_id"], na_position="last",
                             kind="stable").reset_index(drop=True)


def document_view(queue: pd.DataFrame, corpus_docs: list[str],
                  relevant_grade: int = 2) -> tuple[list[str], pd.DataFrame]:
    """(documents in no sampled query's top-k, sorted; documents retrieved and judged, but never relevant, with
    how often they were retrieved), the second sorted most retrieved first."""
    retrieved: Counter = Counter()
    best: dict[str, int] = {}
    for docs, grades in zip(queue["hit_docs"], queue["grades"]):
        for doc, grade in zip(docs, grades):
            retrieved[doc] += 1
            if grade >= 0:
                best[doc] = max(best.get(doc, 0), int(grade))
    never = sorted(set(corpus_docs) - set(retrieved))
    bad = [{"doc_id": d, "times_retrieved": retrieved[d], "best_grade": g}
           for d, g in best.items() if g < relevant_grade]
    frame = pd.DataFrame(bad, columns=["doc_id", "times_retrieved", "best_grade"])
    return never, frame.sort_values(["times_retrieved", "doc_id"], ascending=[False, True]).reset_index(drop=True)


def history_row(queue: pd.DataFrame, when: str, n_logged: int, low_precision: float, llm_calls: int,
                llm_cache_hits: int, n_never: int, n_irrelevant_docs: int) -> dict:
    """One line of the review history: this run's counts, so the trend shows in the asset's metadata."""
    def mean(col: str) -> float | None:
        value = queue[col].mean() if len(queue) else float("nan")
        return None if pd.isna(value) else round(float(value), 4)

    return {"date": when, "n_logged": n_logged, "n_sampled": len(queue), "mean_precision": mean("precision"),
            "n_low_precision": int((queue["precision"] < low_precision).sum()) if len(queue) else 0,
            "mean_top_cosine": mean("top_cosine"), "mean_recall": mean("recall"), "llm_calls": llm_calls,
            "llm_cache_hits": llm_cache_hits, "n_docs_never_retrieved": n_never,
            "n_docs_always_irrelevant": n_irrelevant_docs}


def append_history(path, row: dict) -> pd.DataFrame:
    """Append `row` as a JSON line to `path` and return every line so far as a frame, oldest first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
