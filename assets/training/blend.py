"""The training blend: how much the synthetic rows and the logged-feedback rows each weigh.

A weight w repeats an origin's training rows floor(w) times and adds a stable sample of whole queries for the
fraction left (w = 0.5: half of its queries, the same half every run); w = 0 leaves the origin out. So
`synthetic_weight=1, feedback_weight=0` is synthetic-only training, `0, 1` feedback-only, and the default
blend (1, 1) uses every row once. Validation rows are never weighted: model selection reads them as they are.
"""
from __future__ import annotations

import pandas as pd

from assets.common import stable_fraction


def blend_rows(triplets: pd.DataFrame, synthetic_weight: float = 1.0, feedback_weight: float = 1.0,
               seed: int = 0, origin: pd.Series | None = None) -> pd.DataFrame:
    """The rows (triplets, or reranker pairs) with the train split's rows repeated / sampled per origin by its
    weight; `origin` ("synthetic" / "feedback" per row) defaults to the frame's `origin` column."""
    if synthetic_weight < 0 or feedback_weight < 0:
        raise ValueError(f"blend weights must be >= 0, got synthetic={synthetic_weight}, feedback={feedback_weight}")
    if origin is None:
        origin = triplets["origin"] if "origin" in triplets else pd.Series("synthetic", index=triplets.index)
    train = triplets["split"] == "train"
    parts = [triplets[~train]]
    for name, weight in (("synthetic", synthetic_weight), ("feedback", feedback_weight)):
        rows = triplets[train & (origin == name)]
        whole, frac = int(weight), weight - int(weight)
        parts += [rows] * whole
        if frac > 0 and len(rows):
            keep = rows["query_id"].astype(str).map(lambda q: stable_fraction(q, seed + 11) < frac)
            parts.append(rows[keep])
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update(triplets.attrs)
    return out


def blend_counts(triplets: pd.DataFrame) -> dict[str, int]:
    """Train rows per origin: what the model actually trained on."""
    train = triplets[triplets["split"] == "train"]
    origin = train["origin"] if "origin" in train else pd.Series("synthetic", index=train.index)
    return {f"n_train_{o}": int((origin == o).sum()) for o in ("synthetic", "feedback")}
