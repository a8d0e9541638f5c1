"""Triplets: (query, positive, hard negative) rows that sentence-transformers trains on directly.

Hard negatives are the chunks the base model wrongly ranks high. Mined naively they are often unlabelled
positives, which teaches the model to push away right answers. So a candidate is dropped when it is
- a positive of the query, or graded relevant by the judge, or from the query's own source document;
- from a document of another split (training must not see validation or test documents);
- too close to the positive: base-model score >= `margin` x the positive's score (the "TopK-PercPos" rule
  of NV-Retriever, Moreira et al. 2024; 0.95 is their best setting), a likely false negative or duplicate.
The highest-ranked survivors are used.
"""

import dagster as dg
import numpy as np
import pandas as pd

from assets.common import preview
from assets.splits import SplitConfig, document_split
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource

TRIPLET_COLUMNS = ["query_id", "split", "anchor", "positive", "negative", "positive_chunk_id", "negative_chunk_id"]


class TripletConfig(dg.Config):
    negatives_per_positive: int = 1   # MNRL adds the whole batch's in-batch negatives on top of these
    depth: int = 30                   # candidates looked at per query
    margin: float = 0.95              # drop candidates scoring >= 95% of the positive's score
    relevant_grade: int = 2


def mine_hard_negatives(q_vec: np.ndarray, pos_ids: list[str], ids: list[str], mat: np.ndarray,
                        row_of: dict[str, int], allowed: np.ndarray, depth: int, margin: float,
                        n: int) -> tuple[list[str], dict]:
    """Top-scoring candidates that pass the filters; `allowed` masks chunks of other splits/docs out."""
    scores = mat @ q_vec
    pos_score = min(float(scores[row_of[p]]) for p in pos_ids)
    masked = np.where(allowed, scores, -np.inf)
    top = np.argsort(-masked)[:depth]
    out, why = [], {"too_close": 0}
    for i in top:
        if not np.isfinite(masked[i]):
            break
        if masked[i] >= margin * pos_score:
            why["too_close"] += 1
            continue
        out.append(ids[i])
        if len(out) == n:
            break
    return out, why


def build_triplets(splits: pd.DataFrame, labels: pd.DataFrame, chunks: pd.DataFrame, q_vecs: np.ndarray,
                   ids: list[str], mat: np.ndarray, config: TripletConfig, split_config: SplitConfig):
    row_of = {c: i for i, c in enumerate(ids)}
    chunk_text = dict(zip(chunks["chunk_id"], chunks["text"]))
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    doc_arr = np.array([chunk_doc.get(c, "") for c in ids])
    split_arr = np.array([document_split(d, split_config) for d in doc_arr])
    relevant = labels[labels["grade"] >= config.relevant_grade].groupby("query_id")["chunk_id"].apply(set).to_dict()
    rows, stats = [], {"too_close": 0, "no_negative": 0}
    for q, v in zip(splits.itertuples(index=False), q_vecs):
        allowed = (split_arr == q.split) & (doc_arr != q.doc_id)
        for c in set(q.positives) | relevant.get(q.query_id, set()):
            if c in row_of:
                allowed[row_of[c]] = False
        negs, why = mine_hard_negatives(v, list(q.positives), ids, mat, row_of, allowed,
                                        config.depth, config.margin, config.negatives_per_positive * len(q.positives))
        stats["too_close"] += why["too_close"]
        if not negs:
            stats["no_negative"] += 1
            continue
        for i, pos in enumerate(q.positives):
            neg = negs[i % len(negs)]
            rows.append({"query_id": q.query_id, "split": q.split, "anchor": q.text, "positive": chunk_text[pos],
                         "negative": chunk_text[neg], "positive_chunk_id": pos, "negative_chunk_id": neg})
    return pd.DataFrame(rows, columns=TRIPLET_COLUMNS), stats


@dg.asset(group_name="triplets", compute_kind="numpy")
def training_triplets(query_splits: pd.DataFrame, relevance_labels: pd.DataFrame, chunks: pd.DataFrame,
                      baseline_index: dict, embedder: EmbedderResource, lancedb: LanceDBResource,
                      config: TripletConfig) -> dg.Output[pd.DataFrame]:
    """(anchor, positive, hard negative) rows for the train and validation splits."""
    fit = query_splits[query_splits["split"] != "test"].reset_index(drop=True)
    ids, mat = lancedb.open(baseline_index["table"]).vectors()
    q_vecs = embedder.encode(fit["text"].tolist())
    split_config = SplitConfig(**query_splits.attrs.get("split_config", {}))
    df, stats = build_triplets(fit, relevance_labels, chunks, q_vecs, ids, mat, config, split_config)
    df.attrs.update(query_splits.attrs)
    return dg.Output(df, metadata={
        "n_train": int((df["split"] == "train").sum()),
        "n_validation": int((df["split"] == "validation").sum()),
        **stats,
        "preview": preview(df[["split", "anchor", "positive", "negative"]], 5),
    })


def cross_split_rows(triplets: pd.DataFrame, chunks: pd.DataFrame, split_config: SplitConfig) -> int:
    """Triplet rows whose positive or negative chunk belongs to a document of another split."""
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    bad = 0
    for r in triplets.itertuples(index=False):
        for c in (r.positive_chunk_id, r.negative_chunk_id):
            if document_split(chunk_doc[c], split_config) != r.split:
                bad += 1
                break
    return bad


@dg.asset_check(asset=training_triplets, blocking=True, additional_ins={"chunks": dg.AssetIn("chunks")},
                description="Every positive and negative comes from a document of the triplet's own split.")
def triplets_stay_in_split(training_triplets: pd.DataFrame, chunks: pd.DataFrame) -> dg.AssetCheckResult:
    split_config = SplitConfig(**training_triplets.attrs.get("split_config", {}))
    bad = cross_split_rows(training_triplets, chunks, split_config)
    return dg.AssetCheckResult(passed=bad == 0, metadata={"cross_split_rows": bad, "rows": len(training_triplets)})
