"""Tier 1: the review queue's pure functions on tiny inline data."""
import math

import pandas as pd

from assets.monitoring.review import (append_history, doc_recall, document_view, history_row, judge_requests,
                                      positive_docs, precision_at_k, review_rows, review_sample, sort_queue,
                                      top_rerank_scores)


def _log(n: int) -> pd.DataFrame:
    return pd.DataFrame({"query_id": [f"log-{i}" for i in range(n)], "text": [f"query {i}" for i in range(n)],
                         "n_interactions": [1] * n, "source": ["log"] * n})


def test_the_sample_is_the_same_on_a_rerun_and_a_superset_when_the_cap_grows():
    log = _log(100)
    first = review_sample(log, share=0.2, cap=10, seed=0)
    assert len(first) == 10
    shuffled = log.sample(frac=1, random_state=3)                          # the log's row order does not matter
    assert review_sample(shuffled, 0.2, 10, 0)["query_id"].tolist() == first["query_id"].tolist()
    bigger = review_sample(log, share=0.2, cap=15, seed=0)
    assert len(bigger) == 15 and set(first["query_id"]) < set(bigger["query_id"])
    assert set(review_sample(log, 0.2, 10, seed=1)["query_id"]) != set(first["query_id"])   # the seed matters


def test_a_growing_log_keeps_last_weeks_picks():
    week1 = review_sample(_log(100), share=0.2, cap=0)
    week2 = review_sample(_log(300), share=0.2, cap=0)   # the same 100 queries plus 200 new ones
    assert set(week1["query_id"]) <= set(week2["query_id"])
    assert len(week2) >= math.ceil(0.2 * 300)


def test_small_logs_still_get_their_share_and_empty_ones_nothing():
    assert len(review_sample(_log(3), share=0.2, cap=200)) == 1       # ceil(0.6): one query, not zero
    assert len(review_sample(_log(3), share=1.0, cap=200)) == 3
    assert review_sample(_log(0), share=0.2, cap=200).empty
    assert review_sample(_log(5), share=0.0, cap=200).empty


def test_precision_counts_judged_hits_only_and_recall_is_at_document_level():
    assert precision_at_k([3, 2, 1, 0], relevant_grade=2) == 0.5
    assert precision_at_k([3, None, 0], relevant_grade=2) == 0.5      # an ungraded hit is not a miss
    assert precision_at_k([1, 1], relevant_grade=1) == 1.0
    assert precision_at_k([None, None]) is None and precision_at_k([]) is None
    assert doc_recall(["d1", "d1", "d3"], {"d1", "d2"}) == 0.5
    assert doc_recall(["d1"], set()) is None


def test_positive_docs_come_from_positive_pairs_only():
    pairs = pd.DataFrame({"query_id": ["q1", "q1", "q2"], "doc_id": ["a", "b", "c"],
                          "label": ["positive", "negative", "positive"]})
    assert positive_docs(pairs) == {"q1": {"a"}, "q2": {"c"}}
    assert positive_docs(pairs.iloc[:0]) == {}


def test_judge_requests_pair_each_query_with_its_hits_and_no_source():
    queries = pd.DataFrame({"text": ["lift of wings", "heat"]})
    reqs = judge_requests(queries, [[("c1", 0.9), ("c2", 0.5)], [("c3", 0.4), ("gone", 0.1)]],
                          {"c1": "p1", "c2": "p2", "c3": "p3"})
    assert [(r.query, r.chunk_id, r.passage, r.source_chunk_id) for r in reqs] == [
        ("lift of wings", "c1", "p1", None), ("lift of wings", "c2", "p2", None), ("heat", "c3", "p3", None)]


def _queue() -> pd.DataFrame:
    queries = pd.DataFrame({"query_id": ["a", "b", "c", "d", "e"], "text": ["ta", "tb", "tc", "td", "te"],
                            "n_interactions": [5, 4, 3, 2, 1], "source": ["log"] * 5})
    hits = [[("a1", 0.9)], [("b1", 0.8)], [("c1", 0.7)], [("d1", 0.6)], [("e1", 0.5)]]
    grades = {("ta", "a1"): 3, ("tb", "b1"): 0, ("tc", "c1"): 0, ("td", "d1"): 0}   # e's hit was not graded
    cosine = [0.9, 0.8, 0.3, 0.3, 0.5]
    rerank = [1.0, 2.0, 0.5, -1.0, None]
    doc_of = {"a1": "A", "b1": "B", "c1": "C", "d1": "C", "e1": "E"}
    return review_rows(queries, hits, cosine, grades, rerank, doc_of, {"a": {"A", "Z"}})


def test_review_rows_hold_precision_recall_and_the_grades():
    rows = _queue().set_index("query_id")
    assert rows.loc["a", "precision"] == 1.0 and rows.loc["b", "precision"] == 0.0
    assert pd.isna(rows.loc["e", "precision"]) and rows.loc["e", "grades"] == [-1]
    assert rows.loc["a", "recall"] == 0.5 and rows.loc["a", "n_positive_docs"] == 2
    assert pd.isna(rows.loc["b", "recall"])
    assert rows.loc["d", "hit_docs"] == ["C"]


def test_the_queue_is_worst_first_precision_then_cosine_then_reranker():
    order = sort_queue(_queue())["query_id"].tolist()
    # precision 0 for b, c, d: c and d have the lower cosine (0.3) and d the lower reranker score; a is fine;
    # e, never graded, goes last
    assert order == ["d", "c", "b", "a", "e"]


def test_documents_never_retrieved_and_always_irrelevant():
    never, bad = document_view(_queue(), ["A", "B", "C", "E", "F", "G"])
    assert never == ["F", "G"]
    assert bad.to_dict("records") == [{"doc_id": "C", "times_retrieved": 2, "best_grade": 0},
                                      {"doc_id": "B", "times_retrieved": 1, "best_grade": 0}]   # E: never graded


def test_top_rerank_scores_take_the_best_hit_and_are_null_without_a_reranker():
    class Reranker:
        def score(self, query, passages):
            return [len(text) if text != "skip" else None for _, text in passages], True

    hits = [[("c1", 0.0), ("c2", 0.0)], [("c3", 0.0)], []]
    text = {"c1": "abc", "c2": "abcdef", "c3": "skip"}
    assert top_rerank_scores(Reranker(), ["q1", "q2", "q3"], hits, text) == [6, None, None]
    assert top_rerank_scores(None, ["q1", "q2"], hits, text) == [None, None]


def test_the_history_grows_one_row_per_run(tmp_path):
    queue = _queue()
    row = history_row(queue, "2026-01-05", n_logged=50, low_precision=0.5, llm_calls=4, llm_cache_hits=1,
                      n_never=2, n_irrelevant_docs=2)
    assert (row["n_sampled"], row["n_low_precision"], row["mean_precision"]) == (5, 3, 0.25)
    path = tmp_path / "reports" / "review_history.jsonl"
    append_history(path, row)
    history = append_history(path, {**row, "date": "2026-01-12", "n_sampled": 6})
    assert history["date"].tolist() == ["2026-01-05", "2026-01-12"] and history["n_sampled"].tolist() == [5, 6]


def test_history_of_an_empty_queue_has_nulls_not_nans():
    row = history_row(_queue().iloc[:0], "d", 0, 0.5, 0, 0, 0, 0)
    assert row["mean_precision"] is None and row["n_low_precision"] == 0


def test_sample_size_follows_share_and_cap():
    from assets.common import stable_fraction

    below = sum(stable_fraction(f"log-{i}") < 0.5 for i in range(20))
    assert len(review_sample(_log(20), 0.5, 0)) == max(below, 10)
    assert len(review_sample(_log(20), 0.5, 4)) == 4
    assert len(review_sample(_log(20), 1.0, 0)) == 20
