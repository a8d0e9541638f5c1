"""The distillation option: a bi-encoder trained from the fine-tuned cross-encoder's scores (margin-MSE, as GPL
does) instead of contrastively. Same triplets, same base model, same safeguards (validation with the best
checkpoint kept, WiSE-FT); the target of each (query, positive, negative) row is the teacher's margin.
The evaluation scores it beside the contrastive model and says which did better on the human queries.

Off by default: it is a second bi-encoder training (the longest stage on a CPU). Turn it on with
`flywheel run --distill` or `enabled: true` in the asset's config.
"""

import dagster as dg
import numpy as np
import pandas as pd

from assets.training import TrainConfig, train_and_register
from assets.training.biencoder import teacher_margins
from assets.training.crossencoder import load_reranker
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

DISTILLED_KIND = "biencoder-distilled"   # registered as "flywheel-<corpus>-biencoder-distilled"


class DistillConfig(TrainConfig):
    enabled: bool = False       # a second bi-encoder training: opt in (flywheel run --distill)


@dg.asset(group_name="training", compute_kind="pytorch", pool="gpu", op_tags=compute_tags("gpu"))
def distilled_biencoder(context: dg.AssetExecutionContext, training_triplets: pd.DataFrame, chunks: pd.DataFrame,
                        finetuned_crossencoder: dict, embedder: EmbedderResource, mlflow: MLflowResource,
                        workspace: WorkspaceResource, config: DistillConfig) -> dg.Output[dict]:
    """A bi-encoder distilled from the fine-tuned cross-encoder with margin-MSE (off unless enabled)."""
    if not config.enabled:
        return dg.Output({"enabled": False}, metadata={
            "skipped": "distillation is off: flywheel run --distill, or enabled: true in this asset's config"})
    teacher = load_reranker(finetuned_crossencoder["model_path"], embedder.resolved_device(),
                            finetuned_crossencoder.get("max_length", 256))
    triplets = training_triplets.copy()
    triplets["label"] = teacher_margins(teacher, triplets)
    out = train_and_register(context, triplets, chunks, embedder, mlflow, workspace, config, "margin_mse",
                             DISTILLED_KIND)
    margins = np.asarray(triplets["label"], dtype=float)
    return dg.Output({**out.value, "enabled": True, "teacher_run_id": finetuned_crossencoder.get("mlflow_run_id")},
                     metadata={**out.metadata, "teacher_margin_mean": float(margins.mean()) if len(margins) else 0.0,
                               "teacher_prefers_positive": float((margins > 0).mean()) if len(margins) else 0.0})
