"""Fine-tuning recipe for the cross-encoder reranker, free of Dagster so it can be run and tested on its own.

The bi-encoder finds candidates fast; the cross-encoder reads query and passage together and reorders the
top few. Fine-tuning the first does not remove the need for the second.

Data: (query, passage, target) pairs from the train split, with graded targets in [0, 1]:
- every pair the LLM judge graded: target = grade / 3 (so a "marginally relevant" passage is not a 0);
- a query's positives that were not judged: 1.0; its mined hard negatives (never judged relevant): 0.0.
A judged grade wins over the positive/negative rule. Logged feedback (the triplets' `origin` = "feedback"
rows) adds its positives at 1.0 and its negatives (labelled, then mined) at 0.0, origin "feedback_*".
Only chunks of the query's own split are used, so
training never reads a validation or test document (the rule the triplets follow).

Loss: binary cross-entropy on the logit with those soft targets (pointwise, as the MS MARCO cross-encoders
are trained; soft targets carry the judge's grades). Validation: reranking nDCG@10 of the validation
queries' positives among their negatives, before training and during it; the best checkpoint is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from assets.training.scaffold import TrainResult, checkpoint_args, finish, recorder, step_budget, validate

MIN_STEPS_WHY = """A head on a bi-encoder's body sits on a plateau at loss ln 2 (it scores every pair alike) before it
learns: on cranfield's 2,732 training pairs (batch 16, head 1e-3, body 5e-5) the loss stayed 0.69-0.70 for ~170
steps, then fell (0.64 at step 200), and validation ROC AUC went 0.535 -> 0.777 by step 200 (the zero-shot
bi-encoder: 0.665). One epoch at batch 32 (85 steps) stopped on the plateau: a reranker no better than chance."""
PAIR_COLUMNS = ["query_id", "split", "query", "chunk_id", "passage", "target", "origin"]
VALIDATION_METRIC = "validation_ndcg@10"


@dataclass
class RerankerSettings:
    epochs: float = 1.0
    max_steps: int = 0                # > 0 overrides epochs and min_steps
    min_steps: int = 300              # at least this many, whatever the epochs: see MIN_STEPS_WHY
    learning_rate: float = 5e-5       # the body: more than the bi-encoder's 1e-5, it learns a new task
    head_learning_rate: float = 1e-3  # the fresh head load_reranker adds (one random 384 x 1 layer); 0 = as the body
    batch_size: int = 16              # 16 pairs of <= 256 tokens: ~3 s a step on 2 CPU cores
    micro_batch: int = 8              # pairs a forward/backward pass; the gradients of batch_size / micro_batch
                                      # passes are summed before each step: the same update, less activation memory
    warmup_ratio: float = 0.1
    evals_per_run: int = 4
    max_length: int = 256             # query + passage word pieces; MiniLM was trained at 256
    seed: int = 42
    precision: str = "fp32"


def reranker_pairs(splits: pd.DataFrame, labels: pd.DataFrame, triplets: pd.DataFrame, chunks: pd.DataFrame,
                   split_of_doc: Callable[[str], str], relevant_grade: int = 2) -> pd.DataFrame:
    """(query, passage, target) rows for the train and validation queries; see the module docstring."""
    chunk_text = dict(zip(chunks["chunk_id"], chunks["text"]))
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    fit = splits[splits["split"] != "test"]
    query_of = dict(zip(fit["query_id"], zip(fit["text"], fit["split"])))
    rows: dict[tuple[str, str], dict] = {}

    def add(qid: str, chunk_id: str, target: float, origin: str) -> None:
        text, split = query_of[qid]
        if chunk_id not in chunk_text or split_of_doc(chunk_doc[chunk_id]) != split:
            return
        rows[(qid, chunk_id)] = {"query_id": qid, "split": split, "query": text, "chunk_id": chunk_id,
                                 "passage": chunk_text[chunk_id], "target": float(target), "origin": origin}

    for r in fit.itertuples(index=False):
        for c in r.positives:
            add(r.query_id, c, 1.0, "positive")
    logged = triplets[triplets["origin"] == "feedback"] if "origin" in triplets else triplets.iloc[:0]
    for r in logged.itertuples(index=False):
        query_of[r.query_id] = (r.anchor, r.split)
        add(r.query_id, r.positive_chunk_id, 1.0, "feedback_positive")
        add(r.query_id, r.negative_chunk_id, 0.0, "feedback_negative")
    for r in triplets.itertuples(index=False):
        if r.query_id in query_of and getattr(r, "origin", "synthetic") != "feedback":
            add(r.query_id, r.negative_chunk_id, 0.0, "hard_negative")
    for r in labels.itertuples(index=False):          # last: a judged grade overrides the rules above
        if r.query_id in query_of:
            add(r.query_id, r.chunk_id, min(max(r.grade, 0), 3) / 3.0, "judged")
    df = pd.DataFrame(list(rows.values()), columns=PAIR_COLUMNS)
    return df.sort_values(["split", "query_id", "chunk_id"]).reset_index(drop=True)


def validation_samples(pairs: pd.DataFrame, threshold: float = 0.5) -> list[dict]:
    """CrossEncoderRerankingEvaluator samples: validation queries with at least one positive and one negative."""
    samples = []
    for _, g in pairs[pairs["split"] == "validation"].groupby("query_id", sort=True):
        pos = g.loc[g["target"] >= threshold, "passage"].tolist()
        neg = g.loc[g["target"] < threshold, "passage"].tolist()
        if pos and neg:
            samples.append({"query": g["query"].iloc[0], "positive": pos, "negative": neg})
    return samples


def is_biencoder_folder(path: str) -> bool:
    """A local sentence-transformer (bi-encoder) folder: modules.json, and not saved as a CrossEncoder."""
    import json

    folder = Path(path)
    if not (folder / "modules.json").is_file():
        return False
    config = folder / "config_sentence_transformers.json"
    saved_as = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    return saved_as != "CrossEncoder"


def load_reranker(path: str, device: str, max_length: int = 256):
    """A one-score CrossEncoder: a trained reranker (ours or a hub one) as it is; from a bi-encoder's folder, its
    body with a fresh scoring head on the *mean-pooled* tokens of the (query, passage) pair.

    Why not the usual head on [CLS]: a mean-pooling bi-encoder such as MiniLM never trained its [CLS]/pooler
    output, which barely varies between pairs. A head there starts at one score for everything (logit spread
    0.013 on cranfield's validation pairs, ROC AUC 0.50) and, as two small layers in a row, gets almost no
    gradient: training loss sat at ln 2 for a whole epoch. Mean pooling is what the body was trained to produce.
    """
    from sentence_transformers.cross_encoder import CrossEncoder

    if not is_biencoder_folder(path):
        return CrossEncoder(path, num_labels=1, max_length=max_length, device=device)
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    body = Transformer(path, transformer_task="feature-extraction", max_seq_length=max_length)
    dim = body.get_embedding_dimension()
    head = Dense(dim, 1, activation_function=None, module_output_name="scores")
    return CrossEncoder(modules=[body, Pooling(dim, pooling_mode="mean"), head], device=device)


def head_rate(model, rate: float) -> dict[str, float] | None:
    """Trainer learning_rate_mapping giving a load_reranker head (a Dense module writing "scores") its own rate."""
    from sentence_transformers.base.modules import Dense

    last = model[len(model) - 1]
    if rate > 0 and isinstance(last, Dense) and last.module_output_name == "scores":
        return {r"\blinear\.(weight|bias)$": rate}   # the body (BERT) has no parameter named *linear*
    return None


def accumulation(batch: int, micro_batch: int) -> dict:
    """Trainer arguments running a batch of `batch` pairs as passes of `micro_batch` whose gradients are summed
    before the optimizer steps: pointwise BCE is a mean over pairs, so equal passes give the batch's gradient (a
    test checks the weights), with a pass's activations instead of the batch's. The whole batch at once where
    micro_batch is 0, not smaller, or does not divide it."""
    if micro_batch <= 0 or micro_batch >= batch or batch % micro_batch:
        return {"per_device_train_batch_size": batch, "gradient_accumulation_steps": 1}
    return {"per_device_train_batch_size": micro_batch, "gradient_accumulation_steps": batch // micro_batch}


def train_crossencoder(model, pairs: pd.DataFrame, out_dir: Path, settings: RerankerSettings,
                       on_log: Callable[[dict, int], None] | None = None) -> TrainResult:
    """Fine-tune `model` (a CrossEncoder, modified in place) and save it to out_dir/model."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    # 1. Data: (query, passage) -> soft target, in that column order
    train = pairs[pairs["split"] == "train"][["query", "passage", "target"]].rename(columns={"target": "label"})
    if len(train) < 2 or train["label"].nunique() < 2:
        raise ValueError(f"{len(train)} training pairs with {train['label'].nunique()} distinct targets: the reranker "
                         "needs positives and negatives; write more queries (queries_per_chunk, max_chunks)")
    train_ds = Dataset.from_pandas(train.reset_index(drop=True), preserve_index=False)
    samples = validation_samples(pairs)
    evaluator = (CrossEncoderRerankingEvaluator(samples, at_k=10, name="validation", write_csv=False)
                 if samples else None)

    # 2. The step budget, how often to validate, and the trainer (scaffold.py: shared with the bi-encoder)
    budget = step_budget(len(train), settings.batch_size, settings.epochs, settings.max_steps, settings.evals_per_run,
                         min_steps=settings.min_steps)
    history: list[dict] = []
    validation_base = validate(evaluator, model, on_log, "eval_", 0)
    args = CrossEncoderTrainingArguments(
        **{**checkpoint_args(out_dir, budget, validated=evaluator is not None, metric=f"eval_{VALIDATION_METRIC}",
                             learning_rate=settings.learning_rate, warmup_ratio=settings.warmup_ratio,
                             precision=settings.precision, seed=settings.seed),
           **accumulation(budget.batch, settings.micro_batch)},
        learning_rate_mapping=head_rate(model, settings.head_learning_rate),
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train_ds,
                                  loss=BinaryCrossEntropyLoss(model),   # BCE-with-logits accepts soft targets
                                  evaluator=evaluator, callbacks=[recorder(history, on_log)])
    trainer.train()
    # 3. Validate, save, delete the scratch checkpoints
    return finish(model, evaluator, on_log, budget, out_dir, history, validation_base)
