"""Tier 1: clustering, naming, trend and the segment table on tiny inline data."""
import numpy as np
import pandas as pd
import pytest

from assets.monitoring.segments import (cluster_queries, log_days, relabel_by_size, segment_names, segment_table,
                                        segments_figure, sum_daily, top_terms, weekly_trend)


def _two_topics(n_a: int = 6, n_b: int = 4, seed: int = 0) -> np.ndarray:
    """Unit vectors around two orthogonal directions, a little noise."""
    rng = np.random.default_rng(seed)
    a = np.array([1.0, 0, 0, 0]) + 0.05 * rng.standard_normal((n_a, 4))
    b = np.array([0, 0, 1.0, 0]) + 0.05 * rng.standard_normal((n_b, 4))
    v = np.vstack([a, b])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_clustering_separates_two_obvious_topics_and_chooses_two():
    labels, silhouette = cluster_queries(_two_topics(), n_segments=0, max_segments=5)
    assert labels.tolist() == [0] * 6 + [1] * 4          # numbered by size: the six-query topic is segment 0
    assert silhouette is not None and silhouette > 0.8


def test_a_fixed_number_of_segments_is_used_and_bounded_by_the_queries():
    labels, _ = cluster_queries(_two_topics(), n_segments=3)
    assert len(set(labels.tolist())) == 3
    labels, silhouette = cluster_queries(_two_topics(1, 1), n_segments=5)
    assert sorted(labels.tolist()) == [0, 1] and silhouette is None   # 2 queries: at most 2 segments, no silhouette


@pytest.mark.parametrize("n", [0, 1, 2])
def test_zero_one_or_two_queries_do_not_crash(n):
    labels, silhouette = cluster_queries(_two_topics(6, 4)[:n])
    assert labels.tolist() == [0] * n and silhouette is None


def test_identical_queries_make_one_segment():
    labels, silhouette = cluster_queries(np.tile([[1.0, 0.0]], (5, 1)))
    assert labels.tolist() == [0] * 5 and silhouette is None


def test_relabel_by_size_numbers_the_largest_first():
    assert relabel_by_size(np.array([7, 3, 3, 7, 3, 9])).tolist() == [1, 0, 0, 1, 0, 2]
    assert relabel_by_size(np.array([5, 2])).tolist() == [0, 1]   # a tie: first seen first


def test_segments_are_named_by_their_own_top_terms_without_stop_words():
    texts = ["what is the stall angle of a wing", "wing stall at high angle", "how does a wing stall",
             "nozzle thrust at the throat", "choked nozzle throat flow"]
    terms = top_terms(texts, np.array([0, 0, 0, 1, 1]), n_terms=2)
    assert terms == {0: ["stall", "wing"], 1: ["nozzle", "throat"]}
    assert segment_names(terms) == {0: "stall / wing", 1: "nozzle / throat"}


def test_a_term_every_segment_shares_does_not_name_any():
    texts = ["nozzle experiments", "throat experiments", "wing experiments", "stall experiments"]
    terms = top_terms(texts, np.array([0, 0, 1, 1]), n_terms=3)
    assert terms == {0: ["nozzle", "throat"], 1: ["stall", "wing"]}   # "experiments" is in all: it tells nothing


def test_names_prefer_the_llm_and_fall_back_and_never_repeat():
    terms = {0: ["lift"], 1: [], 2: ["lift"]}
    assert segment_names(terms, {0: None, 1: "Drag questions"}) == {0: "lift", 1: "Drag questions", 2: "lift (2)"}
    assert segment_names({0: []}) == {0: "segment 1"}
    assert top_terms(["the", "a of"], np.array([0, 1])) == {0: [], 1: []}   # only stop words


def test_trend_recovers_a_known_slope():
    days = pd.date_range("2026-01-01", periods=14, freq="D")
    daily = {d.strftime("%Y-%m-%d"): 10 + 2 * i for i, d in enumerate(days)}   # +2 a day, mean 23
    assert weekly_trend(daily, days) == pytest.approx(7 * 2 / 23)
    flat = {d.strftime("%Y-%m-%d"): 5 for d in days}
    assert weekly_trend(flat, days) == pytest.approx(0.0, abs=1e-9)
    falling = {k: 40 - v for k, v in daily.items()}
    assert weekly_trend(falling, days) < 0


def test_trend_counts_missing_days_as_zero_and_is_null_without_dates():
    days = log_days([{"2026-01-01": 3}, {"2026-01-05": 1, "2026-01-03": 2}])
    assert [d.day for d in days] == [1, 2, 3, 4, 5]
    assert weekly_trend({"2026-01-05": 10}, days) > 0          # all its traffic at the end: growing
    assert weekly_trend({}, days) is None                     # no traffic at all
    assert weekly_trend({"2026-01-01": 3}, log_days([{"2026-01-01": 3}])) is None   # one day
    assert len(log_days([{}, {}])) == 0
    assert sum_daily([{"a": 1}, {"a": 2, "b": 1}, {}]) == {"a": 3, "b": 1}


def _queries() -> pd.DataFrame:
    return pd.DataFrame({"query_id": ["q1", "q2", "q3", "q4"],
                         "text": ["wing stall", "stall angle", "nozzle", "throat"],
                         "n_interactions": [6, 2, 1, 1], "segment": [0, 0, 1, 1],
                         "daily": [{"2026-01-01": 6}, {"2026-01-08": 2}, {"2026-01-01": 1}, {"2026-01-08": 1}]})


def test_the_segment_table_counts_traffic_precision_and_recall():
    table = segment_table(_queries(), {0: "wings", 1: "nozzles"}, {0: ["stall"], 1: ["nozzle"]},
                          precision={"q1": 0.2, "q2": 0.4, "x": 1.0}, recall={"q3": 1.0, "q4": float("nan")})
    wings, nozzles = table.to_dict("records")
    assert (wings["name"], wings["n_queries"], wings["share"], wings["query_share"]) == ("wings", 2, 0.8, 0.5)
    assert wings["precision"] == pytest.approx(0.3) and wings["n_judged_queries"] == 2 and pd.isna(wings["recall"])
    assert pd.isna(nozzles["precision"]) and nozzles["recall"] == 1.0 and nozzles["n_labelled_queries"] == 1
    assert wings["examples"] == ["wing stall", "stall angle"]            # most frequent first
    assert wings["trend"] < 0 and nozzles["trend"] == pytest.approx(0.0)   # 6 then 2 a week; 1 and 1


def test_the_plot_draws_every_segment():
    table = segment_table(_queries(), {0: "wings", 1: "nozzles"}, {0: [], 1: []}, {"q1": 0.5}, {})
    fig = segments_figure(table)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["wings", "nozzles"]
    import matplotlib.pyplot as plt

    plt.close(fig)
