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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from assets.training.scaffold import (TrainResult, checkpoint_args, finish, recorder, step_budget,  # noqa: F401
                                      validate)


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
    validation_corpus: int = 1000     # chunks the validation queries are searched in (their own + a fixed sample)
    mini_batch_size: int = 4          # texts a forward/backward pass holds at once; the batch's loss is the same
    #   (mnrl: GradCache, CachedMultipleNegativesRankingLoss; margin_mse: gradient accumulation). 0 = the whole
    #   batch at once: 32 x 3 texts of <= 256 tokens keep ~8 GB of activations on a CPU (bench/throughput.py)


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
    from sentence_transformers.sentence_transformer.losses import (CachedMultipleNegativesRankingLoss, MarginMSELoss,
                                                                   MultipleNegativesRankingLoss)
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

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
    evaluator = validation_evaluator(triplets, chunks, max_corpus=settings.validation_corpus, seed=settings.seed)
    base_state = copy.deepcopy(model.state_dict()) if settings.interpolation < 1.0 else None

    # 2. The step budget, how often to validate, and the trainer (scaffold.py: shared with the cross-encoder)
    budget = step_budget(len(train), settings.batch_size, settings.epochs, settings.max_steps, settings.evals_per_run)
    history: list[dict] = []
    validation_base = validate(evaluator, model, on_log, "eval_", 0)
    mini = settings.mini_batch_size if 0 < settings.mini_batch_size < budget.batch else 0
    accumulate = distil and mini and budget.batch % mini == 0   # margin-MSE is per row: accumulation is exact
    if distil:
        loss_fn = MarginMSELoss(model)
    elif mini:   # in-batch negatives over the whole batch, activations for `mini` texts at a time
        loss_fn = CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini, show_progress_bar=False)
    else:
        loss_fn = MultipleNegativesRankingLoss(model)
    trainer_args = checkpoint_args(out_dir, budget, validated=evaluator is not None,
                                   metric="eval_validation_cosine_ndcg@10", learning_rate=settings.learning_rate,
                                   warmup_ratio=settings.warmup_ratio, precision=settings.precision, seed=settings.seed)
    if accumulate:
        trainer_args.update(per_device_train_batch_size=mini, gradient_accumulation_steps=budget.batch // mini)
    args = SentenceTransformerTrainingArguments(
        **trainer_args,
        num_train_epochs=settings.epochs,
        per_device_eval_batch_size=budget.batch,
        batch_sampler=BatchSamplers.BATCH_SAMPLER if distil else BatchSamplers.NO_DUPLICATES,  # MNRL: a repeated
        #   text in a batch would be its own false negative; margin-MSE looks at each row alone
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=None,
        loss=loss_fn,
        evaluator=evaluator,
        callbacks=[recorder(history, on_log)],
    )
    trainer.train()

    # 3. WiSE-FT: move part of the way back towards the base weights
    if base_state is not None:
        model.load_state_dict(interpolate_weights(base_state, model.state_dict(), settings.interpolation))
    # 4. Validate the shipped weights, save them, delete the scratch checkpoints
    return finish(model, evaluator, on_log, budget, out_dir, history, validation_base)
