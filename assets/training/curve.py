"""The learning curve's pure logic: nested training subsets, scoring a model on the query sets, the summary
table, the MLflow series and the plot. Free of Dagster; the asset is assets/training/learning_curve.py.

A point is one model trained on the first `size` training rows (whole queries, in an order fixed by a hash of
the query id and the seed) and scored with dense retrieval on every query set. Subsets are nested: for one
seed, the queries of a smaller subset are all in every larger one, so the curve shows what *more* data adds,
not what *other* data does. Seeds move both the subset and the training's randomness, so the band over seeds
is the spread a team would see from having collected a different sample of the same size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from assets.common import md_text, save_figure, stable_fraction
from assets.evaluation.scoring import QuerySet, dense_per_query

METRICS = ["ndcg@10", "recall@10"]
POINT_COLUMNS = ["size", "seed", "query_set", "kind", "n_examples", "n_queries", *METRICS]
KINDS = ("baseline", "subset", "full")   # the base model (0 examples), a trained subset, the shipped model (all)


def usable_sizes(sizes: list[int], n_train: int) -> tuple[list[int], list[int]]:
    """(kept, dropped): sorted distinct sizes in [2, n_train); the full point covers n_train and more, and
    train_biencoder needs two rows."""
    distinct = sorted(set(int(s) for s in sizes))
    kept = [s for s in distinct if 2 <= s < n_train]
    return kept, [s for s in distinct if s not in kept]


def nested_subset(train: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """The rows of the first queries (ordered by a hash of query_id and seed) whose rows add up to at most
    `size`, and at least one query. All rows of a query stay together; for one seed, a smaller size's subset
    is inside a larger one's."""
    counts = train.groupby("query_id", sort=False).size()
    order = sorted(counts.index, key=lambda q: (stable_fraction(str(q), seed), str(q)))
    cumulative = counts.loc[order].cumsum()
    keep = set(cumulative.index[cumulative <= size]) or {order[0]}
    return train[train["query_id"].isin(keep)]


def logged_queries_in(train: pd.DataFrame) -> list[str]:
    """The logged (feedback) queries of the train rows."""
    if "origin" not in train:
        return []
    return sorted(set(train.loc[train["origin"] == "feedback", "query_id"].astype(str)))


def logged_subset(train: pd.DataFrame, n_logged: int, seed: int) -> pd.DataFrame:
    """The shipped blend scaled down to the first `n_logged` logged queries (in a seed's stable order, nested as
    n grows): their feedback rows, and synthetic rows in the blend's proportion (whole queries,
    `nested_subset`), so every point is the shipped recipe on less data and "all" is the shipped model."""
    feedback = train[train["origin"] == "feedback"]
    synthetic = train[train["origin"] != "feedback"]
    order = sorted(logged_queries_in(train), key=lambda q: (stable_fraction(q, seed + 303), q))
    fb = feedback[feedback["query_id"].astype(str).isin(set(order[:n_logged]))]
    if synthetic.empty or feedback.empty:
        return fb
    share = len(fb) / len(feedback)
    syn = nested_subset(synthetic, int(round(share * len(synthetic))), seed) if share > 0 else synthetic.iloc[:0]
    return pd.concat([fb, syn], ignore_index=True)


def score_model(encode, query_sets: dict[str, QuerySet], chunk_ids: list[str], chunk_texts: list[str],
                chunk_vectors=None) -> list[dict]:
    """Mean METRICS of dense retrieval with `encode(texts) -> normalised vectors` on each query set (the chunks
    are encoded once, or not at all when `chunk_vectors`, in chunk_ids' order, are given)."""
    vectors = encode(chunk_texts) if chunk_vectors is None else chunk_vectors
    out = []
    for name, query_set in query_sets.items():
        per_query = dense_per_query(query_set, encode, chunk_ids, vectors)
        out.append({"query_set": name, "n_queries": len(per_query),
                    **{m: float(per_query[m].mean()) if len(per_query) else float("nan") for m in METRICS}})
    return out


def points_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (size, seed, query_set, kind, n_examples, n_queries, metrics) as a frame; seed is null on the baseline."""
    df = pd.DataFrame(rows, columns=POINT_COLUMNS)
    return df.astype({"size": "int64", "seed": "Int64", "n_examples": "int64", "n_queries": "int64",
                      **{m: "float64" for m in METRICS}})


def summarize(points: pd.DataFrame) -> pd.DataFrame:
    """One row per (query_set, kind, size): n_seeds and the mean, min, max and std of each metric over seeds."""
    stats = [f"{m}_{s}" for m in METRICS for s in ("mean", "min", "max", "std")]
    cols = ["query_set", "kind", "size", "n_seeds", *stats]
    if points.empty:
        return pd.DataFrame(columns=cols)
    grouped = points.groupby(["query_set", "kind", "size"], sort=False)
    out = grouped[METRICS].agg(["mean", "min", "max", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out = out.fillna({c: 0.0 for c in out.columns if c.endswith("_std")})   # one seed: no spread
    out.insert(0, "n_seeds", grouped.size())
    return out.reset_index().sort_values(["query_set", "size"], kind="stable").reset_index(drop=True)[cols]


def summary_markdown(summary: pd.DataFrame, metric: str = "ndcg@10") -> str:
    """Sizes down, query sets across: the mean `metric` over seeds (min..max when seeds differ)."""
    if summary.empty:
        return "_(no points)_"
    sets = list(dict.fromkeys(summary["query_set"]))
    lines = [f"| training examples ({metric}) | " + " | ".join(map(md_text, sets)) + " |", "|---|" + "---|" * len(sets)]
    for (kind, size), rows in summary.groupby(["kind", "size"], sort=False):
        by_set = rows.set_index("query_set")
        cells = []
        for s in sets:
            if s not in by_set.index:
                cells.append("")
                continue
            r = by_set.loc[s]
            spread = (f" ({r[f'{metric}_min']:.3f}..{r[f'{metric}_max']:.3f})"
                      if r["n_seeds"] > 1 and r[f"{metric}_max"] > r[f"{metric}_min"] else "")
            cells.append(f"{r[f'{metric}_mean']:.3f}{spread}")
        label = "0 (base model)" if kind == "baseline" else f"{size} (all)" if kind == "full" else str(size)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mlflow_series(summary: pd.DataFrame, prefix: str = "learning_curve") -> list[tuple[str, float, int]]:
    """(metric name, mean over seeds, step = training examples): the base model is step 0, so MLflow's chart of
    `learning_curve.<set>.ndcg_at_10` is the curve itself."""
    out = []
    for row in summary.to_dict("records"):
        name = row["query_set"].replace("/", ".").replace("+", ".")
        for m in METRICS:
            out.append((f"{prefix}.{name}.{m.replace('@', '_at_')}", float(row[f"{m}_mean"]), int(row["size"])))
    return out


def plot_curve(points: pd.DataFrame, path: Path, title: str = "Learning curve",
               xlabel: str = "training examples (triplet rows)") -> Path:
    """A panel per metric; per query set, the mean over seeds against training examples with the min..max band,
    and the base model as a dashed line. Writes a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(points)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4.5), squeeze=False)
    colors = plt.get_cmap("tab10")
    trained = summary[summary["kind"] != "baseline"]
    sizes = sorted(set(trained["size"]))
    full = set(trained.loc[trained["kind"] == "full", "size"])
    labels = [f"{s}\n(all)" if s in full else str(s) for s in sizes]
    for ax, metric in zip(axes[0], METRICS):
        for i, name in enumerate(dict.fromkeys(summary["query_set"])):
            color = colors(i % 10)
            curve = trained[trained["query_set"] == name].sort_values("size")
            if not curve.empty:
                ax.plot(curve["size"], curve[f"{metric}_mean"], marker="o", color=color, label=name)
                ax.fill_between(curve["size"], curve[f"{metric}_min"], curve[f"{metric}_max"], color=color, alpha=0.2,
                                linewidth=0)
            base = summary[(summary["query_set"] == name) & (summary["kind"] == "baseline")]
            if not base.empty:
                ax.axhline(float(base[f"{metric}_mean"].iloc[0]), color=color, linestyle="--", linewidth=1,
                           label=f"{name}: base model")
        if len(sizes) > 1 and sizes[-1] >= 4 * sizes[0]:
            ax.set_xscale("log")
        if sizes:
            ax.set_xticks(sizes, labels)
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} (band: min..max over seeds)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
