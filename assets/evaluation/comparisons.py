"""Every retriever against its baseline, on the same queries: is the gain real or noise?

Each retriever is compared with the one it was built from: a fine-tuned (or distilled) model with the base
model in the same first stage, a reranked row with its first stage alone, the base dense and hybrid
retrievers with BM25 (the baseline every team already has). BM25 has no baseline. The two are paired by
query id on the per-query nDCG@10 the evaluation computed, and the difference gets a paired bootstrap 95%
interval and a sign-flip p-value (assets/evaluation/statistics.py). A delta whose interval straddles 0 is
not evidence of a gain, however large it looks.
"""
from __future__ import annotations

import pandas as pd

from assets.evaluation.statistics import compare_paired

METRIC = "ndcg@10"
DELTA = f"delta_{METRIC}"     # the key in evaluation.json (a public interface): do not rename
BASELINES = {
    "dense_base": "bm25", "hybrid_base": "bm25",
    "dense_finetuned": "dense_base", "hybrid_finetuned": "hybrid_base",
    "dense_distilled": "dense_base", "hybrid_distilled": "hybrid_base",
}
RERANK_MARK = "+rerank_"      # "<first stage>+rerank_<reranker>" is compared with "<first stage>"


def baseline_of(retriever: str) -> str | None:
    """The retriever this one should beat, or None (BM25, or a name this table does not know)."""
    if RERANK_MARK in retriever:
        return retriever.split(RERANK_MARK, 1)[0]
    return BASELINES.get(retriever)


def compare_to_baselines(per_query: pd.DataFrame, resamples: int = 10_000, seed: int = 0,
                         metric: str = METRIC) -> dict[str, dict]:
    """retriever -> {baseline, delta_<metric>, ci95, p_value, n_paired}, from one query set's per-query rows
    (columns retriever, qid, metric). Retrievers without a baseline in the rows are left out."""
    wide = per_query.pivot(index="qid", columns="retriever", values=metric)
    out = {}
    for retriever in per_query["retriever"].unique():
        base = baseline_of(retriever)
        if base is None or base not in wide:
            continue
        pair = wide[[base, retriever]].dropna()
        c = compare_paired(pair[base].to_numpy(), pair[retriever].to_numpy(), resamples, seed)
        out[retriever] = {"baseline": base, f"delta_{metric}": round(c.delta, 6),
                          "ci95": [round(c.ci95[0], 6), round(c.ci95[1], 6)],
                          "p_value": round(c.p_value, 6), "n_paired": c.n_paired}
    return out


def add_comparisons(report: dict, per_query: pd.DataFrame, resamples: int = 10_000, seed: int = 0) -> None:
    """Put each retriever's comparison into its entry under report["query_sets"][set]["retrievers"]."""
    for set_name, qs in report["query_sets"].items():
        rows = per_query[per_query["query_set"] == set_name]
        for retriever, comparison in compare_to_baselines(rows, resamples, seed).items():
            qs["retrievers"][retriever].update(comparison)


def comparison_metrics(metrics: dict) -> dict[str, float]:
    """A retriever's comparison as flat numbers for MLflow (empty when it has no baseline)."""
    if DELTA not in metrics:
        return {}
    lo, hi = metrics["ci95"]
    return {DELTA: metrics[DELTA], f"{DELTA}_ci95_lo": lo, f"{DELTA}_ci95_hi": hi,
            f"{DELTA}_p_value": metrics["p_value"]}


ALPHA = 0.05


def verdict(metrics: dict) -> str:
    """"better"/"worse" only when both tests agree: the 95% interval excludes 0 AND p < 0.05. With few queries
    the percentile interval is too narrow (it can exclude 0 at p = 0.125 with 12 queries), so it alone is not
    enough."""
    lo, hi = metrics["ci95"]
    if metrics["p_value"] < ALPHA and (lo > 0 or hi < 0):
        return "better" if lo > 0 else "worse"
    return "no clear difference"


def comparisons_markdown(report: dict) -> str:
    """One row per (query set, retriever with a baseline): delta nDCG@10, its 95% interval and p."""
    lines = ["| query set | retriever | baseline | n | Δ nDCG@10 | 95% CI | p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for set_name, qs in report["query_sets"].items():
        for retriever, m in qs["retrievers"].items():
            if DELTA in m:
                lo, hi = m["ci95"]
                lines.append(f"| {set_name} | {retriever} | {m['baseline']} | {m['n_paired']} | {m[DELTA]:+.3f} | "
                             f"[{lo:+.3f}, {hi:+.3f}] | {m['p_value']:.3g} | {verdict(m)} |")
    return "\n".join(lines)
