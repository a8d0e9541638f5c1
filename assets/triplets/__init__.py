"""Triplets: (query, positive, hard negative) rows that sentence-transformers trains on directly.

Hard negatives are the chunks the base model wrongly ranks high. Mined naively they are often unlabelled
positives, which teaches the model to push away right answers. So a candidate is dropped when it is
- a positive of the query, or graded relevant by the judge, or from the query's own source document;
- from a document of another split (training must not see validation or test documents);
- too close to the positive: base-model score >= `margin` x the positive's score (the "TopK-PercPos" rule
  of NV-Retriever, Moreira et al. 2024; 0.95 is their best setting), a likely false negative or duplicate.
The highest-ranked survivors are used.

Logged feedback (assets/feedback) joins as rows of its own (`origin` = "feedback"): each logged query's
positives (a document-level positive becomes that document's chunk the base model ranks highest for the
query), split by the positive's document with the same rule as the synthetic queries (a positive in a test
document is left out: the synthetic test split stays unseen), and negatives taken first from the query's
labelled negatives (thumbs down, judged 0, skipped above a click), then mined as above. A labelled positive
or neutral document of the query is never its negative. How much each origin weighs in training is the
trainer's config (`synthetic_weight`, `feedback_weight`, assets/training/blend.py).
"""

import dagster as dg
import numpy as np
import pandas as pd

from assets.common import preview
from assets.splits import split_of
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource

TRIPLET_COLUMNS = ["query_id", "split", "anchor", "positive", "negative", "positive_chunk_id", "negative_chunk_id",
                   "origin"]


class TripletConfig(dg.Config):
    negatives_per_positive: int = 1   # MNRL adds the whole batch's in-batch negatives on top of these
    depth: int = 30                   # candidates looked at per query
    margin: float = 0.95              # drop candidates scoring >= 95% of the positive's score
    relevant_grade: int = 2


def chunk_documents_and_splits(ids: list[str], chunks: pd.DataFrame,
                               split_of_doc: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the chunk matrix: its document ("" when unknown) and that document's split ("" when unknown:
    a chunk of no known document is in no split, so it is never anyone's negative)."""
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    doc_arr = np.array([chunk_doc.get(c, "") for c in ids])
    return doc_arr, np.array([split_of_doc.get(d, "") for d in doc_arr])


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
                   ids: list[str], mat: np.ndarray, config: TripletConfig, split_of_doc: dict[str, str]):
    row_of = {c: i for i, c in enumerate(ids)}
    chunk_text = dict(zip(chunks["chunk_id"], chunks["text"]))
    doc_arr, split_arr = chunk_documents_and_splits(ids, chunks, split_of_doc)
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
                         "negative": chunk_text[neg], "positive_chunk_id": pos, "negative_chunk_id": neg,
                         "origin": "synthetic"})
    return pd.DataFrame(rows, columns=TRIPLET_COLUMNS), stats


def best_chunk(doc_rows: np.ndarray, scores: np.ndarray) -> int:
    """The row (of the chunk matrix) of a document's chunk that scores highest for the query."""
    return int(doc_rows[np.argmax(scores[doc_rows])])


def build_feedback_triplets(pairs: pd.DataFrame, queries: pd.DataFrame, chunks: pd.DataFrame, q_vecs: np.ndarray,
                            ids: list[str], mat: np.ndarray, config: "TripletConfig",
                            split_of_doc: dict[str, str]) -> tuple[pd.DataFrame, dict]:
    """Triplet rows for the logged queries that have a positive; `q_vecs` aligned with `queries`' rows."""
    stats = {"feedback_queries": 0, "feedback_positives_in_test_documents": 0, "feedback_no_negative": 0,
             "feedback_labelled_negatives_used": 0, "feedback_too_close": 0}
    if pairs.empty or queries.empty:
        return pd.DataFrame(columns=TRIPLET_COLUMNS), stats
    row_of = {c: i for i, c in enumerate(ids)}
    chunk_text = dict(zip(chunks["chunk_id"], chunks["text"]))
    doc_arr, split_arr = chunk_documents_and_splits(ids, chunks, split_of_doc)
    rows_of_doc = pd.Series(np.arange(len(ids))).groupby(doc_arr).apply(np.asarray).to_dict()
    by_query = {qid: g for qid, g in pairs.groupby("query_id")}
    rows = []
    for q, v in zip(queries.itertuples(index=False), q_vecs):
        g = by_query.get(q.query_id)
        if g is None or not (g["label"] == "positive").any():
            continue
        scores = mat @ v

        def chunk_row(r) -> int | None:
            if isinstance(r.chunk_id, str) and r.chunk_id in row_of:
                return row_of[r.chunk_id]
            doc_rows = rows_of_doc.get(r.doc_id)
            return best_chunk(doc_rows, scores) if doc_rows is not None and len(doc_rows) else None

        positives = [i for r in g[g["label"] == "positive"].itertuples(index=False) if (i := chunk_row(r)) is not None]
        labelled_neg = [i for r in g[g["label"] == "negative"].sort_values("weak", kind="stable")
                        .itertuples(index=False) if (i := chunk_row(r)) is not None]
        not_negative_docs = set(g.loc[g["label"] != "negative", "doc_id"])
        stats["feedback_queries"] += 1
        for split in dict.fromkeys(split_arr[positives]):
            mine = [i for i in positives if split_arr[i] == split]
            if split == "test":
                stats["feedback_positives_in_test_documents"] += len(mine)
                continue
            allowed = (split_arr == split) & ~np.isin(doc_arr, list(not_negative_docs))
            labelled = [i for i in labelled_neg if allowed[i]]
            allowed[labelled] = False
            want = config.negatives_per_positive * len(mine)
            mined, why = mine_hard_negatives(v, [ids[i] for i in mine], ids, mat, row_of, allowed, config.depth,
                                             config.margin, max(0, want - len(labelled)))
            stats["feedback_too_close"] += why["too_close"]
            negs = [ids[i] for i in labelled][:want] + mined
            stats["feedback_labelled_negatives_used"] += min(len(labelled), want)
            if not negs:
                stats["feedback_no_negative"] += 1
                continue
            for k, i in enumerate(mine):
                neg = negs[k % len(negs)]
                rows.append({"query_id": q.query_id, "split": split, "anchor": q.text, "positive": chunk_text[ids[i]],
                             "negative": chunk_text[neg], "positive_chunk_id": ids[i], "negative_chunk_id": neg,
                             "origin": "feedback"})
    return pd.DataFrame(rows, columns=TRIPLET_COLUMNS), stats


@dg.asset(group_name="triplets", compute_kind="numpy")
def training_triplets(query_splits: pd.DataFrame, document_splits: pd.DataFrame, relevance_labels: pd.DataFrame,
                      chunks: pd.DataFrame, baseline_index: dict, feedback_pairs: pd.DataFrame, logged_queries: pd.DataFrame,
                      embedder: EmbedderResource, lancedb: LanceDBResource,
                      config: TripletConfig) -> dg.Output[pd.DataFrame]:
    """(anchor, positive, hard negative) rows for the train and validation splits, synthetic and logged."""
    fit = query_splits[query_splits["split"] != "test"].reset_index(drop=True)
    ids, mat = lancedb.open(baseline_index["table"]).vectors()
    q_vecs = embedder.encode(fit["text"].tolist())
    splits = split_of(document_splits)
    df, stats = build_triplets(fit, relevance_labels, chunks, q_vecs, ids, mat, config, splits)
    logged = logged_queries[logged_queries["query_id"].isin(
        feedback_pairs.loc[feedback_pairs["label"] == "positive", "query_id"])].reset_index(drop=True)
    fb, fb_stats = build_feedback_triplets(feedback_pairs, logged, chunks,
                                           embedder.encode(logged["text"].tolist()) if len(logged) else np.zeros((0, 1)),
                                           ids, mat, config, splits)
    df = pd.concat([df, fb], ignore_index=True) if len(fb) else df
    df.attrs.update(query_splits.attrs)
    by = df.groupby(["origin", "split"]).size().to_dict()
    return dg.Output(df, metadata={
        "n_train": int((df["split"] == "train").sum()),
        "n_validation": int((df["split"] == "validation").sum()),
        **{f"n_{o}_{s}": int(by.get((o, s), 0)) for o in ("synthetic", "feedback") for s in ("train", "validation")},
        **stats, **fb_stats,
        "preview": preview(df[["origin", "split", "anchor", "positive", "negative"]], 5),
        "preview_feedback": preview(fb[["split", "anchor", "positive", "negative"]], 5),
    })


def cross_split_rows(triplets: pd.DataFrame, chunks: pd.DataFrame, split_of_doc: dict[str, str]) -> int:
    """Triplet rows whose positive or negative chunk belongs to a document of another split."""
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    bad = 0
    for r in triplets.itertuples(index=False):
        for c in (r.positive_chunk_id, r.negative_chunk_id):
            if split_of_doc.get(chunk_doc[c]) != r.split:
                bad += 1
                break
    return bad


@dg.asset_check(asset=training_triplets, blocking=True,
                additional_ins={"chunks": dg.AssetIn("chunks"), "document_splits": dg.AssetIn("document_splits")},
                description="Every positive and negative comes from a document of the triplet's own split.")
def triplets_stay_in_split(training_triplets: pd.DataFrame, chunks: pd.DataFrame,
                           document_splits: pd.DataFrame) -> dg.AssetCheckResult:
    bad = cross_split_rows(training_triplets, chunks, split_of(document_splits))
    return dg.AssetCheckResult(passed=bad == 0, metadata={"cross_split_rows": bad, "rows": len(training_triplets)})


def leaked_test_queries(triplets: pd.DataFrame, test_queries: set[str]) -> list[str]:
    """Training anchors whose normalised text is a human test query's: must be none."""
    from resources.prompts import normalise_query

    anchors = triplets["anchor"].drop_duplicates()
    return sorted(a for a in anchors if normalise_query(a) in test_queries)


@dg.asset_check(asset=training_triplets, blocking=True, additional_ins={"human_queries": dg.AssetIn("human_queries")},
                description="No human test query (normalised text) is a training or validation anchor.")
def no_test_query_in_training(training_triplets: pd.DataFrame, human_queries: list) -> dg.AssetCheckResult:
    from assets.feedback import human_test_texts

    test_texts = human_test_texts(human_queries)
    leaked = leaked_test_queries(training_triplets, test_texts)
    return dg.AssetCheckResult(passed=not leaked, metadata={
        "leaked_queries": len(leaked), "examples": dg.MetadataValue.json(leaked[:10]),
        "test_queries": len(test_texts),
        "feedback_rows": int((training_triplets["origin"] == "feedback").sum())})


def feedback_documents(triplets: pd.DataFrame, chunks: pd.DataFrame) -> set[str]:
    """Documents of the logged-feedback positives the model trained on (train and validation rows): a query
    whose relevant documents include one of these is a "seen document" query in the evaluation."""
    if "origin" not in triplets:
        return set()
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    return {chunk_doc[c] for c in triplets.loc[triplets["origin"] == "feedback", "positive_chunk_id"] if c in chunk_doc}
