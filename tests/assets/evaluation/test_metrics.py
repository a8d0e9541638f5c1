"""IR metrics: hand-checked cases, then agreement with trec_eval (pytrec_eval) on a random graded run."""

import math
import random

import pandas as pd
import pytest

from assets.evaluation.metrics import (
    METRIC_NAMES,
    accuracy_at_k,
    aggregate_to_documents,
    mean_metrics,
    mrr_at_k,
    ndcg_at_k,
    per_query_metrics,
    recall_at_k,
)

REL = {"a": 3, "b": 1, "c": 2, "z": 0}  # z judged not relevant


def test_recall():
    assert recall_at_k(["x", "a", "b"], REL, 1) == 0
    assert recall_at_k(["x", "a", "b"], REL, 2) == pytest.approx(1 / 3)
    assert recall_at_k(["x", "a", "b", "z"], REL, 10) == pytest.approx(2 / 3)
    assert recall_at_k(["a"], {"z": 0}, 10) == 0  # nothing relevant: 0, not a division by zero


def test_mrr_is_cut_at_k():
    assert mrr_at_k(["z", "x", "b"], REL, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["z", "x", "b"], REL, 2) == 0


def test_ndcg_linear_gains_ideal_from_all_labels():
    dcg = 1 / math.log2(2) + 3 / math.log2(3)  # b at 1, a at 2
    idcg = 3 + 2 / math.log2(3) + 1 / math.log2(4)  # a, c, b
    assert ndcg_at_k(["b", "a"], REL, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "c", "b"], REL, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "a"], REL, 1) == 0
    assert ndcg_at_k(["a"], {"a": 2}, 10) == 1.0


def test_accuracy():
    assert accuracy_at_k(["x", "b"], REL, 1) == 0
    assert accuracy_at_k(["x", "b"], REL, 3) == 1
    assert accuracy_at_k(["z"], REL, 3) == 0


def test_per_query_rows_for_every_labelled_query():
    qrels = {"q1": {"a": 1}, "q2": {"b": 2}}
    ranking = {"q1": ["a", "a", "x"], "q3": ["b"]}  # q2 missing, q3 unlabelled, q1 repeats a doc
    table = per_query_metrics(ranking, qrels)
    assert list(table.columns) == ["qid", *METRIC_NAMES]
    assert table["qid"].tolist() == ["q1", "q2"]
    assert table.set_index("qid").loc["q1"].tolist() == [1.0] * len(METRIC_NAMES)
    assert table.set_index("qid").loc["q2"].tolist() == [0.0] * len(METRIC_NAMES)
    assert mean_metrics(table) == {name: 0.5 for name in METRIC_NAMES}


def test_mean_of_nothing_refused():
    with pytest.raises(ValueError, match="No queries"):
        mean_metrics(per_query_metrics({}, {}))


def test_aggregate_to_documents_maxp():
    ranked = [("c3", 0.9), ("c1", 0.8), ("c4", 0.7), ("c2", 0.6)]
    owner = {"c1": "d1", "c2": "d2", "c3": "d1", "c4": "d3"}
    assert aggregate_to_documents(ranked, owner) == ["d1", "d3", "d2"]
    assert aggregate_to_documents([], owner) == []
    with pytest.raises(KeyError, match="rebuild the index"):
        aggregate_to_documents([("nope", 1.0)], owner)


@pytest.fixture(scope="module")
def random_run():
    rng = random.Random(13)
    docs = [f"d{i}" for i in range(400)]
    qrels, ranking = {}, {}
    for q in range(50):
        labelled = rng.sample(docs, rng.randint(1, 40))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2, 3]) for d in labelled}
        if not any(qrels[f"q{q}"].values()):
            qrels[f"q{q}"][labelled[0]] = 1
        # half the labelled docs mixed into 150 random ones: relevant docs land at all ranks, some at none
        pool = labelled[: len(labelled) // 2] + rng.sample(docs, 150)
        ranking[f"q{q}"] = list(dict.fromkeys(pool))[:120]
        rng.shuffle(ranking[f"q{q}"])
    return qrels, ranking


def trec(qrels, ranking, measures):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run = {q: {d: float(len(ds) - i) for i, d in enumerate(ds)} for q, ds in ranking.items()}  # strictly decreasing
    return pd.DataFrame(pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)).T


def test_agrees_with_trec_eval(random_run):
    qrels, ranking = random_run
    ours = per_query_metrics(ranking, qrels).set_index("qid")
    ref = trec(qrels, ranking, {"ndcg_cut.10", "recall.1,3,5,10,20,100", "success.1,3"})
    assert len(ref) == 50 and 0.05 < ours["ndcg@10"].mean() < 0.95  # a test that can tell metrics apart
    pairs = {"ndcg@10": "ndcg_cut_10", "recall@1": "recall_1", "recall@3": "recall_3", "recall@5": "recall_5",
             "recall@10": "recall_10", "recall@20": "recall_20", "recall@100": "recall_100",
             "accuracy@1": "success_1", "accuracy@3": "success_3"}
    for ours_name, trec_name in pairs.items():
        diff = (ours.loc[ref.index, ours_name] - ref[trec_name]).abs().max()
        assert diff < 1e-6, f"{ours_name} differs from trec_eval {trec_name} by {diff}"


def test_mrr_agrees_with_trec_eval_on_a_run_cut_at_10(random_run):
    qrels, ranking = random_run
    top10 = {q: ds[:10] for q, ds in ranking.items()}  # trec_eval's recip_rank is not cut: cut the run
    ref = trec(qrels, top10, {"recip_rank"})
    ours = per_query_metrics(ranking, qrels).set_index("qid")
    assert (ours.loc[ref.index, "mrr@10"] - ref["recip_rank"]).abs().max() < 1e-6
    assert (ours["mrr@10"] > 0).sum() >= 10
