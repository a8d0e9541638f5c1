"""The before/after chart of a query set: every retriever's nDCG@10, and its gain over its baseline with the
bootstrap 95% interval, one row per retriever so a bar and its delta line up.

Matplotlib is imported inside the function with the Agg backend: no display is needed, and importing this
module (the asset graph loads it) costs nothing.
"""
from __future__ import annotations

import re
from pathlib import Path

from assets.common import save_figure
from assets.evaluation.comparisons import DELTA, METRIC, RERANK_MARK, verdict

COLOURS = {"baseline": "#9e9e9e", "trained": "#1f77b4", "reranked": "#2ca02c"}
VERDICT_COLOURS = {"better": "#2ca02c", "worse": "#d62728", "no clear difference": "#555555"}


def safe_name(set_name: str) -> str:
    """A file name for a query set: "human/cranfield/test" -> "human_cranfield_test"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", set_name).strip("_") or "query_set"


def family(retriever: str) -> str:
    if RERANK_MARK in retriever:
        return "reranked"
    return "baseline" if retriever == "bm25" or retriever.endswith("_base") else "trained"


def before_after_chart(set_name: str, query_set: dict, path: str | Path) -> Path:
    """Draw one query set's chart (an evaluation.json query-set entry) to a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    retrievers = list(query_set["retrievers"].items())
    rows = range(len(retrievers))
    fig, (left, right) = plt.subplots(1, 2, sharey=True, figsize=(11, 1.2 + 0.32 * len(retrievers)),
                                      gridspec_kw={"width_ratios": [1, 1.3]})
    left.barh(rows, [m[METRIC] for _, m in retrievers], color=[COLOURS[family(r)] for r, _ in retrievers])
    for y, (_, m) in zip(rows, retrievers):
        left.text(m[METRIC], y, f" {m[METRIC]:.3f}", va="center", fontsize=8)
    left.set_yticks(list(rows), [r for r, _ in retrievers], fontsize=8)
    left.set_xlim(0, 1.1)
    left.set_xlabel(METRIC)
    left.invert_yaxis()
    for y, (_, m) in zip(rows, retrievers):
        if DELTA not in m:
            continue
        lo, hi = m["ci95"]
        right.errorbar(m[DELTA], y, xerr=[[m[DELTA] - lo], [hi - m[DELTA]]], fmt="o", capsize=3,
                       color=VERDICT_COLOURS[verdict(m)])
        right.annotate(f"vs {m['baseline']}, p={m['p_value']:.2g}", (hi, y), xytext=(4, 0),
                       textcoords="offset points", va="center", fontsize=7)
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlabel(f"Δ {METRIC} vs baseline, 95% bootstrap CI\n(green/red: CI excludes 0 and p < 0.05)")
    right.margins(x=0.35)
    fig.suptitle(f"{set_name} ({query_set['kind']}, {query_set['n_queries']} queries)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def report_charts(report: dict, folder: str | Path) -> dict[str, Path]:
    """One chart per query set of an evaluation report: set name -> PNG path under `folder`."""
    return {name: before_after_chart(name, qs, Path(folder) / f"{safe_name(name)}.png")
            for name, qs in report["query_sets"].items()}
