"""The reranking stage: reorder a first stage's top-k with a reranker, and time it.

A reranker is anything with `score(query, [(chunk_id, passage), ...]) -> [score | None, ...]` (higher = more
relevant): the fine-tuned cross-encoder, a hub cross-encoder, or the local LLM's query likelihood (UPR,
Sachan et al. 2022: log P(query | passage) as a zero-shot reranker). Each (query, chunk) pair is scored once
per query set and reused by every first stage whose top-k contains it. Latency per query is the measured
cost of one pair in that query's batch times the k pairs a reranker would score in service.

A pair the reranker could not score (an LLM call that failed or was unreadable) keeps its first-stage place
below the scored ones, so the row is weaker than the reranker: each reranked row counts those pairs as
`rerank_failures`, and the reranker verdict does not compare against a row that has any.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Reranker(Protocol):
    name: str

    def score(self, query: str, passages: list[tuple[str, str]]) -> tuple[list[float | None], bool]:
        """Scores in passage order (None where a pair could not be scored) and whether the cost was measured
        (False when some scores came from a cache, so the time says nothing about a reranker in service)."""
        ...


@dataclass
class CrossEncoderReranker:
    model: object                     # a sentence_transformers CrossEncoder
    name: str = "cross-encoder"
    batch_size: int = 32

    def score(self, query, passages):
        if not passages:
            return [], True
        out = self.model.predict([(query, text) for _, text in passages], batch_size=self.batch_size,
                                 convert_to_numpy=True, show_progress_bar=False)
        return [float(s) for s in np.asarray(out).reshape(-1)], True


@dataclass
class LLMReranker:
    """Query likelihood (local model) or the chat judge's grade (endpoint), through the LLM resource's cache."""
    llm: object
    name: str = "upr"
    failures: int = 0
    calls: int = 0          # LLM calls paid for (run_stats sums them with every other stage's)
    cache_hits: int = 0

    def score(self, query, passages):
        from resources.llm import JudgeRequest

        requests = [JudgeRequest(query=query, chunk_id=cid, passage=text) for cid, text in passages]
        judgments, stats = self.llm.judge(requests)
        self.failures += stats.failures + stats.parse_failures
        self.calls += stats.calls
        self.cache_hits += stats.cache_hits
        by_chunk = {j.chunk_id: j.score for j in judgments}
        return [by_chunk.get(cid) for cid, _ in passages], stats.cache_hits == 0


def rerank(hits: list[tuple[str, float]], scores: dict[str, float | None], k: int) -> list[tuple[str, float]]:
    """The top k hits reordered by `scores` (unscored pairs after the scored ones, ties in first-stage order),
    then the rest of the hits as they were. Returned scores are rank-based, so MaxP keeps this order."""
    head = hits[:k]
    order = sorted(range(len(head)), key=lambda i: (scores.get(head[i][0]) is None,
                                                    -(scores.get(head[i][0]) or 0.0), i))
    ranked = [head[i][0] for i in order] + [c for c, _ in hits[k:]]
    return [(c, float(len(ranked) - r)) for r, c in enumerate(ranked)]


def unscored_pairs(qids: list[str], hits: list[list[tuple[str, float]]], scores: dict[str, dict[str, float | None]],
                   k: int) -> int:
    """How many (query, chunk) pairs of a first stage's top k the reranker left unscored."""
    return sum(scores.get(q, {}).get(c) is None for q, h in zip(qids, hits) for c, _ in h[:k])


@dataclass
class PairScores:
    """Every (query, chunk) score a reranker gave in one query set, and the per-query timings."""
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)   # query id -> chunk id -> score
    ms_per_pair: dict[str, float] = field(default_factory=dict)                # measured queries only


def score_candidates(reranker: Reranker, qids: list[str], texts: list[str], candidates: dict[str, list[str]],
                     chunk_text: dict[str, str]) -> PairScores:
    """Score each query's candidate union in one call, timing it."""
    out = PairScores()
    for qid, text in zip(qids, texts):
        chunk_ids = candidates.get(qid, [])
        t0 = time.perf_counter()
        values, measured = reranker.score(text, [(c, chunk_text[c]) for c in chunk_ids])
        seconds = time.perf_counter() - t0
        out.scores[qid] = dict(zip(chunk_ids, values))
        if measured and chunk_ids:
            out.ms_per_pair[qid] = 1000 * seconds / len(chunk_ids)
    return out


def latency_summary(ms_per_pair: dict[str, float], pairs_per_query: dict[str, int]) -> dict:
    """p50 / p95 of the reranking time per query (ms): the measured cost of a pair x the pairs reranked."""
    per_query = [ms_per_pair[q] * pairs_per_query.get(q, 0) for q in ms_per_pair]
    if not per_query:
        return {"rerank_ms_p50": None, "rerank_ms_p95": None, "rerank_timed_queries": 0}
    return {"rerank_ms_p50": round(float(np.percentile(per_query, 50)), 3),
            "rerank_ms_p95": round(float(np.percentile(per_query, 95)), 3),
            "rerank_timed_queries": len(per_query)}
