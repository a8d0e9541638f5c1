"""Fine-tuning recipe for the bi-encoder, free of Dagster so it can be run and tested on its own.

Loss: MultipleNegativesRankingLoss (InfoNCE, scale 20) over (query, positive, hard negative) rows: every
other positive and negative in the batch is a negative too. The NO_DUPLICATES batch sampler keeps a text
from appearing twice in a batch, where it would be its own false negative.

Guarding the base model's quality (plain contrastive tuning on generated queries often makes a good
model worse): a low learning rate, validation on held-out documents during training with the best
checkpoint kept, and WiSE-FT weight interpolation (Wortsman et al. 2022): the shipped weights are
alpha * fine-tuned + (1 - alpha) * base, keeping much of what the base model knew.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd


@dataclass
class TrainSettings:
    epochs: float = 1.0
    max_steps: int = 0                # > 0 overrides epochs
    learning_rate: float = 1e-5
    batch_size: int = 32              # 32 x (query, pos, neg) = 96 texts a step; ~3 s a step on 2 CPU cores
    warmup_ratio: float = 0.1
    evals_per_run: int = 4            # validation passes during training; the best checkpoint is kept
    interpolation: float = 0.5        # WiSE-FT alpha: 1.0 ships the raw fine-tuned weights
    seed: int = 42
    precision: str = "fp32"           # "bf16" / "fp16" on an accelerator (resources.device.plan_for)
    loss: str = "mnrl"                # "mnrl" (contrastive) or "margin_mse" (distil a teacher's margins, as GPL)


@dataclass
class TrainResult:
    model_path: str
    steps: int
    history: list[dict] = field(default_factory=list)   # every logged dict (loss, lr, eval metrics) with its step
    validation_base: dict[str, float] = field(default_factory=dict)
    validation_final: dict[str, float] = field(default_factory=dict)


def interpolate_weights(base_state: dict, tuned_state: dict, alpha: float) -> dict:
    """alpha * tuned + (1 - alpha) * base for every floating tensor; other tensors from the tuned model."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"interpolation must be in [0, 1], got {alpha}")
    out = {}
    for name, tuned in tuned_state.items():
        base = base_state.get(name)
        if base is not None and tuned.is_floating_point() and base.shape == tuned.shape:
            out[name] = alpha * tuned + (1.0 - alpha) * base.to(tuned.dtype)
        else:
            out[name] = tuned
    return out


def validation_evaluator(triplets: pd.DataFrame, chunks: pd.DataFrame, max_corpus: int = 1000, seed: int = 0):
    """IR evaluator over the validation queries: their positives, their negatives and a fixed sample of chunks."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    val = triplets[triplets["split"] == "validation"]
    if val.empty:
        return None
    queries = dict(zip(val["query_id"], val["anchor"]))
    relevant: dict[str, set[str]] = {}
    for r in val.itertuples(index=False):
        relevant.setdefault(r.query_id, set()).add(r.positive_chunk_id)
    keep = set(val["positive_chunk_id"]) | set(val["negative_chunk_id"])
    rest = chunks[~chunks["chunk_id"].isin(keep)]
    fill = rest.sample(n=min(len(rest), max(0, max_corpus - len(keep))), random_state=seed)
    corpus = dict(zip(chunks.loc[chunks["chunk_id"].isin(keep), "chunk_id"], chunks.loc[chunks["chunk_id"].isin(keep), "text"]))
    corpus.update(zip(fill["chunk_id"], fill["text"]))
    return InformationRetrievalEvaluator(queries, corpus, relevant, name="validation", write_csv=False,
                                         accuracy_at_k=[1, 3], precision_recall_at_k=[10], map_at_k=[10],
                                         show_progress_bar=False)


def teacher_margins(cross_encoder, triplets: pd.DataFrame, batch_size: int = 32) -> list[float]:
    """sigmoid(teacher(q, pos)) - sigmoid(teacher(q, neg)) per row: the margin-MSE target (Hofstaetter et al.
    2020; GPL). Probabilities, not logits: the student's margin is a difference of cosines, inside [-2, 2]."""
    import numpy as np

    if triplets.empty:
        return []
    pairs = [(r.anchor, r.positive) for r in triplets.itertuples(index=False)]
    pairs += [(r.anchor, r.negative) for r in triplets.itertuples(index=False)]
    logits = np.asarray(cross_encoder.predict(pairs, batch_size=batch_size, convert_to_numpy=True,
                                              show_progress_bar=False), dtype="float64").reshape(-1)
    prob = 1.0 / (1.0 + np.exp(-logits))
    n = len(triplets)
    return (prob[:n] - prob[n:]).tolist()


def train_biencoder(model, triplets: pd.DataFrame, chunks: pd.DataFrame, out_dir: Path, settings: TrainSettings,
                    on_log: Callable[[dict, int], None] | None = None) -> TrainResult:
    """Fine-tune `model` (a SentenceTransformer, modified in place) and save the shipped weights to out_dir."""
    import copy

    from datasets import Dataset
    from sentence_transformers.sentence_transformer import (SentenceTransformerTrainer,
                                                            SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import TrainerCallback

    from sentence_transformers.sentence_transformer.losses import MarginMSELoss

    if settings.loss not in ("mnrl", "margin_mse"):
        raise ValueError(f"loss must be 'mnrl' or 'margin_mse', got {settings.loss!r}")
    distil = settings.loss == "margin_mse"
    if distil and "label" not in triplets:
        raise ValueError("margin_mse needs a 'label' column: the teacher's score margin (teacher_margins)")

    # 1. Data: the train split as (anchor, positive, negative[, label]) columns, in that order
    train = triplets[triplets["split"] == "train"][["anchor", "positive", "negative", *(["label"] if distil else [])]]
    if len(train) < 2:
        raise ValueError(f"only {len(train)} training triplets: write more queries (queries_per_chunk, max_chunks) "
                         "or lower the split fractions")
    train_ds = Dataset.from_pandas(train.reset_index(drop=True), preserve_index=False)
    evaluator = validation_evaluator(triplets, chunks, seed=settings.seed)
    base_state = copy.deepcopy(model.state_dict()) if settings.interpolation < 1.0 else None

    # 2. The step budget and how often to validate
    batch = min(settings.batch_size, len(train))
    steps_per_epoch = max(1, len(train) // batch)
    total = settings.max_steps or max(1, int(round(steps_per_epoch * settings.epochs)))
    eval_every = max(1, total // max(1, settings.evals_per_run))

    history: list[dict] = []

    class _Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                history.append({"step": state.global_step, **logs})
                if on_log:
                    on_log(logs, state.global_step)

    validation_base = evaluator(model) if evaluator is not None else {}
    if on_log and validation_base:
        on_log({f"eval_{k}": v for k, v in validation_base.items()}, 0)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=settings.epochs,
        max_steps=total,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        learning_rate=settings.learning_rate,
        warmup_steps=int(settings.warmup_ratio * total),
        batch_sampler=BatchSamplers.BATCH_SAMPLER if distil else BatchSamplers.NO_DUPLICATES,  # MNRL: a repeated
        #   text in a batch would be its own false negative; margin-MSE looks at each row alone
        eval_strategy="steps" if evaluator is not None else "no",
        eval_steps=eval_every,
        save_strategy="steps" if evaluator is not None else "no",
        save_steps=eval_every,
        save_total_limit=1,
        load_best_model_at_end=evaluator is not None,   # keep the checkpoint that validated best
        metric_for_best_model="eval_validation_cosine_ndcg@10",
        logging_steps=max(1, min(10, eval_every)),
        bf16=settings.precision == "bf16",
        fp16=settings.precision == "fp16",
        seed=settings.seed,
        report_to="none",                               # MLflow is driven by the asset, through on_log
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=None,
        loss=MarginMSELoss(model) if distil else MultipleNegativesRankingLoss(model),
        evaluator=evaluator,
        callbacks=[_Recorder()],
    )
    trainer.train()

    # 3. WiSE-FT: move part of the way back towards the base weights
    if base_state is not None:
        model.load_state_dict(interpolate_weights(base_state, model.state_dict(), settings.interpolation))
    validation_final = evaluator(model) if evaluator is not None else {}
    if on_log and validation_final:
        on_log({f"eval_final_{k}": v for k, v in validation_final.items()}, total + 1)

    # 4. Save the shipped model (the checkpoints folder is scratch)
    model_path = out_dir / "model"
    model.save(str(model_path))
    import shutil

    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return TrainResult(str(model_path), total, history, validation_base, validation_final)
