"""How far the LLM judge agrees with human relevance labels: ROC AUC of its score, and precision, recall and
Cohen's kappa of "relevant" at a threshold chosen from data.

The threshold is chosen on half of the human queries (a stable split by query id) as the one with the best
kappa there, and the agreement is reported on the other half, so the number is not graded on the data that
picked it. The statistics are scikit-learn's; this module handles their edge cases (one class, no rows).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from assets.common import markdown_table, stable_fraction


def roc_auc(human: np.ndarray, score: np.ndarray) -> float:
    """P(score of a relevant pair > score of a non-relevant one), ties counting one half; nan with one class."""
    from sklearn.metrics import roc_auc_score

    human, score = np.asarray(human, bool), np.asarray(score, float)
    if human.all() or not human.any():
        return float("nan")
    return float(roc_auc_score(human, score))


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two binary raters beyond chance: (p_o - p_e) / (1 - p_e); 0 when chance explains it all."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if len(a) == 0:
        return float("nan")
    if (a.all() or not a.any()) and (b.all() or not b.any()):
        return 0.0   # both raters constant: p_e = 1 (agreeing) or a kappa of 0 (opposite); sklearn says nan
    return float(cohen_kappa_score(a, b, labels=[False, True]))


def precision_recall(human: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Of the pairs predicted relevant, the share humans judged relevant; and of those, the share predicted."""
    from sklearn.metrics import precision_score, recall_score

    human, predicted = np.asarray(human, bool), np.asarray(predicted, bool)
    precision = float(precision_score(human, predicted, zero_division=np.nan))
    recall = float(recall_score(human, predicted, zero_division=np.nan))
    return precision, recall


def choose_threshold(human: np.ndarray, score: np.ndarray) -> float:
    """The score threshold (relevant iff score >= t) with the best kappa; the highest such t on ties."""
    human, score = np.asarray(human, bool), np.asarray(score, float)
    best_t, best_k = float("inf"), -np.inf
    for t in np.unique(score)[::-1]:
        k = cohen_kappa(human, score >= t)
        if k > best_k + 1e-12:
            best_t, best_k = float(t), k
    return best_t


def agreement(pairs: pd.DataFrame, seed: int = 0) -> dict:
    """pairs: query_id, score (judge), human (bool), judge_grade. Threshold chosen on the calibration half."""
    calib = pairs["query_id"].map(lambda q: stable_fraction(str(q), seed + 11) < 0.5)
    cal, held = pairs[calib], pairs[~calib]
    if held.empty or cal.empty or cal["human"].nunique() < 2:
        cal = held = pairs                     # too few queries to split: say so in the result
    t = choose_threshold(cal["human"].to_numpy(), cal["score"].to_numpy())
    predicted = held["score"].to_numpy() >= t
    precision, recall = precision_recall(held["human"].to_numpy(), predicted)
    return {
        "pairs": len(pairs), "queries": int(pairs["query_id"].nunique()),
        "relevant_share": round(float(pairs["human"].mean()), 4) if len(pairs) else None,
        "roc_auc": _round(roc_auc(pairs["human"].to_numpy(), pairs["score"].to_numpy())),
        "roc_auc_heldout": _round(roc_auc(held["human"].to_numpy(), held["score"].to_numpy())),
        "threshold": _round(t), "threshold_chosen_on": "all queries (too few to split)" if cal is held else
        f"{cal['query_id'].nunique()} calibration queries (max kappa)",
        "heldout_pairs": len(held),
        "precision": _round(precision), "recall": _round(recall),
        "kappa": _round(cohen_kappa(held["human"].to_numpy(), predicted)),
        "kappa_judge_grade>=2": _round(cohen_kappa(held["human"].to_numpy(), held["judge_grade"].to_numpy() >= 2)),
    }


def _round(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def agreement_markdown(result: dict) -> str:
    if not result:
        return "_no human-labelled query sets: the judge could not be measured on this corpus_"
    rows = [{"query set": name, **{k: v for k, v in r.items() if k not in ("judge", "threshold_chosen_on")}}
            for name, r in result.items()]
    return markdown_table(pd.DataFrame(rows), max_rows=len(rows))
