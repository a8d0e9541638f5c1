"""The query adapter asset: a map trained on query vectors over the base model's frozen document vectors
(the recipe and its safeguards are in assets/training/adapter.py), tracked in MLflow and registered.

Data: the training triplets after the blend (`synthetic_weight`, `feedback_weight`, as the bi-encoder's:
assets/training/blend.py), each row's positive and hard negative read from the baseline index's stored
vectors (never re-embedded), its query embedded once with the base model. Early stopping reads the synthetic
validation rows only: the split every model in flywheel is selected on, so the adapter is not chosen on the
logged queries the evaluation splits into seen and unseen.

Cost: seconds on a CPU (bench/adapter.py: 3,000 triplets), plus embedding the training queries once with
the base model. Like the bi-encoder it is retrained only when `min_change_to_retrain` of the chunks or the
training queries changed (assets/training/retrain.py), so an unchanged nightly run registers no new version.
Off with `enabled: false` (or `flywheel run --no-adapter`): the evaluation then has no
`dense_adapter` / `hybrid_adapter` rows.

Promotion: the adapter is a candidate of the promotion gate (assets/promotion): "the base model + this
adapter" against what serves, by the same rule as the bi-encoder, while no fine-tuned bi-encoder version
serves (an adapter maps base-model queries over base-model vectors). Promoted, it carries the registry alias
and `serving_index` serves the base model's vectors with the adapter applied to each query.
"""

import time

import dagster as dg
import pandas as pd

from assets.common import image, save_figure
from assets.training.scaffold import mlflow_metric_logger, pinned_requirements, run_tags
from assets.training.adapter import (AdapterSettings, loss_figure, save_adapter, train_adapter,
                                     triplet_vectors)
from assets.training.blend import blend_counts, blend_rows
from assets.training.retrain import retrain_or_reuse
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

ADAPTER_KIND = "adapter"   # registered as MLflowResource.model_name(corpus, "adapter"): flywheel-<corpus>-adapter
PROMOTION = ("a promotion-gate candidate: the base model + this adapter against what serves, while no fine-tuned "
             "bi-encoder version serves (promotion_gate's adapter decision); dense_adapter / hybrid_adapter against the "
             "base rows in the evaluation report are the same comparison on every query set")
_DEFAULTS = AdapterSettings()


class AdapterConfig(dg.Config):
    enabled: bool = True                  # off: flywheel run --no-adapter (no adapter rows in the evaluation)
    kind: str = _DEFAULTS.kind            # "linear" or "mlp" (a residual MLP on top of the linear map)
    hidden: int = _DEFAULTS.hidden        # mlp only
    learning_rate: float = _DEFAULTS.learning_rate
    weight_decay: float = _DEFAULTS.weight_decay
    batch_size: int = _DEFAULTS.batch_size
    max_epochs: int = _DEFAULTS.max_epochs
    patience: int = _DEFAULTS.patience
    seed: int = _DEFAULTS.seed
    register_model: bool = True           # register in the MLflow registry as flywheel-<corpus>-adapter
    min_change_to_retrain: float = 0.05   # as the bi-encoder's: below this share of changed chunks / training
    #                                       queries the last adapter is reused (0 = retrain every run)
    synthetic_weight: float = 1.0         # the blend, as the bi-encoder's: each synthetic train row this many
    feedback_weight: float = 1.0          # times, each logged-feedback row this many; 0 leaves an origin out

    def settings(self) -> AdapterSettings:
        return AdapterSettings(kind=self.kind, hidden=self.hidden, learning_rate=self.learning_rate,
                               weight_decay=self.weight_decay, batch_size=self.batch_size,
                               max_epochs=self.max_epochs, patience=self.patience, seed=self.seed)


def log_adapter_model(mlflow_api, weights_path: str, registered_name: str | None):
    """Log the weights as a pyfunc model (predict: base query vectors -> adapted vectors), registered."""
    from assets.training.adapter_pyfunc import QueryAdapterModel

    info = mlflow_api.pyfunc.log_model(name="model", python_model=QueryAdapterModel(),
                                       artifacts={"adapter": weights_path},
                                       pip_requirements=pinned_requirements("numpy", "mlflow"),   # inference is numpy only
                                       registered_model_name=registered_name)
    return getattr(info, "registered_model_version", None)


@dg.asset(group_name="training", compute_kind="pytorch")
def query_adapter(context: dg.AssetExecutionContext, training_triplets: pd.DataFrame, chunks: pd.DataFrame,
                  baseline_index: dict, embedder: EmbedderResource, lancedb: LanceDBResource,
                  mlflow: MLflowResource, workspace: WorkspaceResource, config: AdapterConfig) -> dg.Output[dict]:
    """A query-side adapter over the base model's frozen chunk vectors, registered in MLflow; skipped when off,
    and the last one kept when too little changed since it was trained."""
    if not config.enabled:
        return dg.Output({"enabled": False}, metadata={
            "skipped": "the adapter is off: enabled: true in this asset's config (flywheel run without --no-adapter)"})
    train_queries = training_triplets.loc[training_triplets["split"] == "train", "query_id"].astype(str)
    return retrain_or_reuse(
        context, workspace.models_dir / "adapter" / "last_trained.json",
        {**config.model_dump(exclude={"min_change_to_retrain", "register_model"}),
         "base_model": baseline_index.get("model") or embedder.base_model_path()},
        list(chunks["chunk_id"].astype(str)), list(train_queries), config.min_change_to_retrain,
        lambda: train_and_register_adapter(context, training_triplets, chunks, baseline_index, embedder, lancedb,
                                           mlflow, workspace, config))


def train_and_register_adapter(context, training_triplets: pd.DataFrame, chunks: pd.DataFrame, baseline_index: dict,
                               embedder: EmbedderResource, lancedb: LanceDBResource, mlflow: MLflowResource,
                               workspace: WorkspaceResource, config: AdapterConfig) -> dg.Output[dict]:
    """Train the adapter, track it in MLflow, register it; the asset's output when it retrains."""
    import mlflow as mlflow_api

    # 1. Rows: the blend's train rows, the synthetic validation rows; vectors from the index, queries encoded once
    settings = config.settings()
    blended = blend_rows(training_triplets, config.synthetic_weight, config.feedback_weight, config.seed)
    train = blended[blended["split"] == "train"]
    origin = training_triplets.get("origin", pd.Series("synthetic", index=training_triplets.index))
    val = training_triplets[(training_triplets["split"] == "validation") & (origin == "synthetic")]
    ids, mat = lancedb.open(baseline_index["table"]).vectors()
    base_model = baseline_index.get("model") or embedder.base_model_path()
    anchors = list(dict.fromkeys([*train["anchor"], *val["anchor"]]))
    t0 = time.perf_counter()
    anchor_vectors = dict(zip(anchors, embedder.encode(anchors, None)))
    encode_s = time.perf_counter() - t0
    q, p, n, missing = triplet_vectors(train, ids, mat, anchor_vectors)
    vq, vp, vn, val_missing = triplet_vectors(val, ids, mat, anchor_vectors)

    # 2. Train, tracked: per-epoch losses as MLflow metrics (step = epoch), the weights as an artifact and a model
    corpus_name = chunks.attrs.get("corpus_name", "corpus")
    registered_name = mlflow.model_name(corpus_name, ADAPTER_KIND) if config.register_model else None
    tags = run_tags(context, chunks, base_model, "cpu", "query-adapter", adapter_kind=settings.kind)
    with mlflow.start_run(corpus_name, run_name=f"adapter-{context.run_id[:8]}", tags=tags) as run:
        mlflow_api.log_params({**settings.__dict__, "loss": "InfoNCE(in-batch + hard negative, scale 20)",
                               "n_train": len(q), "n_validation": len(vq), "dim": int(mat.shape[1]),
                               "base_model": base_model, "index_table": baseline_index["table"],
                               **blend_counts(blended), "synthetic_weight": config.synthetic_weight,
                               "feedback_weight": config.feedback_weight})

        log = mlflow_metric_logger(mlflow_api)
        result = train_adapter(q, p, n, (vq, vp, vn) if len(vq) else None, settings,
                               on_epoch=lambda row: log({k: v for k, v in row.items() if k != "epoch"}, row["epoch"]))
        out_dir = workspace.models_dir / "adapter" / run.info.run_id
        weights_path = str(save_adapter(result.weights, out_dir / "adapter.npz"))
        plot = save_figure(loss_figure(result.history, settings.recall_k), out_dir / "adapter_loss.png")
        summary = {f"validation_{k}_{when}".replace("@", "_at_"): v for when, d in
                   (("identity", result.validation_identity), ("best", result.validation_best)) for k, v in d.items()}
        mlflow_api.log_metrics({"train_seconds": result.seconds, "best_epoch": result.best_epoch, **summary})
        mlflow_api.log_artifact(weights_path)
        mlflow_api.log_artifact(str(plot))
        version = log_adapter_model(mlflow_api, weights_path, registered_name)
        url = mlflow.run_url(run)
    k = f"recall@{settings.recall_k}"
    value = {"enabled": True, "kind": settings.kind, "weights_path": weights_path, "model_path": weights_path,
             "base_model": base_model,
             "index_table": baseline_index["table"], "dim": int(mat.shape[1]), "mlflow_run_id": run.info.run_id,
             "mlflow_run_url": url, "registered_model": registered_name,
             "model_version": version, "steps": result.steps, "epochs": result.epochs, "best_epoch": result.best_epoch,
             "validation_loss_identity": result.validation_identity.get("loss"),
             "validation_loss_best": result.validation_best.get("loss"),
             f"validation_{k}_identity": result.validation_identity.get(k),
             f"validation_{k}_best": result.validation_best.get(k), "promotion": PROMOTION}
    losses = [h["train_loss"] for h in result.history]
    nan = float("nan")
    return dg.Output(value, metadata={
        "mlflow_run": dg.MetadataValue.url(url),
        "mlflow_run_id": run.info.run_id,
        "model_version": str(version),
        "kind": settings.kind,
        "steps": result.steps,
        "epochs": result.epochs,
        "best_epoch": dg.MetadataValue.int(result.best_epoch),   # 0: no epoch beat the identity
        "stopped_early": result.stopped_early,
        "train_loss_first": float(losses[0]) if losses else nan,
        "train_loss_last": float(losses[-1]) if losses else nan,
        "validation_loss_identity": float(result.validation_identity.get("loss", nan)),
        "validation_loss_best": float(result.validation_best.get("loss", nan)),
        f"validation_{k}_identity": float(result.validation_identity.get(k, nan)),
        f"validation_{k}_best": float(result.validation_best.get(k, nan)),
        "train_seconds": round(result.seconds, 2),
        "query_encode_seconds": round(encode_s, 2),
        "n_train": len(q), "n_validation": len(vq), **blend_counts(blended),
        "rows_without_vectors": missing + val_missing,
        "dim": int(mat.shape[1]),
        "base_model": base_model,
        "weights_path": weights_path,
        "loss_curve": image(plot, alt="adapter: train and validation loss, validation recall per epoch"),
        "promotion": PROMOTION,
    })
