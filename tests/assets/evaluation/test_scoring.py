"""Tier 1: query sets and exact dense scoring in memory."""
import numpy as np
import pandas as pd
import pytest

from assets.evaluation.scoring import QuerySet, build_query_sets, dense_hits, dense_per_query, score_hits


def test_dense_hits_are_the_exact_cosine_order():
    ids = ["a", "b", "c"]
    chunks = np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype="float32")
    hits = dense_hits(np.array([[0, 1], [1, 0]], dtype="float32"), ids, chunks, k=2)
    assert [c for c, _ in hits[0]] == ["c", "b"]
    assert [c for c, _ in hits[1]] == ["a", "b"]
    assert hits[1][1][1] == pytest.approx(0.6)
    assert dense_hits(np.zeros((1, 2)), [], np.zeros((0, 2)), 5) == [[]]


def test_document_sets_rank_a_document_at_its_best_chunk():
    qs = QuerySet("human/x", "human", {"q": "t"}, {"q": {"d2": 2}}, {"c1": "d1", "c2": "d2", "c3": "d2"})
    pq = score_hits(qs, [[("c2", 0.9), ("c1", 0.8), ("c3", 0.7)]])
    assert pq.loc[0, "accuracy@1"] == 1.0 and pq.loc[0, "recall@3"] == 1.0
    assert qs.depth > 100   # several chunks of one document collapse: fetch more chunks than documents scored


def test_build_query_sets_keeps_the_split_and_every_human_set():
    from assets.corpus.readers import HumanQuerySet

    splits = pd.DataFrame({"query_id": ["q1", "q2"], "text": ["a", "b"], "split": ["test", "train"],
                           "positives": [["c1"], ["c2"]]})
    human = [HumanQuerySet(name="tiny/test", queries={"h": "x"}, qrels={"h": {"d": 1}})]
    chunks = pd.DataFrame({"chunk_id": ["c1", "c2"], "doc_id": ["d", "d"]})
    sets = build_query_sets(splits, human, chunks)
    assert list(sets) == ["synthetic/test", "human/tiny/test"]
    assert sets["synthetic/test"].qrels == {"q1": {"c1": 1}}
    assert sets["human/tiny/test"].chunk_to_doc is not None


def test_dense_per_query_scores_the_encoded_queries():
    qs = QuerySet("s", "synthetic", {"q1": "up", "q2": "right"}, {"q1": {"c": 1}, "q2": {"a": 1}}, None)
    encode = lambda texts: np.array([[0, 1] if t == "up" else [1, 0] for t in texts], dtype="float32")  # noqa: E731
    pq = dense_per_query(qs, encode, ["a", "c"], np.array([[1, 0], [0, 1]], dtype="float32"))
    assert list(pq["qid"]) == ["q1", "q2"] and pq["ndcg@10"].tolist() == [1.0, 1.0]
