"""Tier 1: the learning curve's pure logic (nested subsets, sizes, summary, MLflow series, plot)."""
import numpy as np
import pandas as pd
import pytest

from assets.evaluation.scoring import QuerySet
from assets.training.curve import (mlflow_series, nested_subset, plot_curve, points_frame, score_model, summarize,
                                   summary_markdown, usable_sizes)


def _train(n_queries=30):
    """Queries with 1..3 rows each, so subsets must keep a query's rows together."""
    rows = [{"query_id": f"q{i}", "split": "train", "anchor": f"a{i}", "row": r}
            for i in range(n_queries) for r in range(1 + i % 3)]
    return pd.DataFrame(rows)


def test_subsets_are_nested_keep_whole_queries_and_stay_within_the_size():
    train = _train()
    for seed in (0, 1):
        previous: set = set()
        for size in (5, 12, 25, 50):
            subset = nested_subset(train, size, seed)
            queries = set(subset["query_id"])
            assert previous <= queries and len(queries) > len(previous)
            assert len(subset) <= size
            assert len(subset) == int(train["query_id"].isin(queries).sum())   # every row of a chosen query
            previous = queries
    assert set(nested_subset(train, 12, 0)["query_id"]) != set(nested_subset(train, 12, 1)["query_id"])
    assert nested_subset(train, 12, 0).equals(nested_subset(train.sample(frac=1, random_state=3), 12, 0).loc[
        nested_subset(train, 12, 0).index])   # the order of the rows does not matter


def test_a_size_below_one_query_still_gets_that_query():
    train = _train()
    subset = nested_subset(train, 1, 0)
    assert subset["query_id"].nunique() == 1


def test_sizes_the_train_split_cannot_fill_are_dropped():
    assert usable_sizes([500, 100, 100, 250, 1], 300) == ([100, 250], [1, 500])
    assert usable_sizes([300], 300) == ([], [300])   # the "all" point is that size already


def _points():
    rows = []
    for s in ("synthetic/validation", "human/x/test"):
        rows.append({"size": 0, "seed": None, "query_set": s, "kind": "baseline", "n_examples": 0, "n_queries": 5,
                     "ndcg@10": 0.3, "recall@10": 0.5})
        for size, base in ((4, 0.32), (8, 0.36)):
            for seed, jitter in ((0, -0.01), (1, 0.01)):
                rows.append({"size": size, "seed": seed, "query_set": s, "kind": "subset", "n_examples": size,
                             "n_queries": 5, "ndcg@10": base + jitter, "recall@10": base + 0.2 + jitter})
        rows.append({"size": 20, "seed": 42, "query_set": s, "kind": "full", "n_examples": 20, "n_queries": 5,
                     "ndcg@10": 0.4, "recall@10": 0.6})
    return points_frame(rows)


def test_summary_has_a_row_per_set_and_size_with_the_spread_over_seeds():
    points = _points()
    assert points["seed"].isna().sum() == 2 and str(points["seed"].dtype) == "Int64"
    summary = summarize(points)
    assert len(summary) == 2 * 4   # baseline, 4, 8, all for each set
    row = summary[(summary["query_set"] == "human/x/test") & (summary["size"] == 8)].iloc[0]
    assert row["n_seeds"] == 2 and row["kind"] == "subset"
    assert row["ndcg@10_mean"] == pytest.approx(0.36)
    assert (row["ndcg@10_min"], row["ndcg@10_max"]) == pytest.approx((0.35, 0.37))
    assert summary.loc[summary["kind"] == "full", "ndcg@10_std"].eq(0).all()   # one seed: no spread
    assert list(summary[summary["query_set"] == "human/x/test"]["size"]) == [0, 4, 8, 20]
    table = summary_markdown(summary)
    assert "0 (base model)" in table and "20 (all)" in table and "0.350..0.370" in table
    assert summary_markdown(summarize(points_frame([]))) == "_(no points)_"


def test_mlflow_series_is_one_curve_per_set_and_metric_with_the_base_model_at_step_zero():
    series = mlflow_series(summarize(_points()))
    names = {name for name, _, _ in series}
    assert names == {f"learning_curve.{s}.{m}" for s in ("synthetic.validation", "human.x.test")
                     for m in ("ndcg_at_10", "recall_at_10")}
    curve = sorted((step, v) for name, v, step in series if name == "learning_curve.human.x.test.ndcg_at_10")
    assert [step for step, _ in curve] == [0, 4, 8, 20]
    assert [v for _, v in curve] == pytest.approx([0.3, 0.32, 0.36, 0.4])


def test_the_plot_is_a_png(tmp_path):
    path = plot_curve(_points(), tmp_path / "reports" / "curve.png", title="tiny")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_score_model_encodes_the_chunks_once_and_scores_every_set():
    calls = []

    def encode(texts):
        calls.append(len(texts))
        return np.array([[0, 1] if t in ("up", "c text") else [1, 0] for t in texts], dtype="float32")

    sets = {"s": QuerySet("s", "synthetic", {"q1": "up", "q2": "right"}, {"q1": {"c": 1}, "q2": {"c": 1}}, None)}
    [row] = score_model(encode, sets, ["a", "c"], ["a text", "c text"])
    assert row["query_set"] == "s" and row["n_queries"] == 2
    assert row["recall@10"] == 1.0 and 0.5 < row["ndcg@10"] < 1.0   # q2 finds c second
    assert calls == [2, 2]   # the two chunks, then the two queries
