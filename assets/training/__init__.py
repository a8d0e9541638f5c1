"""Training: the fine-tuned bi-encoder, every run tracked in MLflow and registered as a model version.

The recipe (loss, safeguards, why) is in assets/training/biencoder.py. This asset wires the triplets, the
base model, the device plan and MLflow: parameters, per-step loss and validation metrics, tags for the
corpus hash and the code version, the model logged and registered, and the run's link in the metadata.
"""

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.training.biencoder import TrainSettings, train_biencoder
from assets.training.version import code_version  # noqa: F401  (re-exported)
from assets.training.scaffold import (end_killed_training_runs, mlflow_metric_logger, pinned_requirements, run_tags,
                                     skipped_metadata, untrainable)
from assets.training.blend import blend_counts, blend_rows
from assets.training.retrain import retrain_or_reuse
from resources.compute import compute_tags
from resources.device import plan_for
from resources.embedder import EmbedderResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

BIENCODER_KIND = "biencoder"   # registered as mlflow.model_name(corpus, kind): "flywheel-<corpus>-biencoder"
LOSS_NAMES = {"mnrl": "MultipleNegativesRankingLoss", "margin_mse": "MarginMSELoss"}


class TrainConfig(dg.Config):
    epochs: float = 1.0
    max_steps: int = 0                  # > 0 overrides epochs: a fixed budget for nightly runs
    learning_rate: float = 1e-5         # half the usual 2e-5: a good base model is easy to damage
    batch_size: int = 32
    validation_corpus: int = 1000       # chunks each validation pass embeds and searches (the validation queries'
                                        # own positives and negatives, then a fixed sample of the rest)
    mini_batch_size: int = 4            # texts in memory at once (GradCache for MNRL: the same loss as the whole
                                        # batch, in ~1/5 of the memory); 0 = the whole batch (~8 GB on a CPU); 4
                                        # was 1.05x faster than 8 and 0.75x the peak (bench/throughput.py); not
                                        # part of what decides a retrain
    interpolation: float = 0.5          # WiSE-FT: 0.5 * tuned + 0.5 * base; 1.0 ships the raw fine-tune
    evals_per_run: int = 4
    seed: int = 42
    register_model: bool = True         # register the model in the MLflow registry (BIENCODER_KIND)
    min_change_to_retrain: float = 0.05  # retrain only when >= 5% of chunks or training queries changed since the
                                         # model in use was trained (assets/training/retrain.py); 0 = every run
    synthetic_weight: float = 1.0       # the blend (assets/training/blend.py): each synthetic train row used this
    feedback_weight: float = 1.0        # many times, and each logged-feedback row this many; 0 leaves an origin out


def train_and_register(context, training_triplets: pd.DataFrame, chunks: pd.DataFrame, embedder: EmbedderResource,
                       mlflow: MLflowResource, workspace: WorkspaceResource, config: TrainConfig, loss: str,
                       registered_kind: str) -> dg.Output[dict]:
    """Train a bi-encoder from the base model with `loss`, track it in MLflow, register it as this corpus's
    `registered_kind` (mlflow.model_name); the asset's output."""
    import mlflow as mlflow_api

    training_triplets = blend_rows(training_triplets, config.synthetic_weight, config.feedback_weight, config.seed)
    device = embedder.resolved_device()
    plan = plan_for(device)
    settings = TrainSettings(epochs=config.epochs, max_steps=config.max_steps, learning_rate=config.learning_rate,
                             batch_size=config.batch_size * plan.batch_scale, interpolation=config.interpolation,
                             evals_per_run=config.evals_per_run, seed=config.seed, precision=plan.precision, loss=loss,
                             mini_batch_size=config.mini_batch_size * plan.batch_scale,
                             validation_corpus=config.validation_corpus)
    corpus_name = chunks.attrs.get("corpus_name", "corpus")
    registered_name = mlflow.model_name(corpus_name, registered_kind)
    tags = run_tags(context, chunks, embedder.base_model_path(), device, "bi-encoder", loss=loss)
    killed = end_killed_training_runs(context, mlflow, workspace)   # a kill -9 left them RUNNING
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedder.base_model_path(), device=device)
    model.max_seq_length = embedder.max_seq_length
    t0 = time.perf_counter()
    kind = "biencoder" if loss == "mnrl" else f"biencoder-{loss}"
    with mlflow.start_run(corpus_name, run_name=f"{kind}-{context.run_id[:8]}", tags=tags) as run:
        mlflow_api.log_params({**settings.__dict__, "n_train": int((training_triplets["split"] == "train").sum()),
                               "n_validation": int((training_triplets["split"] == "validation").sum()),
                               "loss": LOSS_NAMES[loss], "n_chunks": len(chunks), **blend_counts(training_triplets),
                               "synthetic_weight": config.synthetic_weight, "feedback_weight": config.feedback_weight})

        out_dir = workspace.models_dir / kind / run.info.run_id
        result = train_biencoder(model, training_triplets, chunks, out_dir, settings,
                                 on_log=mlflow_metric_logger(mlflow_api))
        seconds = time.perf_counter() - t0
        mlflow_api.log_metric("train_seconds", seconds)
        version = None
        if config.register_model:
            info = mlflow_api.sentence_transformers.log_model(
                model, name="model", registered_model_name=registered_name,
                pip_requirements=pinned_requirements("sentence-transformers", "transformers", "torch"))
            version = getattr(info, "registered_model_version", None)
        url = mlflow.run_url(run)
    key = "validation_cosine_ndcg@10"
    value = {"model_path": result.model_path, "mlflow_run_id": run.info.run_id, "mlflow_run_url": url,
             "registered_model": registered_name if config.register_model else None, "model_version": version,
             "base_model": embedder.base_model_path(), "steps": result.steps, "loss": loss, "seed": settings.seed,
             "validation_ndcg@10_base": result.validation_base.get(key),
             "validation_ndcg@10_finetuned": result.validation_final.get(key),
             "synthetic_weight": config.synthetic_weight, "feedback_weight": config.feedback_weight}
    return dg.Output(value, metadata={
        "mlflow_run": dg.MetadataValue.url(url),
        "mlflow_run_id": run.info.run_id,
        "killed_runs_ended": len(killed),
        "model_version": str(version),
        "loss": LOSS_NAMES[loss],
        "steps": result.steps,
        "train_seconds": round(seconds, 1),
        "device": device,
        "precision": plan.precision,
        "validation_ndcg@10_base": float(result.validation_base.get(key, float("nan"))),
        "validation_ndcg@10_finetuned": float(result.validation_final.get(key, float("nan"))),
        "model_path": result.model_path,
        **blend_counts(training_triplets),
    })


@dg.asset(group_name="training", compute_kind="pytorch", pool="gpu", op_tags=compute_tags("gpu"))
def finetuned_biencoder(context: dg.AssetExecutionContext, training_triplets: pd.DataFrame, chunks: pd.DataFrame,
                        embedder: EmbedderResource, mlflow: MLflowResource, workspace: WorkspaceResource,
                        config: TrainConfig) -> dg.Output[dict]:
    """The bi-encoder fine-tuned on the triplets, saved locally and registered in MLflow; skipped (the last
    model kept) when too little changed since it was trained, and not trained over a provider's embeddings."""
    if (skipped := untrainable(embedder, "the bi-encoder")) is not None:
        context.log.info(skipped["skipped"])
        return dg.Output(skipped, metadata=skipped_metadata(skipped))
    train_queries = training_triplets.loc[training_triplets["split"] == "train", "query_id"].astype(str)
    registered = mlflow.model_name(chunks.attrs.get("corpus_name", "corpus"), BIENCODER_KIND)
    return retrain_or_reuse(
        context, workspace.models_dir / "biencoder" / "last_trained.json",
        {**config.model_dump(exclude={"min_change_to_retrain", "register_model", "mini_batch_size"}),
         "base_model": embedder.base_model_path(), "registered_model": registered},   # a model kept under another name is not a version of this corpus's
        list(chunks["chunk_id"].astype(str)), list(train_queries), config.min_change_to_retrain,
        lambda: train_and_register(context, training_triplets, chunks, embedder, mlflow, workspace, config, "mnrl",
                                   BIENCODER_KIND))


from assets.training.reranker import finetuned_crossencoder  # noqa: E402,F401  (the reranker: its own module)
from assets.training.distilled import distilled_biencoder  # noqa: E402,F401  (the distillation option)
from assets.training.learning_curve import learning_curve  # noqa: E402,F401  (training on growing subsets)
from assets.training.query_adapter import query_adapter  # noqa: E402,F401  (the query-side adapter)
