"""The promotion gate's rule, free of Dagster and MLflow: does a candidate model replace the champion?

The candidate and the champion are both scored, query by query, with dense retrieval on the same queries:

- the **gate set**: the corpus's human-labelled queries (all its qrels files pooled, each query once), or
  the synthetic test split when the corpus brought none;
- the **guard set**: the synthetic test split when the gate set is human (nothing else is left that neither
  model was selected on), else none.

The candidate is promoted only if the paired bootstrap 95% CI of its mean nDCG@10 gain on the gate set has
its lower bound above `min_gain` (0 by default: a gain that cannot be told from noise does not ship), the
paired randomization test's p-value is below `alpha` (0.05), and its mean change on the guard set is not below
`-guard_tolerance`. Both tests, because on a few dozen queries of which only a handful changed, the percentile
bootstrap's lower bound can sit a hair above 0 while the sign-flip test says p = 0.125 (measured on the demo:
24 synthetic queries, 4 of them moved): that is a coin flip, not evidence. The champion, when no version has been
promoted yet, is the base model: the first fine-tune must beat what the team would use without flywheel.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from assets.evaluation.statistics import compare_paired


@dataclass(frozen=True)
class GateSettings:
    metric: str = "ndcg@10"
    min_gain: float = 0.0            # the CI's lower bound must be above this
    alpha: float = 0.05              # and the paired randomization test's p-value below this
    guard_tolerance: float = 0.01    # the guard set may fall by at most this much (mean nDCG@10)
    resamples: int = 10_000          # bootstrap resamples and randomization permutations
    seed: int = 0


@dataclass(frozen=True)
class GateResult:
    promote: bool
    reason: str
    gate: dict                       # set names, n, candidate and champion means, delta, ci95, p_value
    guard: dict | None

    def to_dict(self) -> dict:
        return asdict(self)


def paired_scores(candidate: pd.DataFrame, champion: pd.DataFrame, metric: str) -> tuple[list[float], list[float]]:
    """The metric of both models on the queries they share, in one order (rows keyed by query_set and qid)."""
    keys = ["query_set", "qid"]
    joined = candidate[keys + [metric]].merge(champion[keys + [metric]], on=keys, suffixes=("_cand", "_champ"))
    if len(joined) != len(candidate) or len(joined) != len(champion):
        raise ValueError(f"candidate ({len(candidate)}) and champion ({len(champion)}) were scored on different "
                         f"queries ({len(joined)} shared): score both on the same query sets")
    return joined[f"{metric}_cand"].tolist(), joined[f"{metric}_champ"].tolist()


def compare(candidate: pd.DataFrame, champion: pd.DataFrame, settings: GateSettings) -> dict:
    a, b = paired_scores(candidate, champion, settings.metric)
    if not a:
        raise ValueError("the gate set has no queries: the promotion gate cannot decide on nothing")
    stats = compare_paired(b, a, resamples=settings.resamples, seed=settings.seed)   # mean(candidate - champion)
    return {"sets": sorted(set(candidate["query_set"])), "n": stats.n_paired,
            "candidate": round(sum(a) / len(a), 6), "champion": round(sum(b) / len(b), 6),
            f"delta_{settings.metric}": round(stats.delta, 6), "ci95": [round(v, 6) for v in stats.ci95],
            "p_value": stats.p_value}


def decide(gate_candidate: pd.DataFrame, gate_champion: pd.DataFrame, guard_candidate: pd.DataFrame | None,
           guard_champion: pd.DataFrame | None, settings: GateSettings = GateSettings()) -> GateResult:
    """The promotion decision and its reason, in words a reviewer can check against the numbers."""
    m = settings.metric
    gate = compare(gate_candidate, gate_champion, settings)
    guard = (compare(guard_candidate, guard_champion, settings)
             if guard_candidate is not None and guard_champion is not None and len(guard_candidate) else None)
    lo, hi = gate["ci95"]
    delta = gate[f"delta_{m}"]
    where = f"on {', '.join(gate['sets'])} ({gate['n']} queries)"
    said = f"{m} {gate['champion']:.4f} -> {gate['candidate']:.4f}, delta {delta:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}], p={gate['p_value']:.3g}"
    if lo <= settings.min_gain:
        why = "is below" if hi <= settings.min_gain else "does not clear"
        return GateResult(False, f"not promoted: {where} {said}; the CI's lower bound {why} {settings.min_gain:+.4f}, "
                                 "so the gain cannot be told from noise", gate, guard)
    if not gate["p_value"] < settings.alpha:
        return GateResult(False, f"not promoted: {where} {said}; the CI clears {settings.min_gain:+.4f} but the paired "
                                 f"randomization test does not (p >= {settings.alpha:g}): too few queries moved to "
                                 "tell the gain from noise", gate, guard)
    if guard is not None and guard[f"delta_{m}"] < -settings.guard_tolerance:
        return GateResult(False, f"not promoted: gains {where} ({said}) but falls on the guard set "
                                 f"{', '.join(guard['sets'])} by {-guard[f'delta_{m}']:.4f} {m}, beyond the "
                                 f"tolerance of {settings.guard_tolerance:.4f}", gate, guard)
    kept = ("" if guard is None else f"; guard {', '.join(guard['sets'])} delta {guard[f'delta_{m}']:+.4f} within "
            f"-{settings.guard_tolerance:.4f}")
    return GateResult(True, f"promoted: {where} {said}{kept}", gate, guard)
