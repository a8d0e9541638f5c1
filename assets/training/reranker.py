"""The fine-tuned cross-encoder reranker: trained on the graded pairs and the hard negatives, validated while
it trains, tracked in MLflow and registered as a model version, like the bi-encoder.

The recipe is in assets/training/crossencoder.py. By default the reranker starts from the base bi-encoder's
body (the bundled MiniLM) with a fresh scoring head; `base_model` names a hub cross-encoder or a local
folder instead, whose head is then fine-tuned.
"""

import time

import dagster as dg
import pandas as pd

from assets.common import preview
from assets.splits import split_of
from assets.training.crossencoder import (RerankerSettings, is_biencoder_folder, load_reranker, reranker_pairs,
                                         train_crossencoder)
from assets.training.blend import blend_rows
from assets.training.scaffold import (end_killed_training_runs, mlflow_metric_logger, pinned_requirements, run_tags,
                                     skipped_metadata, untrainable)
from assets.training.retrain import retrain_or_reuse
from resources.device import plan_for
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

CROSSENCODER_KIND = "crossencoder"   # registered as mlflow.model_name(corpus, kind): "flywheel-<corpus>-crossencoder"


class RerankerConfig(dg.Config):
    base_model: str = ""            # "" = the base bi-encoder's body + a fresh head; or a hub cross-encoder / folder
    epochs: float = 1.0
    max_steps: int = 0              # > 0 overrides epochs and min_steps
    min_steps: int = 300            # the head's ln 2 plateau lasts ~170 steps (crossencoder.MIN_STEPS_WHY)
    learning_rate: float = 5e-5     # the body learns a new task: higher than the bi-encoder's 1e-5
    head_learning_rate: float = 1e-3  # the fresh scoring head added to a bi-encoder's body (not a trained reranker's)
    batch_size: int = 16
    micro_batch: int = 8            # pairs a pass, gradients summed over batch_size / micro_batch passes: the same
    #   update with half the activations (0 = the whole batch at once); not part of what decides a retrain
    max_length: int = 256
    evals_per_run: int = 4
    seed: int = 42
    relevant_grade: int = 2         # validation: a pair with grade >= this (target >= 2/3) is a positive
    register_model: bool = True     # register in the MLflow registry (CROSSENCODER_KIND)
    min_change_to_retrain: float = 0.05  # as the bi-encoder's (assets/training/retrain.py): a nightly run on an
    #   unchanged corpus reuses the last reranker instead of paying ~10 min of CPU training for the same model
    synthetic_weight: float = 1.0   # the blend, as the bi-encoder's (assets/training/blend.py): synthetic pairs x this,
    feedback_weight: float = 1.0    # logged-feedback pairs x this; 0 leaves an origin out


def log_reranker_model(mlflow_api, model_path: str, registered_name: str | None):
    """Log the saved reranker as an MLflow pyfunc model (predict: DataFrame[query, passage] -> scores), as a
    version of `registered_name` (None: logged, not registered)."""
    from assets.training.reranker_pyfunc import CrossEncoderModel

    info = mlflow_api.pyfunc.log_model(
        name="model", python_model=CrossEncoderModel(), artifacts={"cross_encoder": model_path},
        pip_requirements=pinned_requirements("sentence-transformers", "transformers", "torch", "pandas"),
        registered_model_name=registered_name)
    return getattr(info, "registered_model_version", None)


@dg.asset(group_name="training", compute_kind="pytorch", pool="gpu", op_tags=compute_tags("gpu"))
def finetuned_crossencoder(context: dg.AssetExecutionContext, query_splits: pd.DataFrame,
                           document_splits: pd.DataFrame, relevance_labels: pd.DataFrame, training_triplets: pd.DataFrame, chunks: pd.DataFrame,
                           embedder: EmbedderResource, mlflow: MLflowResource, workspace: WorkspaceResource,
                           config: RerankerConfig) -> dg.Output[dict]:
    """A cross-encoder reranker fine-tuned on LLM-graded pairs and mined hard negatives, registered in MLflow;
    skipped (the last one kept) when too little changed since it was trained. Over a provider's embeddings
    there is no base model's body to start from: not trained, unless `base_model` names one."""
    hint = "set base_model in this asset's config (a hub cross-encoder or a local folder) to train one anyway"
    if not config.base_model and (skipped := untrainable(embedder, "the cross-encoder reranker", hint)) is not None:
        context.log.info(skipped["skipped"])
        return dg.Output(skipped, metadata=skipped_metadata(skipped))
    base = config.base_model or embedder.base_model_path()
    splits = split_of(document_splits)
    pairs = reranker_pairs(query_splits, relevance_labels, training_triplets, chunks,
                           lambda doc: splits.get(doc, ""), config.relevant_grade)
    pairs = blend_rows(pairs, config.synthetic_weight, config.feedback_weight, config.seed,
                       origin=pairs["origin"].map(lambda o: "feedback" if o.startswith("feedback") else "synthetic"))
    train_queries = sorted(set(pairs.loc[pairs["split"] == "train", "query_id"].astype(str)))
    registered = mlflow.model_name(chunks.attrs.get("corpus_name", "corpus"), CROSSENCODER_KIND)
    return retrain_or_reuse(
        context, workspace.models_dir / "crossencoder" / "last_trained.json",
        {**config.model_dump(exclude={"min_change_to_retrain", "register_model", "micro_batch"}), "base_model": base,
         "registered_model": registered},   # as the bi-encoder's: a model kept under another name is retrained
        list(chunks["chunk_id"].astype(str)), train_queries, config.min_change_to_retrain,
        lambda: train_reranker(context, pairs, chunks, base, embedder, mlflow, workspace, config))


def train_reranker(context, pairs: pd.DataFrame, chunks: pd.DataFrame, base: str, embedder: EmbedderResource,
                   mlflow: MLflowResource, workspace: WorkspaceResource, config: RerankerConfig) -> dg.Output[dict]:
    """Train the reranker on `pairs`, track it in MLflow, register it; the asset's output when it retrains."""
    import mlflow as mlflow_api

    device = embedder.resolved_device()
    plan = plan_for(device)
    settings = RerankerSettings(epochs=config.epochs, max_steps=config.max_steps, min_steps=config.min_steps,
                                learning_rate=config.learning_rate,
                                head_learning_rate=config.head_learning_rate if is_biencoder_folder(base) else 0.0,
                                batch_size=config.batch_size * plan.batch_scale,
                                micro_batch=config.micro_batch * plan.batch_scale, evals_per_run=config.evals_per_run,
                                max_length=config.max_length, seed=config.seed, precision=plan.precision)
    model = load_reranker(base, device, config.max_length)
    corpus_name = chunks.attrs.get("corpus_name", "corpus")
    registered_name = mlflow.model_name(corpus_name, CROSSENCODER_KIND) if config.register_model else None
    tags = run_tags(context, chunks, base, device, "cross-encoder")
    killed = end_killed_training_runs(context, mlflow, workspace)   # a kill -9 left them RUNNING
    t0 = time.perf_counter()
    with mlflow.start_run(corpus_name, run_name=f"crossencoder-{context.run_id[:8]}", tags=tags) as run:
        counts = pairs.groupby(["split", "origin"]).size()
        mlflow_api.log_params({**settings.__dict__, "loss": "BinaryCrossEntropyLoss(graded targets)",
                               "base_model": base, **{f"n_{s}_{o}": int(n) for (s, o), n in counts.items()}})

        out_dir = workspace.models_dir / "crossencoder" / run.info.run_id
        result = train_crossencoder(model, pairs, out_dir, settings, on_log=mlflow_metric_logger(mlflow_api))
        seconds = time.perf_counter() - t0
        mlflow_api.log_metric("train_seconds", seconds)
        version = log_reranker_model(mlflow_api, result.model_path, registered_name)
        url = mlflow.run_url(run)
    key = "validation_ndcg@10"
    losses = [h["loss"] for h in result.history if "loss" in h]   # ln 2 = 0.693 throughout: the head learned nothing
    value = {"model_path": result.model_path, "mlflow_run_id": run.info.run_id, "mlflow_run_url": url,
             "registered_model": registered_name,
             "model_version": version, "base_model": base, "max_length": config.max_length, "steps": result.steps,
             "validation_ndcg@10_before": result.validation_base.get(key),
             "validation_ndcg@10_after": result.validation_final.get(key)}
    return dg.Output(value, metadata={
        "mlflow_run": dg.MetadataValue.url(url),
        "model_version": str(version),
        "killed_runs_ended": len(killed),
        "n_train_pairs": int((pairs["split"] == "train").sum()),
        "n_validation_pairs": int((pairs["split"] == "validation").sum()),
        "pairs_by_origin": dg.MetadataValue.json({o: int(n) for o, n in pairs["origin"].value_counts().items()}),
        "steps": result.steps,
        **{f"train_loss_{at}": float(losses[i]) for at, i in (("first", 0), ("last", -1)) if losses},
        "train_seconds": round(seconds, 1),
        "device": device,
        "precision": plan.precision,
        "validation_ndcg@10_before": float(result.validation_base.get(key, float("nan"))),
        "validation_ndcg@10_after": float(result.validation_final.get(key, float("nan"))),
        "base_model": base,
        "preview": preview(pairs[["split", "origin", "target", "query", "passage"]], 6),
    })
