"""The learning curve: retrieval quality against the number of training examples. It answers "do we have
enough data to fine-tune?" with a plot: a curve still climbing at "all" says more queries will pay; a flat
one says they will not (then a better generator or judge is the lever, not more of the same data).

Points: the base model (0 examples, drawn as a dashed line), models trained on nested subsets of the training
triplets (`sizes` rows, whole queries, one subset and one training per seed; assets/training/curve.py), and
the shipped model (`finetuned_biencoder`, all rows: reused, not retrained). Each is scored with exact dense
retrieval on the synthetic validation split and on every human query set (assets/evaluation/scoring.py),
nDCG@10 and recall@10. The test split stays untouched for the evaluation report.

Recipe: the shipped model's (MultipleNegativesRankingLoss, learning rate, batch, WiSE-FT), for `epochs`
epochs, without validation passes during training: the curve is measured on the validation split, so
choosing a checkpoint on it would flatter the points. (The shipped model did keep its best checkpoint on a
1,000-chunk sample of it, so the "all" point may be a little optimistic.)

With logged feedback in the triplets (`unit` "auto" -> "logged_queries"), the x axis is logged training queries
instead: "how many logged queries does a team need?", answered on human labels. Each point is the shipped
blend scaled down (`curve.logged_subset`: the first n logged queries' rows and synthetic rows in the blend's
proportion), so the "all" point is the shipped model itself.

On a run where the bi-encoder was not retrained, the last curve (same model, same settings) is read back from
<home>/reports: a nightly run that changes nothing pays nothing here.
"""

import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import image
from assets.evaluation.scoring import build_query_sets
from assets.training import TrainConfig
from assets.training.biencoder import TrainSettings, train_biencoder
from assets.training.blend import blend_rows
from assets.training.scaffold import untrainable
from assets.training.curve import (logged_queries_in, logged_subset, mlflow_series, nested_subset, plot_curve,
                                   points_frame, score_model, summarize, summary_markdown, usable_sizes)
from resources.compute import compute_tags
from resources.device import plan_for
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource, means_absent
from resources.workspace import WorkspaceResource

_TRAIN = TrainConfig.model_fields


class LearningCurveConfig(dg.Config):
    # Cost on 2 CPU cores, MiniLM at batch 32 (~18 s a step): one epoch of 100 + 300 rows is 3 + 9 = 12 steps
    # a seed, x 2 seeds = 24 steps ~ 7 min; plus one encoding of the corpus per subset model (4 x ~30 s for
    # 1,000 chunks in fp32; the base and shipped models' vectors are read from their indices) ~ 2 min. With the shipped model as the "all" point that is 4 points
    # on the x axis. On a GPU all of it is seconds: ask for more (--curve-sizes 100,250,500,1000).
    sizes: list[int] = [100, 300]        # training rows per point; >= the train split is dropped ("all" covers it)
    seeds: list[int] = [0, 1]            # each seed draws its own nested subsets and trains once per size
    enabled: bool = True                 # off: flywheel run --no-learning-curve
    epochs: float = _TRAIN["epochs"].default             # per point: a small subset gets a small number of steps
    learning_rate: float = _TRAIN["learning_rate"].default   # the rest is the shipped model's recipe
    batch_size: int = _TRAIN["batch_size"].default
    interpolation: float = _TRAIN["interpolation"].default
    unit: str = "auto"                   # "examples" (triplet rows), "logged_queries", or "auto": logged queries
    #                                      when the triplets hold logged feedback, else examples
    logged_sizes: list[int] = [25, 50, 100]   # logged training queries per point (unit logged_queries); ~5 rows a
    #   query on cranfield, so 100 queries ~ 500 rows + their synthetic share: ~20 steps, ~6 min on 2 CPU cores


def train_point(embedder: EmbedderResource, subset: pd.DataFrame, chunks: pd.DataFrame, settings: TrainSettings,
                out_dir: Path) -> tuple[str, int]:
    """Train a fresh copy of the base model on `subset` (train rows only: no validation passes); (path, steps)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedder.base_model_path(), device=embedder.resolved_device())
    model.max_seq_length = embedder.max_seq_length
    result = train_biencoder(model, subset, chunks, out_dir, settings)
    return result.model_path, result.steps


def shipped_seed(finetuned_biencoder: dict, mlflow: MLflowResource) -> int | None:
    """The seed the shipped model was trained with (its value, else its MLflow run's params); None when there is
    no run to ask (no run id, or a run the server does not have). Any other MLflow error is raised, not read as
    "no seed"."""
    if finetuned_biencoder.get("seed") is not None:
        return int(finetuned_biencoder["seed"])
    if not finetuned_biencoder.get("mlflow_run_id"):
        return None
    try:
        seed = mlflow.client().get_run(finetuned_biencoder["mlflow_run_id"]).data.params.get("seed")
    except Exception as error:
        if means_absent(error):
            return None
        raise
    return int(seed) if seed is not None else None


def last_curve(reports: Path, request: dict) -> pd.DataFrame | None:
    """The curve written by an earlier run for the same model and settings, if there is one."""
    meta, data = reports / "learning_curve.json", reports / "learning_curve.parquet"
    if not all(p.exists() for p in (meta, data, data.with_suffix(".png"))):
        return None
    if json.loads(meta.read_text()).get("request") != request:
        return None
    return points_frame(pd.read_parquet(data).to_dict("records"))


@dg.asset(group_name="training", compute_kind="pytorch", pool="gpu", op_tags=compute_tags("gpu"))
def learning_curve(context: dg.AssetExecutionContext, training_triplets: pd.DataFrame, chunks: pd.DataFrame,
                   query_splits: pd.DataFrame, human_queries: list, finetuned_biencoder: dict,
                   baseline_index: dict, finetuned_index: dict, embedder: EmbedderResource,
                   lancedb: LanceDBResource, mlflow: MLflowResource, workspace: WorkspaceResource,
                   config: LearningCurveConfig) -> dg.Output[pd.DataFrame]:
    """nDCG@10 and recall@10 against training examples (nested subsets x seeds, the base and the shipped model)
    on the validation split and every human query set."""
    if not config.enabled:
        return dg.Output(points_frame([]), metadata={
            "skipped": "the learning curve is off: drop --no-learning-curve, or enabled: true in this asset's config"})
    if (skipped := untrainable(embedder, "the learning curve")) is not None:   # it fine-tunes the base model
        context.log.info(skipped["skipped"])
        return dg.Output(points_frame([]), metadata={"skipped": skipped["skipped"], "models_trained": 0})
    reports = workspace.reports_dir
    png, data, meta = (reports / f"learning_curve.{ext}" for ext in ("png", "parquet", "json"))
    run_id = finetuned_biencoder.get("mlflow_run_id")
    request = {"model_run_id": run_id, **config.model_dump(exclude={"enabled"})}
    if finetuned_biencoder.get("retrained") is False and (points := last_curve(reports, request)) is not None:
        note = "reused: the bi-encoder was not retrained, so the last curve (same model, same settings) still holds"
        context.log.info(f"learning_curve: {note}")
        return dg.Output(points, metadata=_metadata(points, png, finetuned_biencoder, note, models_trained=0))

    # 1. The subsets: nested, whole queries; sizes the train split cannot fill are left to the "all" point
    weights = (finetuned_biencoder.get("synthetic_weight", 1.0), finetuned_biencoder.get("feedback_weight", 1.0))
    blended = blend_rows(training_triplets, *weights)
    train = blended[blended["split"] == "train"]
    logged = logged_queries_in(train)
    unit = ("logged_queries" if logged else "examples") if config.unit == "auto" else config.unit
    if unit not in ("examples", "logged_queries"):
        raise ValueError(f"learning_curve unit {config.unit!r}: use auto, examples or logged_queries")
    full_size = len(logged) if unit == "logged_queries" else len(train)
    if unit == "logged_queries":   # one logged query is a point (its rows); "all" covers full_size and more
        sizes = [s for s in sorted(set(config.logged_sizes)) if 1 <= s < full_size]
        dropped = [s for s in config.logged_sizes if s not in sizes]
    else:
        sizes, dropped = usable_sizes(config.sizes, full_size)
    if dropped:
        context.log.info(f"learning_curve: sizes {dropped} dropped (the train split has {full_size} {unit})")

    # 2. The query sets, and one scoring pass (the corpus encoded once) per model
    sets = {n: s for n, s in build_query_sets(query_splits, human_queries, chunks, "validation").items() if s.qids}
    ids, texts = chunks["chunk_id"].astype(str).tolist(), chunks["text"].tolist()

    def scored(path: str | None, stored=None, **point) -> list[dict]:
        return [{**point, **r} for r in score_model(lambda t: embedder.encode(t, path), sets, ids, texts, stored)]

    # the base and the shipped model's chunk vectors are already in their indices: read, not embedded again
    base_vectors, full_vectors = (lancedb.index_vectors(index, ids)[0] for index in (baseline_index, finetuned_index))
    rows = scored(None, base_vectors, size=0, seed=None, kind="baseline", n_examples=0)
    rows += scored(finetuned_biencoder["model_path"], full_vectors, size=full_size,
                   seed=shipped_seed(finetuned_biencoder, mlflow), kind="full", n_examples=len(train))
    reused = sum(v is not None for v in (base_vectors, full_vectors))

    # 3. Train and score each (seed, size) with the shipped model's recipe
    plan = plan_for(embedder.resolved_device())
    t0, total_steps = time.perf_counter(), 0
    for seed in config.seeds:
        settings = TrainSettings(epochs=config.epochs, learning_rate=config.learning_rate,
                                 batch_size=config.batch_size * plan.batch_scale, interpolation=config.interpolation,
                                 evals_per_run=1, seed=seed, precision=plan.precision)
        for size in sizes:
            subset = logged_subset(train, size, seed) if unit == "logged_queries" else nested_subset(train, size, seed)
            with tempfile.TemporaryDirectory(prefix="learning_curve-") as tmp:   # the models are scored, not kept
                path, steps = train_point(embedder, subset, chunks, settings, Path(tmp))
                total_steps += steps
                rows += scored(path, size=size, seed=seed, kind="subset", n_examples=len(subset))
                embedder.unload(path)
            context.log.info(f"learning_curve: seed {seed}, {len(subset)} rows, {steps} steps "
                             f"({time.perf_counter() - t0:.0f}s so far)")
    seconds = time.perf_counter() - t0

    # 4. Write the data and the plot, and add both to the shipped model's MLflow run
    points = points_frame(rows)
    points.to_parquet(data, index=False)
    meta.write_text(json.dumps({"request": request, "generated_at": datetime.now(timezone.utc).isoformat(),
                                "sizes_dropped": dropped, "points": json.loads(points.to_json(orient="records"))},
                               indent=2))
    xlabel = ("logged training queries (each point: the shipped blend on that many)" if unit == "logged_queries"
              else "training examples (triplet rows)")
    plot_curve(points, png, title=f"Learning curve: {chunks.attrs.get('corpus_name', 'corpus')}", xlabel=xlabel)
    if run_id:
        mlflow.log_to_run(run_id, {"learning_curve.seconds": seconds}, [str(png), str(data), str(meta)],
                          series=mlflow_series(summarize(points)))
    return dg.Output(points, metadata=_metadata(
        points, png, finetuned_biencoder, f"computed: {len(config.seeds) * len(sizes)} models trained",
        models_trained=len(config.seeds) * len(sizes), steps=total_steps, seconds=round(seconds, 1), unit=unit,
        indices_reused=reused,   # of the base and shipped models' chunk vectors, read from their LanceDB tables
        #   seconds: training + scoring; steps: every model's together (pipelines/estimate.py's cost a step)
        sizes=dg.MetadataValue.json(sizes), sizes_dropped=dg.MetadataValue.json(dropped)))


def _metadata(points: pd.DataFrame, png: Path, finetuned_biencoder: dict, note: str, **extra) -> dict:
    summary = summarize(points)
    return {
        "learning_curve": image(png, alt="learning curve: nDCG@10 and recall@10 against training examples"),
        "ndcg@10": dg.MetadataValue.md(summary_markdown(summary, "ndcg@10")),
        "recall@10": dg.MetadataValue.md(summary_markdown(summary, "recall@10")),
        "status": note,
        "points": len(points),
        "query_sets": dg.MetadataValue.json(sorted(set(points["query_set"]))),
        "path": dg.MetadataValue.path(str(png.with_suffix(".parquet"))),
        "mlflow_run": dg.MetadataValue.url(finetuned_biencoder.get("mlflow_run_url") or ""),
        **extra,
    }
