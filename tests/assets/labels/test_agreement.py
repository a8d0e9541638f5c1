import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, precision_score, recall_score, roc_auc_score

from assets.labels.agreement import agreement, choose_threshold, cohen_kappa, precision_recall, roc_auc
from assets.labels.judge_agreement import candidate_pairs


@pytest.fixture
def fixed():
    rng = np.random.default_rng(3)
    human = rng.random(400) < 0.3
    score = np.round(rng.normal(0, 1, 400) + 1.2 * human, 1)   # rounded: many ties, which AUC must handle
    return human, score


def test_auc_kappa_precision_and_recall_agree_with_scikit_learn(fixed):
    human, score = fixed
    assert roc_auc(human, score) == pytest.approx(roc_auc_score(human, score), abs=1e-12)
    predicted = score >= 0.5
    assert cohen_kappa(human, predicted) == pytest.approx(cohen_kappa_score(human, predicted), abs=1e-12)
    p, r = precision_recall(human, predicted)
    assert p == pytest.approx(precision_score(human, predicted)) and r == pytest.approx(recall_score(human, predicted))


def test_threshold_is_the_best_kappa_on_the_data():
    human, score = np.array([1, 1, 0, 1, 0, 0], bool), np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    t = choose_threshold(human, score)
    best = max(cohen_kappa_score(human, score >= c) for c in score)
    assert cohen_kappa(human, score >= t) == pytest.approx(best)
    assert t == 0.8          # 0.6 ties at kappa 2/3: the stricter threshold wins


def test_agreement_picks_the_threshold_on_one_half_and_reports_the_other(fixed):
    human, score = fixed
    pairs = pd.DataFrame({"query_id": [f"q{i // 8}" for i in range(400)], "score": score, "human": human,
                          "judge_grade": np.where(score > 1, 2, 0)})
    out = agreement(pairs)
    assert out["pairs"] == 400 and out["queries"] == 50
    assert out["heldout_pairs"] < 400 and "calibration" in out["threshold_chosen_on"]
    assert 0.7 < out["roc_auc"] < 0.9          # the simulated judge separates the classes, imperfectly
    assert out["kappa"] > 0.2


def test_a_random_judge_scores_near_chance():
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"query_id": [f"q{i // 10}" for i in range(2000)], "score": rng.random(2000),
                          "human": rng.random(2000) < 0.3, "judge_grade": 0})
    out = agreement(pairs)
    assert abs(out["roc_auc"] - 0.5) < 0.05 and abs(out["kappa"]) < 0.1


def test_candidates_are_top_documents_plus_missed_relevant_ones():
    hits = {"q": [("a1", 3.0), ("a2", 2.0), ("b1", 1.0)]}
    rows = candidate_pairs({"q": "wing"}, {"q": {"b": 1, "c": 2}}, hits, {"a1": "a", "a2": "a", "b1": "b"},
                           {"a": "a1", "b": "b1", "c": "c1"}, depth=1, missed_relevant=3)
    assert [(r["doc_id"], r["chunk_id"], r["human_grade"]) for r in rows] == [("a", "a1", 0), ("c", "c1", 2),
                                                                              ("b", "b1", 1)]
