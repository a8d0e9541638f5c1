"""Every retriever against its baseline, on the same queries: is the gain real or noise?

Each retriever is compared with the one it was built from: a fine-tuned (or distilled) model, or the base
model with the query adapter, with the base model in the same first stage, a reranked row with its first stage alone, the base dense and hybrid
retrievers with BM25 (the baseline every team already has), the doc2query-expanded and summary tables' rows with
the same retriever on the plain table, the learned fusion with the fixed RRF (`hybrid_base`). BM25 has no baseline. The two are paired by
query id on the per-query nDCG@10 the evaluation computed, and the difference gets a paired bootstrap 95%
interval and a sign-flip p-value (assets/evaluation/statistics.py). A delta whose interval straddles 0 is
not evidence of a gain, however large it looks.
"""
from __future__ import annotations

import pandas as pd

from assets.common import md_text
from assets.evaluation.statistics import compare_paired

METRIC = "ndcg@10"
DELTA = f"delta_{METRIC}"     # the key in evaluation.json (a public interface): do not rename
BASELINES = {
    "dense_base": "bm25", "hybrid_base": "bm25",
    "dense_finetuned": "dense_base", "hybrid_finetuned": "hybrid_base",
    "dense_distilled": "dense_base", "hybrid_distilled": "hybrid_base",
    "dense_adapter": "dense_base", "hybrid_adapter": "hybrid_base",
    "bm25_expanded": "bm25", "hybrid_expanded": "hybrid_base", "hybrid_learned": "hybrid_base",
    "bm25_summaries": "bm25", "dense_summaries": "dense_base", "hybrid_summaries": "hybrid_base",
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
        out[retriever] = {"baseline": base, **paired_delta(wide, base, retriever, resamples, seed, metric)}
    return out


def paired_delta(wide: pd.DataFrame, base: str, other: str, resamples: int, seed: int,
                 metric: str = METRIC) -> dict:
    """{delta_<metric>, ci95, p_value, n_paired} of `other` over `base`, on the queries (rows of `wide`, one
    column per retriever) where both have a score."""
    pair = wide[[base, other]].dropna()
    c = compare_paired(pair[base].to_numpy(), pair[other].to_numpy(), resamples, seed)
    return {f"delta_{metric}": round(c.delta, 6), "ci95": [round(c.ci95[0], 6), round(c.ci95[1], 6)],
            "p_value": round(c.p_value, 6), "n_paired": c.n_paired}


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
                lost = m.get("rerank_failures")
                mark = f" ({lost} pairs unscored: reranker failures)" if lost else ""
                lines.append(f"| {md_text(set_name)} | {retriever} | {m['baseline']} | {m['n_paired']} | {m[DELTA]:+.3f} | "
                             f"[{lo:+.3f}, {hi:+.3f}] | {m['p_value']:.3g} | {verdict(m)}{mark} |")
    return "\n".join(lines)


FINETUNED_RERANK = RERANK_MARK + "finetuned"
OFFTHESHELF_RERANK = RERANK_MARK + "offtheshelf"


def reranker_verdict(report: dict, per_query: pd.DataFrame, resamples: int = 10_000, seed: int = 0) -> dict:
    """Does the fine-tuned reranker earn its latency? Judged on the human query sets (the synthetic test split
    when there are none), over each set's best first stage that it reranked: against that first stage alone
    and against the off-the-shelf reranker on the same first stage (paired by query; the best stage both
    reranked, which is the serving stage when the off-the-shelf one ran on that alone). `ship` only when it is
    better than the first stage on every such set; the reason says which numbers decided. A reranked row
    that lost pairs to reranker failures (`rerank_failures`) is weaker than its reranker: it is left out
    (listed under `skipped`), never compared against."""
    human = [n for n, qs in report["query_sets"].items() if qs["kind"] == "human"]
    judged_on = human or [n for n, qs in report["query_sets"].items() if qs["kind"] == "synthetic"]
    sets, reasons = {}, []
    for name in judged_on:
        rows = report["query_sets"][name]["retrievers"]
        weakened = {r: m["rerank_failures"] for r, m in rows.items() if m.get("rerank_failures")}
        whole = lambda r: r in rows and r not in weakened  # noqa: E731
        stages = [r for r in rows if RERANK_MARK not in r and whole(f"{r}{FINETUNED_RERANK}")]
        if not stages:
            if any(r.endswith(FINETUNED_RERANK) for r in weakened):
                reasons.append(f"{name}: not judged, every fine-tuned reranker row lost pairs to reranker failures")
            continue
        best = max(stages, key=lambda r: rows[r][METRIC])
        tuned = rows[f"{best}{FINETUNED_RERANK}"]
        vs_stage = {k: tuned[k] for k in (DELTA, "ci95", "p_value", "n_paired")} | {"verdict": verdict(tuned)}
        entry = {"first_stage": best, METRIC: {"first_stage": rows[best][METRIC], "finetuned": tuned[METRIC]},
                 "vs_first_stage": vs_stage}
        both = [r for r in stages if whole(f"{r}{OFFTHESHELF_RERANK}")]   # the off-the-shelf row may be on
        if both:                                                         # another (the serving) first stage
            stage = max(both, key=lambda r: rows[r][METRIC])
            mine, other = f"{stage}{FINETUNED_RERANK}", f"{stage}{OFFTHESHELF_RERANK}"
            wide = per_query[per_query["query_set"] == name].pivot(index="qid", columns="retriever", values=METRIC)
            vs = paired_delta(wide, other, mine, resamples, seed)
            entry["vs_offtheshelf"] = vs | {"verdict": verdict(vs), "first_stage": stage}
            entry[METRIC].update({"offtheshelf": rows[other][METRIC],
                                  "finetuned_on_offtheshelf_stage": rows[mine][METRIC]})
        if weakened:
            entry["skipped"] = weakened
        sets[name] = entry
        d = entry["vs_first_stage"]
        reasons.append(f"{name}: {best}+rerank {d['verdict']} than {best} alone "
                       f"(Δ nDCG@10 {d[DELTA]:+.3f}, 95% CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], "
                       f"p {d['p_value']:.3g})"
                       + "".join(f"; skipped {r} ({n} pairs lost to reranker failures)" for r, n in weakened.items()))
    ship = bool(sets) and all(e["vs_first_stage"]["verdict"] == "better" for e in sets.values())
    return {"ship": ship, "judged_on": "human" if human else "synthetic", "sets": sets,
            "reason": "; ".join(reasons) or "no query set has a fine-tuned reranker row"}


def reranker_verdict_markdown(v: dict) -> str:
    if not v.get("sets"):
        return ""
    lines = [f"**Fine-tuned reranker: {'ship it' if v['ship'] else 'do not ship it'}** "
             f"(judged on the {v['judged_on']} queries)", "",
             "| query set | first stage | nDCG@10 first stage | + fine-tuned reranker | + off-the-shelf | "
             "fine-tuned vs first stage | fine-tuned vs off-the-shelf |", "|---|---|---|---|---|---|---|"]

    def cell(c: dict | None) -> str:
        return "—" if not c else (f"{c[DELTA]:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], "
                                  f"p {c['p_value']:.3g}: {c['verdict']}")
    for name, e in v["sets"].items():
        m = e[METRIC]
        off = "—"
        if "offtheshelf" in m:
            off = f"{m['offtheshelf']:.3f}" + ("" if e["vs_offtheshelf"]["first_stage"] == e["first_stage"] else
                                               f" (over {e['vs_offtheshelf']['first_stage']}, where the fine-tuned "
                                               f"one has {m['finetuned_on_offtheshelf_stage']:.3f})")
        lines.append(f"| {md_text(name)} | {e['first_stage']} | {m['first_stage']:.3f} | {m['finetuned']:.3f} | {off} | "
                     f"{cell(e['vs_first_stage'])} | {cell(e.get('vs_offtheshelf'))} |")
    skipped = [f"{name}: {r} lost {n} pairs to reranker failures" for name, e in v["sets"].items()
               for r, n in e.get("skipped", {}).items()]
    if skipped:
        lines += ["", "Not compared (a row weaker than its reranker): " + "; ".join(skipped) + "."]
    return "\n".join(lines)
