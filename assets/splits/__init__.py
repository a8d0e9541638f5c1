"""Splits: train / validation / test, by SOURCE DOCUMENT, so no document feeds both training and test.

`document_splits` gives every document of the corpus its split: a stable hash of its id, so adding
documents never moves old ones between splits. It is the one place the rule and its fractions live: the
query splits, the triplets (whose negatives come from any document), the reranker's pairs and the checks
read this table, never re-derive it. Each query (`query_splits`) carries its positives: its source chunk unless the judge denied it, plus the other chunks the
judge graded relevant. A positive from a document of another split is dropped from the query, so not
even an extra positive lets a test document into training. An asset check proves it on every run.
"""

import dagster as dg
import pandas as pd

from assets.common import preview, stable_fraction

SPLITS = ("train", "validation", "test")


class SplitConfig(dg.Config):
    validation_fraction: float = 0.1   # early stopping and model selection read this split
    test_fraction: float = 0.2         # the synthetic test set the report scores; ~280 queries on cranfield
    seed: int = 0


class QuerySplitConfig(dg.Config):
    relevant_grade: int = 2            # the same threshold the labels stage uses


def document_split(doc_id: str, config: SplitConfig) -> str:
    u = stable_fraction(doc_id, config.seed + 7)
    if u < config.test_fraction:
        return "test"
    if u < config.test_fraction + config.validation_fraction:
        return "validation"
    return "train"


def split_table(doc_ids, config: SplitConfig) -> pd.DataFrame:
    """doc_id, split: every distinct document's split under `config`."""
    if config.validation_fraction + config.test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must leave something to train on (< 1)")
    docs = sorted(set(map(str, doc_ids)))
    return pd.DataFrame({"doc_id": docs, "split": [document_split(d, config) for d in docs]})


def split_of(document_splits: pd.DataFrame) -> dict[str, str]:
    """{doc_id: split} from the document_splits table."""
    return dict(zip(document_splits["doc_id"], document_splits["split"]))


def assign_splits(queries: pd.DataFrame, labels: pd.DataFrame, chunks: pd.DataFrame, split_of_doc: dict[str, str],
                  relevant_grade: int = 2) -> tuple[pd.DataFrame, dict]:
    """One row per kept query: query_id, doc_id, split, style, text, positives (chunk ids), labelled.

    split_of_doc: {doc_id: split} for every document (the document_splits table)."""
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    graded = {(r.query_id, r.chunk_id): r.grade for r in labels.itertuples(index=False)}
    extra: dict[str, list[str]] = {}
    for r in labels.itertuples(index=False):
        if not r.is_source and r.grade >= relevant_grade:
            extra.setdefault(r.query_id, []).append(r.chunk_id)
    rows, stats = [], {"denied_source": 0, "dropped_no_positive": 0, "cross_split_positives_dropped": 0}
    for q in queries.itertuples(index=False):
        split = split_of_doc[q.doc_id]
        positives = []
        source_grade = graded.get((q.query_id, q.chunk_id))
        if source_grade is None or source_grade >= relevant_grade:
            positives.append(q.chunk_id)
        else:
            stats["denied_source"] += 1
        for chunk_id in extra.get(q.query_id, []):
            if split_of_doc[chunk_doc[chunk_id]] == split:
                positives.append(chunk_id)
            else:
                stats["cross_split_positives_dropped"] += 1
        if not positives:
            stats["dropped_no_positive"] += 1
            continue
        rows.append({"query_id": q.query_id, "doc_id": q.doc_id, "split": split, "style": q.style, "text": q.text,
                     "positives": positives, "labelled": source_grade is not None})
    cols = ["query_id", "doc_id", "split", "style", "text", "positives", "labelled"]
    return pd.DataFrame(rows, columns=cols), stats


def too_small(splits: pd.DataFrame, document_splits: pd.DataFrame) -> str | None:
    """Why these splits cannot train and evaluate a model (no train or no test query), or None.

    Training needs train queries and the report scores the test split; an empty validation split only means
    no early stopping (noted in query_splits' metadata). With the default fractions a corpus needs roughly 20
    documents before every split holds a query."""
    counts = splits["split"].value_counts().to_dict() if len(splits) else {}
    empty = [s for s in ("train", "test") if not counts.get(s)]   # no validation: training runs without early
    #                                                               stopping (the metadata says so); no train or test: nothing to do
    if not empty:
        return None
    n_docs = splits["doc_id"].nunique() if len(splits) else 0
    got = ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
    docs = document_splits["split"].value_counts().to_dict()
    of_docs = ", ".join(f"{docs.get(s, 0)} {s}" for s in SPLITS)
    return (f"the corpus is too small to split: {len(splits)} queries from {n_docs} documents gave {got}, and the "
            f"{' and '.join(empty)} split{'s' if len(empty) > 1 else ''} need{'' if len(empty) > 1 else 's'} at least "
            f"one query (each document's split is a stable hash; the corpus's {len(document_splits)} documents are "
            f"{of_docs}). Add documents, write more queries per chunk (--queries-per-chunk), or change "
            "document_splits' validation_fraction / test_fraction.")


def leaked_documents(splits: pd.DataFrame, chunks: pd.DataFrame) -> list[str]:
    """Documents that feed more than one split, as a source document or through a positive chunk."""
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    seen: dict[str, set[str]] = {}
    for r in splits.itertuples(index=False):
        seen.setdefault(r.doc_id, set()).add(r.split)
        for chunk_id in r.positives:
            seen.setdefault(chunk_doc[chunk_id], set()).add(r.split)
    return sorted(d for d, s in seen.items() if len(s) > 1)


@dg.asset(group_name="splits", compute_kind="pandas")
def document_splits(chunks: pd.DataFrame, config: SplitConfig) -> dg.Output[pd.DataFrame]:
    """Every document's split (doc_id, split): the one table the query splits, triplets and checks read."""
    df = split_table(chunks["doc_id"], config)
    counts = df["split"].value_counts().to_dict()
    return dg.Output(df, metadata={**{f"docs_{s}": int(counts.get(s, 0)) for s in SPLITS},
                                   **config.model_dump()})


@dg.asset(group_name="splits", compute_kind="pandas")
def query_splits(synthetic_queries: pd.DataFrame, relevance_labels: pd.DataFrame, chunks: pd.DataFrame,
                 document_splits: pd.DataFrame, config: QuerySplitConfig) -> dg.Output[pd.DataFrame]:
    """Synthetic queries with their positives, split train/validation/test by source document."""
    df, stats = assign_splits(synthetic_queries, relevance_labels, chunks, split_of(document_splits),
                              config.relevant_grade)
    problem = too_small(df, document_splits)
    if problem:
        raise dg.Failure(description=problem)   # before any training: nothing is paid for twice on a rerun
    df.attrs.update(synthetic_queries.attrs)
    counts = df["split"].value_counts().to_dict()
    return dg.Output(df, metadata={
        **{f"n_{s}": int(counts.get(s, 0)) for s in SPLITS},
        **{f"docs_{s}": int(df.loc[df["split"] == s, "doc_id"].nunique()) for s in SPLITS},
        **stats,
        "note": "" if counts.get("validation") else "no validation query: training runs without early stopping",
        "preview": preview(df[["split", "style", "text", "positives"]], 6),
    })


@dg.asset_check(asset=query_splits, blocking=True, additional_ins={"chunks": dg.AssetIn("chunks")},
                description="No document feeds more than one split.")
def no_document_leakage(query_splits: pd.DataFrame, chunks: pd.DataFrame) -> dg.AssetCheckResult:
    leaked = leaked_documents(query_splits, chunks)
    return dg.AssetCheckResult(passed=not leaked, metadata={"leaked_documents": len(leaked),
                                                            "examples": dg.MetadataValue.json(leaked[:10])})
