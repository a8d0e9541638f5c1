"""Query segments, as plain functions: what users ask about, how much, how well it goes, and whether it grows.

The logged queries, embedded with the serving model, are clustered with scikit-learn's KMeans (the vectors
are L2-normalised, so Euclidean k-means groups by cosine). The number of segments, unless configured, is
the one with the best silhouette (cosine) over 2..max_segments, bounded by the number of queries minus one;
fewer than three queries make one segment. Each segment is named by its top TF-IDF terms: the terms whose
mean weight in the segment's queries most exceeds their mean weight in the other queries (English stop words
removed).

Per segment: `share` is its share of traffic, counted in **interactions** (`n_interactions` of its queries);
`query_share` is its share of distinct queries. `trend` is the least-squares slope of its daily interactions
over the whole log's date range (days without any count as 0), times 7, divided by its mean daily
interactions: the change per week as a fraction of its own average volume (+0.10 = growing by a tenth of
its usual traffic each week). It is null when the log has no timestamps or spans a single day.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SEGMENT_COLUMNS = ["segment", "name", "n_queries", "share", "query_share", "n_interactions", "examples",
                   "precision", "n_judged_queries", "recall", "n_labelled_queries", "trend", "top_terms"]


def _kmeans(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)   # n_init=10: stable picks


def _silhouette(vectors: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_score

    distinct = len(set(labels.tolist()))
    return float(silhouette_score(vectors, labels, metric="cosine")) if 2 <= distinct <= len(labels) - 1 else None


def cluster_queries(vectors: np.ndarray, n_segments: int = 0, max_segments: int = 8,
                    seed: int = 0) -> tuple[np.ndarray, float | None]:
    """(segment of each query, numbered by size: 0 = the most queries; the silhouette, None where undefined).
    n_segments = 0 chooses the count by silhouette over 2..min(max_segments, n - 1, distinct vectors)."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=int), None
    distinct = len(np.unique(np.round(vectors, 6), axis=0))   # k-means cannot make more clusters than points
    if n_segments:
        k = min(n_segments, distinct)
        labels = _kmeans(vectors, k, seed) if k > 1 else np.zeros(n, dtype=int)
        return relabel_by_size(labels), _silhouette(vectors, labels)
    best: tuple[np.ndarray, float] | None = None
    for k in range(2, min(max_segments, n - 1, distinct) + 1):
        labels = _kmeans(vectors, k, seed)
        score = _silhouette(vectors, labels)
        if score is not None and (best is None or score > best[1] + 1e-9):   # ties: the fewer segments
            best = (labels, score)
    if best is None:   # fewer than 3 queries, or all alike
        return np.zeros(n, dtype=int), None
    return relabel_by_size(best[0]), best[1]


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Segments renumbered 0, 1, ... from the largest down (ties by first appearance): the same numbering
    every run for the same clusters, whatever ids KMeans gave them."""
    labels = np.asarray(labels)
    counts = pd.Series(labels).value_counts(sort=False)
    first = {lab: i for i, lab in reversed(list(enumerate(labels.tolist())))}
    order = sorted(counts.index, key=lambda lab: (-counts[lab], first[lab]))
    mapping = {lab: new for new, lab in enumerate(order)}
    return np.array([mapping[lab] for lab in labels.tolist()], dtype=int)


def top_terms(texts: list[str], labels: np.ndarray, n_terms: int = 3) -> dict[int, list[str]]:
    """Each segment's terms with the largest mean TF-IDF weight inside it minus outside it (positive only)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    labels = np.asarray(labels)
    segments = sorted(set(labels.tolist()))
    try:
        weights = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(texts)
        matrix = weights.transform(texts)
    except ValueError:   # no vocabulary left: every query was stop words or punctuation
        return {s: [] for s in segments}
    vocab = weights.get_feature_names_out()
    out = {}
    for s in segments:
        inside = labels == s
        score = np.asarray(matrix[inside].mean(axis=0)).ravel()
        if (~inside).any():
            score = score - np.asarray(matrix[~inside].mean(axis=0)).ravel()
        order = np.argsort(-score, kind="stable")   # ties alphabetical (the vocabulary is sorted)
        out[s] = [str(vocab[i]) for i in order[:n_terms] if score[i] > 0]
    return out


def segment_names(terms: dict[int, list[str]], llm_names: dict[int, str | None] | None = None) -> dict[int, str]:
    """The LLM's name where it gave one, else the top terms joined; "segment N" without terms; duplicates numbered."""
    names, seen = {}, {}
    for s, words in terms.items():
        name = (llm_names or {}).get(s) or " / ".join(words) or f"segment {s + 1}"
        seen[name] = seen.get(name, 0) + 1
        names[s] = name if seen[name] == 1 else f"{name} ({seen[name]})"
    return names


def log_days(daily_dicts) -> pd.DatetimeIndex:
    """Every day from the log's first to its last dated interaction (empty without timestamps)."""
    keys = sorted({day for d in daily_dicts if isinstance(d, dict) for day in d})
    return pd.date_range(keys[0], keys[-1], freq="D") if keys else pd.DatetimeIndex([])


def weekly_trend(daily: dict[str, int], days: pd.DatetimeIndex) -> float | None:
    """Least-squares slope of daily interactions over `days` (missing days = 0), per week, over the mean."""
    if len(days) < 2:
        return None
    y = np.array([daily.get(d.strftime("%Y-%m-%d"), 0) for d in days], dtype=float)
    if y.mean() <= 0:
        return None
    slope = np.polyfit(np.arange(len(y), dtype=float), y, 1)[0]
    return round(float(7 * slope / y.mean()), 6) + 0.0   # + 0.0: a flat segment reads 0, not -0


def sum_daily(dicts) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for day, n in (d or {}).items():
            out[day] = out.get(day, 0) + int(n)
    return out


def segment_table(queries: pd.DataFrame, names: dict[int, str], terms: dict[int, list[str]],
                  precision: dict[str, float], recall: dict[str, float], n_examples: int = 3) -> pd.DataFrame:
    """One row per segment from `queries` (logged_queries with a `segment` column); precision and recall are
    the means over the segment's queries that have one (null when none has)."""
    days = log_days(queries["daily"])
    total_interactions, total_queries = max(1, int(queries["n_interactions"].sum())), max(1, len(queries))
    rows = []
    for s, group in queries.groupby("segment", sort=True):
        p = [precision[q] for q in group["query_id"] if q in precision and not pd.isna(precision[q])]
        r = [recall[q] for q in group["query_id"] if q in recall and not pd.isna(recall[q])]
        top = group.sort_values(["n_interactions", "query_id"], ascending=[False, True])
        rows.append({"segment": int(s), "name": names[s], "n_queries": len(group),
                     "share": round(int(group["n_interactions"].sum()) / total_interactions, 4),
                     "query_share": round(len(group) / total_queries, 4),
                     "n_interactions": int(group["n_interactions"].sum()),
                     "examples": top["text"].head(n_examples).tolist(),
                     "precision": float(np.mean(p)) if p else None, "n_judged_queries": len(p),
                     "recall": float(np.mean(r)) if r else None, "n_labelled_queries": len(r),
                     "trend": weekly_trend(sum_daily(group["daily"]), days), "top_terms": terms.get(s, [])})
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS)


def segments_figure(table: pd.DataFrame):
    """Share of traffic against judged precision per segment, bubble area = interactions: the segment to invest
    in next is big and low. Segments with no reviewed query sit on the floor as hollow circles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    size = 2000 * table["share"].astype(float).clip(lower=0.005)
    known = table["precision"].notna()
    ax.scatter(table.loc[known, "share"], table.loc[known, "precision"].astype(float), s=size[known], alpha=0.5)
    ax.scatter(table.loc[~known, "share"], [0.0] * int((~known).sum()), s=size[~known], facecolors="none",
               edgecolors="grey", label="no reviewed query")
    for row in table.itertuples(index=False):
        y = row.precision if row.precision is not None and not pd.isna(row.precision) else 0.0
        ax.annotate(str(row.name)[:30], (row.share, y), fontsize=8, ha="center", va="bottom")
    ax.set(xlabel="share of traffic (interactions)", ylabel="judged precision@k", ylim=(-0.08, 1.08),
           title="Query segments: big and low = invest next")
    if (~known).any():
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig
