"""Tier 1: query attributes (style, document-length bucket) and the per-group breakdown."""
import pandas as pd
import pytest

from assets.evaluation.breakdown import (breakdown, breakdown_markdown, length_bucket, length_edges,
                                         query_attributes)
from assets.evaluation.scoring import QuerySet


def _documents() -> pd.DataFrame:
    # 1 to 9 words: tertiles at 3.67 and 6.33 words
    return pd.DataFrame({"doc_id": [f"d{n}" for n in range(1, 10)],
                         "text": [" ".join(["w"] * n) for n in range(1, 10)]})


def test_tertile_edges_cut_the_corpus_in_three():
    words = {f"d{n}": n for n in range(1, 10)}
    edges = length_edges(words)
    assert edges == pytest.approx([11 / 3, 19 / 3])
    assert [length_bucket(n, edges) for n in (1, 3, 4, 6, 7, 9)] == ["short"] * 2 + ["medium"] * 2 + ["long"] * 2
    assert length_bucket(None, edges) == "unknown"


def test_attributes_come_from_the_source_document_or_the_most_relevant_judged_one():
    splits = pd.DataFrame({"query_id": ["s1", "s2"], "doc_id": ["d1", "d9"], "style": ["question", "keywords"],
                           "split": ["test", "test"], "text": ["a", "b"], "positives": [["c1"], ["c9"]]})
    sets = {"synthetic/test": QuerySet("synthetic/test", "synthetic", {"s1": "a", "s2": "b"},
                                       {"s1": {"c1": 1}, "s2": {"c9": 1}}, None),
            "human/x": QuerySet("human/x", "human", {"h1": "q", "h2": "r"},
                                {"h1": {"d2": 1, "d8": 2, "d9": 2}, "h2": {"gone": 1}}, {})}
    attrs, edges = query_attributes(sets, splits, _documents())
    got = attrs.set_index(["query_set", "qid"])
    assert got.loc[("synthetic/test", "s1"), "style"] == "question"
    assert got.loc[("synthetic/test", "s1"), "doc_length_bucket"] == "short"
    assert got.loc[("synthetic/test", "s2"), "doc_length_bucket"] == "long"
    assert got.loc[("human/x", "h1"), "style"] == "human"
    assert got.loc[("human/x", "h1"), "doc_id"] == "d8"          # the first document of the highest grade
    assert got.loc[("human/x", "h2"), "doc_length_bucket"] == "unknown"
    assert edges == pytest.approx([11 / 3, 19 / 3])


def test_breakdown_averages_each_retriever_per_group_with_counts():
    pq = pd.DataFrame({"retriever": ["bm25"] * 3 + ["dense_base"] * 3, "qid": ["a", "b", "c"] * 2,
                       "ndcg@10": [1.0, 0.0, 0.5, 0.0, 1.0, 0.25],
                       "style": ["question", "keywords", "question"] * 2,
                       "doc_length_bucket": ["long", "short", "short"] * 2})
    bd = breakdown(pq)
    assert bd["by_style"]["question"] == {"n_queries": 2, "ndcg@10": {"bm25": 0.75, "dense_base": 0.125}}
    assert bd["by_style"]["keywords"]["ndcg@10"] == {"bm25": 0.0, "dense_base": 1.0}
    assert list(bd["by_doc_length"]) == ["short", "long"]        # bucket order, not alphabetical
    assert bd["by_doc_length"]["short"]["n_queries"] == 2
    table = breakdown_markdown("synthetic/test", bd)
    assert "| retriever | keywords (n=1) | question (n=2) | short (n=2) | long (n=1) | seen (n=0) | unseen (n=3) |" in table
    assert "| bm25 | 0.000 | 0.750 | 0.250 | 1.000 |  | 0.500 |" in table
    assert bd["by_feedback"]["seen"] == {"n_queries": 0, "ndcg@10": {}, "vs_baseline": {}}


def test_seen_and_unseen_queries_get_their_own_means_and_paired_deltas():
    pq = pd.DataFrame({"retriever": ["dense_base"] * 4 + ["dense_finetuned"] * 4, "qid": list("abcd") * 2,
                       "ndcg@10": [0.2, 0.4, 0.5, 0.5, 0.8, 0.9, 0.5, 0.4], "style": ["human"] * 8,
                       "doc_length_bucket": ["short"] * 8, "feedback": ["seen", "seen", "unseen", "unseen"] * 2})
    bd = breakdown(pq, resamples=2000)["by_feedback"]
    assert bd["seen"]["n_queries"] == 2 and bd["seen"]["ndcg@10"]["dense_finetuned"] == pytest.approx(0.85)
    seen, unseen = bd["seen"]["vs_baseline"]["dense_finetuned"], bd["unseen"]["vs_baseline"]["dense_finetuned"]
    assert seen["delta_ndcg@10"] == pytest.approx(0.55) and seen["n_paired"] == 2
    assert unseen["delta_ndcg@10"] == pytest.approx(-0.05) and unseen["baseline"] == "dense_base"


def test_the_seen_unseen_table_has_the_adapter_rows_only_when_the_report_has_them():
    from assets.evaluation.breakdown import feedback_markdown

    rows = ["dense_base", "dense_finetuned", "dense_adapter"]
    pq = pd.DataFrame({"retriever": [r for r in rows for _ in range(4)], "qid": list("abcd") * 3,
                       "ndcg@10": [0.2, 0.4, 0.5, 0.5, 0.8, 0.9, 0.5, 0.4, 0.3, 0.5, 0.5, 0.7], "style": ["human"] * 12,
                       "doc_length_bucket": ["short"] * 12, "feedback": ["seen", "seen", "unseen", "unseen"] * 3})
    qs = {"retrievers": {r: {} for r in rows}, "breakdown": breakdown(pq, resamples=2000)}
    text = feedback_markdown({"query_sets": {"human/x": qs}})
    assert "| human/x | dense_adapter | 2 | +0.100 [" in text and "| 2 | +0.100 [" in text.split("dense_adapter")[1]
    assert "hybrid_adapter" not in text and "| human/x | hybrid_finetuned | 2 | - |" not in text
    qs["retrievers"] = {"dense_base": {}, "dense_finetuned": {}}      # the adapter off: no row for it
    assert "dense_adapter" not in feedback_markdown({"query_sets": {"human/x": qs}})


def test_the_report_section_states_the_bucket_rule_before_the_tables():
    from assets.evaluation.breakdown import breakdowns_markdown

    pq = pd.DataFrame({"retriever": ["bm25"], "qid": ["a"], "ndcg@10": [1.0], "style": ["human"],
                       "doc_length_bucket": ["medium"]})
    report = {"doc_length_buckets": {"rule": "short <= 40 < medium <= 90 < long"},
              "query_sets": {"human/x": {"breakdown": breakdown(pq)}}}
    text = breakdowns_markdown(report)
    assert text.index("short <= 40 < medium <= 90 < long") < text.index("### human/x")
    assert "| bm25 | 1.000 | 1.000 |" in text
