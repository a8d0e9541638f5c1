"""Tier 1: every retriever against its baseline, paired by query id."""
import numpy as np
import pandas as pd
import pytest

from assets.evaluation.comparisons import (add_comparisons, baseline_of, compare_to_baselines, comparison_metrics,
                                           comparisons_markdown, reranker_verdict, reranker_verdict_markdown)


@pytest.mark.parametrize("retriever, baseline", [
    ("bm25", None), ("dense_base", "bm25"), ("hybrid_base", "bm25"),
    ("dense_finetuned", "dense_base"), ("hybrid_finetuned", "hybrid_base"),
    ("dense_distilled", "dense_base"), ("hybrid_distilled", "hybrid_base"),
    ("dense_adapter", "dense_base"), ("hybrid_adapter", "hybrid_base"),
    ("bm25_expanded", "bm25"), ("hybrid_expanded", "hybrid_base"), ("hybrid_learned", "hybrid_base"),
    ("hybrid_finetuned+rerank_offtheshelf", "hybrid_finetuned"), ("bm25+rerank_finetuned", "bm25"),
    ("something_new", None),
])
def test_each_retriever_has_the_baseline_it_should_beat(retriever, baseline):
    assert baseline_of(retriever) == baseline


def _rows(scores: dict[str, list[float]], qids=None, query_set="s") -> pd.DataFrame:
    frames = []
    for retriever, values in scores.items():
        ids = qids or [f"q{i}" for i in range(len(values))]
        frames.append(pd.DataFrame({"query_set": query_set, "retriever": retriever, "qid": ids, "ndcg@10": values}))
    return pd.concat(frames, ignore_index=True)


def test_pairs_by_query_id_not_by_row_order():
    base = [0.1, 0.2, 0.3, 0.4]
    rows = pd.concat([_rows({"dense_base": base}),
                      _rows({"dense_finetuned": [0.4 + 0.5, 0.3 + 0.5, 0.2 + 0.5, 0.1 + 0.5]},
                            qids=["q3", "q2", "q1", "q0"])])      # same queries, listed backwards
    [(name, c)] = compare_to_baselines(rows, resamples=500).items()
    assert name == "dense_finetuned" and c["baseline"] == "dense_base" and c["n_paired"] == 4
    assert c["delta_ndcg@10"] == pytest.approx(0.5) and c["ci95"] == pytest.approx([0.5, 0.5])
    assert c["p_value"] == pytest.approx(2 / 16)     # four wins, exact: the two all-same-sign patterns of 2^4


def test_retrievers_without_a_baseline_row_are_left_out():
    rows = _rows({"bm25": [0.1, 0.2], "dense_finetuned": [0.3, 0.1]})    # no dense_base in the rows
    assert compare_to_baselines(rows) == {}


def test_add_comparisons_fills_each_set_and_mlflow_gets_flat_numbers():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.5, 30)
    rows = pd.concat([_rows({"bm25": base, "dense_base": base + 0.3}, query_set="a"),
                      _rows({"bm25": base, "dense_base": base}, query_set="b")])
    report = {"query_sets": {s: {"retrievers": {"bm25": {"ndcg@10": 0.0}, "dense_base": {"ndcg@10": 0.0}}}
                             for s in ("a", "b")}}
    add_comparisons(report, rows, resamples=1000)
    a, b = report["query_sets"]["a"]["retrievers"], report["query_sets"]["b"]["retrievers"]
    assert "baseline" not in a["bm25"]
    assert a["dense_base"]["ci95"][0] > 0 and a["dense_base"]["p_value"] < 0.001
    assert b["dense_base"]["delta_ndcg@10"] == 0.0 and b["dense_base"]["p_value"] == 1.0
    flat = comparison_metrics(a["dense_base"])
    assert set(flat) == {"delta_ndcg@10", "delta_ndcg@10_ci95_lo", "delta_ndcg@10_ci95_hi", "delta_ndcg@10_p_value"}
    assert comparison_metrics(a["bm25"]) == {}
    table = comparisons_markdown(report)
    assert "| a | dense_base | bm25 | 30 | +0.300 |" in table and "better" in table
    assert "| b | dense_base | bm25 | 30 | +0.000 | [+0.000, +0.000] | 1 | no clear difference |" in table


def test_mlflow_gets_every_comparison_under_a_valid_stable_name():
    import re

    from assets.evaluation import mlflow_metrics

    report = {"query_sets": {"human/cran/test": {"retrievers": {
        "bm25": {"ndcg@10": 0.3, "search_ms_per_query": 1.0},
        "bm25+rerank_finetuned": {"ndcg@10": 0.4, "baseline": "bm25", "delta_ndcg@10": 0.1, "ci95": [0.05, 0.15],
                                  "p_value": 0.002, "n_paired": 9}}}}}
    metrics = mlflow_metrics(report)
    assert metrics["human.cran.test.bm25.rerank_finetuned.delta_ndcg_at_10"] == 0.1
    assert metrics["human.cran.test.bm25.rerank_finetuned.delta_ndcg_at_10_ci95_lo"] == 0.05
    assert metrics["human.cran.test.bm25.rerank_finetuned.delta_ndcg_at_10_p_value"] == 0.002
    assert "human.cran.test.bm25.ndcg_at_10" in metrics and not any("n_paired" in k for k in metrics)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-/]+", k) for k in metrics)


def test_a_verdict_needs_the_interval_and_the_p_value_to_agree():
    from assets.evaluation.comparisons import verdict

    assert verdict({"ci95": [0.01, 0.2], "p_value": 0.01}) == "better"
    assert verdict({"ci95": [-0.2, -0.01], "p_value": 0.04}) == "worse"
    assert verdict({"ci95": [-0.25, -0.03], "p_value": 0.125}) == "no clear difference"   # 12 queries, exact p
    assert verdict({"ci95": [-0.01, 0.2], "p_value": 0.01}) == "no clear difference"


def _report(per_query: pd.DataFrame, kinds: dict[str, str]) -> dict:
    means = per_query.groupby(["query_set", "retriever"])["ndcg@10"].mean()
    report = {"query_sets": {name: {"kind": kind, "retrievers": {r: {"ndcg@10": float(means[(name, r)])}
                                                                 for r in per_query.loc[per_query["query_set"] == name,
                                                                                        "retriever"].unique()}}
                             for name, kind in kinds.items()}}
    add_comparisons(report, per_query, resamples=2000)
    return report


def test_reranker_verdict_holds_a_reranker_that_hurts_the_best_first_stage():
    rng = np.random.default_rng(0)
    hybrid = rng.uniform(0.3, 0.9, 40)
    per_query = pd.concat([
        _rows({"bm25": hybrid - 0.2, "hybrid_finetuned": hybrid, "bm25+rerank_finetuned": hybrid - 0.1,
               "hybrid_finetuned+rerank_finetuned": hybrid - 0.2 - rng.uniform(0, 0.05, 40),
               "hybrid_finetuned+rerank_offtheshelf": hybrid + 0.05}, query_set="human"),
        _rows({"hybrid_finetuned": hybrid, "hybrid_finetuned+rerank_finetuned": hybrid + 0.3}, query_set="synthetic")])
    v = reranker_verdict(_report(per_query, {"human": "human", "synthetic": "synthetic"}), per_query, resamples=2000)
    assert v["ship"] is False and v["judged_on"] == "human" and list(v["sets"]) == ["human"]   # not the synthetic win
    e = v["sets"]["human"]
    assert e["first_stage"] == "hybrid_finetuned"                 # the best first stage, not bm25
    assert e["vs_first_stage"]["verdict"] == "worse" and e["vs_offtheshelf"]["verdict"] == "worse"
    assert e["vs_offtheshelf"]["delta_ndcg@10"] == pytest.approx(e["ndcg@10"]["finetuned"] - (hybrid.mean() + 0.05),
                                                                 abs=1e-5)
    assert "do not ship" in reranker_verdict_markdown(v) and "hybrid_finetuned+rerank worse" in v["reason"]


def test_reranker_verdict_ships_a_reranker_better_on_every_judged_set_and_falls_back_to_synthetic():
    rng = np.random.default_rng(1)
    first = rng.uniform(0.2, 0.6, 30)
    per_query = _rows({"dense_base": first, "dense_base+rerank_finetuned": first + rng.uniform(0.05, 0.2, 30)},
                      query_set="synthetic/test")
    v = reranker_verdict(_report(per_query, {"synthetic/test": "synthetic"}), per_query, resamples=2000)
    assert v["ship"] is True and v["judged_on"] == "synthetic"
    assert "vs_offtheshelf" not in v["sets"]["synthetic/test"] and "ship it" in reranker_verdict_markdown(v)
    assert reranker_verdict({"query_sets": {}}, per_query.iloc[:0])["ship"] is False


def test_a_hostile_query_set_name_is_text_in_the_tables():
    """Human set names come from the corpus's qrels file names: they render as typed, never as markup."""
    from tests.conftest import render_markdown

    name = "human/[x](javascript:alert(1))<b>"
    base = np.random.default_rng(2).uniform(0, 0.5, 10)
    per_query = pd.concat([_rows({"bm25": base, "dense_base": base + 0.1, "bm25+rerank_finetuned": base + 0.2},
                                 query_set=name)])
    report = _report(per_query, {name: "human"})
    for md in (comparisons_markdown(report), reranker_verdict_markdown(reranker_verdict(report, per_query, 500))):
        markup, html = render_markdown(md)
        assert markup <= {"strong_open"} and "human/[x](javascript:alert(1))&lt;b&gt;" in html, md   # bold: ours


def test_reranker_verdict_does_not_compare_against_a_row_that_lost_pairs():
    """The off-the-shelf (LLM) reranker lost pairs to failed calls on the best stage: that comparison is
    skipped and said so, not reported as a win over a weakened row; a weakened fine-tuned row is not judged."""
    rng = np.random.default_rng(2)
    first = rng.uniform(0.3, 0.7, 30)
    per_query = _rows({"bm25": first - 0.1, "hybrid_finetuned": first,
                       "bm25+rerank_finetuned": first, "hybrid_finetuned+rerank_finetuned": first + 0.1,
                       "hybrid_finetuned+rerank_offtheshelf": first - 0.05}, query_set="human")
    report = _report(per_query, {"human": "human"})
    rows = report["query_sets"]["human"]["retrievers"]
    rows["hybrid_finetuned+rerank_offtheshelf"]["rerank_failures"] = 7
    v = reranker_verdict(report, per_query, resamples=2000)
    e = v["sets"]["human"]
    assert e["first_stage"] == "hybrid_finetuned" and "vs_offtheshelf" not in e
    assert e["skipped"] == {"hybrid_finetuned+rerank_offtheshelf": 7}
    assert "skipped hybrid_finetuned+rerank_offtheshelf (7 pairs lost to reranker failures)" in v["reason"]
    assert "lost 7 pairs" in reranker_verdict_markdown(v)

    rows["hybrid_finetuned+rerank_finetuned"]["rerank_failures"] = 2          # now the best stage's own row
    v = reranker_verdict(report, per_query, resamples=2000)
    assert v["sets"]["human"]["first_stage"] == "bm25"                        # judged where it was whole
    assert v["sets"]["human"]["skipped"]["hybrid_finetuned+rerank_finetuned"] == 2
    rows["bm25+rerank_finetuned"]["rerank_failures"] = 1
    v = reranker_verdict(report, per_query, resamples=2000)
    assert v["ship"] is False and v["sets"] == {} and "every fine-tuned reranker row lost pairs" in v["reason"]


def test_the_comparisons_table_marks_a_weakened_reranked_row():
    report = {"query_sets": {"a": {"retrievers": {
        "bm25+rerank_offtheshelf": {"baseline": "bm25", "delta_ndcg@10": -0.1, "ci95": [-0.2, -0.05], "p_value": 0.01,
                                    "n_paired": 9, "rerank_failures": 4}}}}}
    assert "| worse (4 pairs unscored: reranker failures) |" in comparisons_markdown(report)
