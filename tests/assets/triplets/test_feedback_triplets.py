"""Tiers 1-2: logged feedback in the triplets, the blend weights, and the check that no test query trains."""
import dagster as dg
import numpy as np
import pandas as pd

from assets.corpus.readers import HumanQuerySet
from assets.feedback.resolve import logged_query_id
from assets.splits import SplitConfig, document_split, split_of, split_table
from assets.training.blend import blend_counts, blend_rows
from assets.triplets import (TripletConfig, build_feedback_triplets, feedback_documents, no_test_query_in_training,
                             leaked_test_queries)


def corpus(n_docs=60, seed=0):
    rng = np.random.default_rng(seed)
    chunks = pd.DataFrame({"chunk_id": [f"c{i}" for i in range(2 * n_docs)],
                           "doc_id": [f"d{i // 2}" for i in range(2 * n_docs)],
                           "text": [f"text {i}" for i in range(2 * n_docs)]})
    mat = rng.normal(size=(len(chunks), 16)).astype("float32")
    return chunks, mat / np.linalg.norm(mat, axis=1, keepdims=True)


def logged(n_queries, chunks):
    texts = [f"logged query {i}" for i in range(n_queries)]
    queries = pd.DataFrame({"query_id": [logged_query_id(t) for t in texts], "text": texts})
    rows = []
    for i, qid in enumerate(queries["query_id"]):
        rows.append({"query_id": qid, "doc_id": f"d{i}", "chunk_id": None, "grade": 3, "label": "positive",
                     "weak": False})
        rows.append({"query_id": qid, "doc_id": f"d{i + 1}", "chunk_id": f"c{2 * (i + 1)}", "grade": 0,
                     "label": "negative", "weak": True})
        rows.append({"query_id": qid, "doc_id": f"d{i + 2}", "chunk_id": None, "grade": 1, "label": "neutral",
                     "weak": False})
    return queries, pd.DataFrame(rows)


def test_feedback_rows_stay_in_their_documents_split_and_use_labelled_negatives_first():
    chunks, mat = corpus()
    queries, pairs = logged(40, chunks)
    q_vecs = mat[[2 * i for i in range(40)]] + 0.1   # each query near its own document's first chunk
    cfg, split_cfg = TripletConfig(), SplitConfig()
    df, stats = build_feedback_triplets(pairs, queries, chunks, q_vecs, chunks["chunk_id"].tolist(), mat, cfg,
                                        split_of(split_table(chunks["doc_id"], split_cfg)))
    doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    assert set(df["origin"]) == {"feedback"} and "test" not in set(df["split"])
    for r in df.itertuples():
        assert document_split(doc[r.positive_chunk_id], split_cfg) == r.split
        assert document_split(doc[r.negative_chunk_id], split_cfg) == r.split
    n_test = sum(document_split(f"d{i}", split_cfg) == "test" for i in range(40))
    assert stats["feedback_positives_in_test_documents"] == n_test and len(df) == 40 - n_test - stats["feedback_no_negative"]
    by_q = {r.query_id: r for r in df.itertuples()}
    for i, qid in enumerate(queries["query_id"]):
        if qid in by_q:
            r = by_q[qid]
            assert doc[r.positive_chunk_id] == f"d{i}"                  # the document's chunk the query is nearest
            assert doc[r.negative_chunk_id] != f"d{i + 2}"              # a neutral document is never a negative
            if document_split(f"d{i + 1}", split_cfg) == r.split:
                assert r.negative_chunk_id == f"c{2 * (i + 1)}"         # the labelled negative comes first
    assert feedback_documents(df, chunks) == {doc[c] for c in df["positive_chunk_id"]}


def test_blend_weights_repeat_or_sample_whole_queries_of_the_train_split():
    df = pd.DataFrame({"query_id": [f"s{i}" for i in range(100)] + [f"f{i}" for i in range(50)] + ["v"],
                       "split": ["train"] * 150 + ["validation"], "origin": ["synthetic"] * 100 + ["feedback"] * 51})
    assert blend_counts(blend_rows(df, 1, 1)) == {"n_train_synthetic": 100, "n_train_feedback": 50}
    assert blend_counts(blend_rows(df, 0, 2)) == {"n_train_synthetic": 0, "n_train_feedback": 100}
    half = blend_rows(df, 0.5, 1)
    assert 30 < blend_counts(half)["n_train_synthetic"] < 70
    assert half.equals(blend_rows(df, 0.5, 1))                                  # the same half every run
    assert (blend_rows(df, 0, 0)["split"] == "validation").all()                # validation is never weighted


def test_the_leakage_check_fails_when_a_test_query_reaches_training():
    human = [HumanQuerySet("tiny/test", {"1": "What is the lift of a wing?"}, {"1": {"d1": 1}})]
    clean = pd.DataFrame({"anchor": ["how do wings stall"], "origin": ["feedback"], "split": ["train"]})
    planted = pd.DataFrame({"anchor": ["how do wings stall", "what is the LIFT of a wing"],
                            "origin": ["feedback", "feedback"], "split": ["train", "train"]})
    assert leaked_test_queries(planted, {"what is the lift of a wing"}) == ["what is the LIFT of a wing"]
    assert no_test_query_in_training(training_triplets=clean, human_queries=human).passed
    result = no_test_query_in_training(training_triplets=planted, human_queries=human)
    assert not result.passed and result.metadata["leaked_queries"].value == 1
    spec = next(iter(no_test_query_in_training.check_specs))
    assert spec.blocking and isinstance(spec, dg.AssetCheckSpec)
