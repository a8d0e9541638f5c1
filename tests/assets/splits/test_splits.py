import pandas as pd
import pytest

from assets.splits import (SplitConfig, assign_splits, document_split, leaked_documents, split_of, split_table,
                           too_small)


def _chunks(n_docs=60):
    return pd.DataFrame({"chunk_id": [f"c{i}" for i in range(n_docs)], "doc_id": [f"d{i}" for i in range(n_docs)],
                         "text": [f"t{i}" for i in range(n_docs)]})


def _queries(n_docs=60):
    return pd.DataFrame({"query_id": [f"q{i}" for i in range(n_docs)], "chunk_id": [f"c{i}" for i in range(n_docs)],
                         "doc_id": [f"d{i}" for i in range(n_docs)], "style": "question",
                         "text": [f"query {i}" for i in range(n_docs)]})


def _split_of(chunks):
    return split_of(split_table(chunks["doc_id"], SplitConfig()))


LABELS_EMPTY = pd.DataFrame(columns=["query_id", "chunk_id", "grade", "score", "judge", "is_source"])


def test_document_split_is_stable_and_roughly_proportional():
    cfg = SplitConfig(validation_fraction=0.1, test_fraction=0.2)
    splits = [document_split(f"doc{i}", cfg) for i in range(2000)]
    assert splits == [document_split(f"doc{i}", cfg) for i in range(2000)]
    assert 0.15 < splits.count("test") / 2000 < 0.25
    assert 0.06 < splits.count("validation") / 2000 < 0.14


def test_unlabelled_queries_keep_their_source_as_positive():
    df, stats = assign_splits(_queries(), LABELS_EMPTY, _chunks(), _split_of(_chunks()))
    assert len(df) == 60 and all(p == [c] for p, c in zip(df["positives"], _queries()["chunk_id"]))
    assert leaked_documents(df, _chunks()) == []


def test_denied_source_and_cross_split_extra_positive():
    cfg = SplitConfig()
    chunks, queries = _chunks(), _queries()
    split_of = {d: document_split(d, cfg) for d in chunks["doc_id"]}
    q0_split = split_of["d0"]
    same = next(f"c{i}" for i in range(1, 60) if split_of[f"d{i}"] == q0_split)
    other = next(f"c{i}" for i in range(1, 60) if split_of[f"d{i}"] != q0_split)
    labels = pd.DataFrame([
        {"query_id": "q0", "chunk_id": "c0", "grade": 3, "score": 0, "judge": "t", "is_source": True},
        {"query_id": "q0", "chunk_id": same, "grade": 2, "score": 0, "judge": "t", "is_source": False},
        {"query_id": "q0", "chunk_id": other, "grade": 3, "score": 0, "judge": "t", "is_source": False},
        {"query_id": "q1", "chunk_id": "c1", "grade": 0, "score": 0, "judge": "t", "is_source": True},
    ])
    df, stats = assign_splits(queries, labels, chunks, split_of)
    q0 = df[df["query_id"] == "q0"].iloc[0]
    assert q0["positives"] == ["c0", same]                  # the other-split positive was dropped
    assert stats["cross_split_positives_dropped"] == 1
    assert "q1" not in set(df["query_id"])                   # judge denied the only positive
    assert stats["denied_source"] == 1 and stats["dropped_no_positive"] == 1
    assert leaked_documents(df, chunks) == []


def test_leak_detector_catches_a_document_in_two_splits():
    chunks = _chunks(3)
    bad = pd.DataFrame({"query_id": ["a", "b"], "doc_id": ["d0", "d1"], "split": ["train", "test"],
                        "positives": [["c0"], ["c0"]]})
    assert leaked_documents(bad, chunks) == ["d0"]


def test_a_corpus_too_small_for_every_split_is_refused_before_training_with_what_to_do():
    df, _ = assign_splits(_queries(60), LABELS_EMPTY, _chunks(60), _split_of(_chunks(60)))
    assert too_small(df, split_table(_chunks(60)["doc_id"], SplitConfig())) is None   # 60 documents: all splits used
    few_docs = split_table(_chunks(3)["doc_id"], SplitConfig())
    few, _ = assign_splits(_queries(3), LABELS_EMPTY, _chunks(3), split_of(few_docs))
    counts = few["split"].value_counts().to_dict()
    why = too_small(few, few_docs)
    assert why is not None and "too small to split: 3 queries from 3 documents" in why
    assert all(s in why for s in ("train", "test") if not counts.get(s))
    assert "--queries-per-chunk" in why and "test_fraction" in why
    assert too_small(few.iloc[:0], few_docs).startswith("the corpus is too small to split: 0 queries")
    no_val = few.assign(split=["train", "test", "train"])
    assert too_small(no_val, few_docs) is None            # no validation split: no early stopping, still a run
    assert "the corpus's 3 documents are" in why


def test_the_document_splits_table_is_the_rule_applied_once_to_every_document():
    cfg = SplitConfig(validation_fraction=0.2, test_fraction=0.3, seed=4)
    table = split_table(["b", "a", "b", "c"], cfg)
    assert table["doc_id"].tolist() == ["a", "b", "c"]                  # distinct, sorted
    assert table["split"].tolist() == [document_split(d, cfg) for d in "abc"]
    with pytest.raises(ValueError, match="leave something to train on"):
        split_table(["a"], SplitConfig(validation_fraction=0.5, test_fraction=0.5))
