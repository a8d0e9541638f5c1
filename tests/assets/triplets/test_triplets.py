import numpy as np
import pandas as pd

from assets.splits import SplitConfig, document_split, split_of, split_table
from assets.triplets import TripletConfig, build_triplets, cross_split_rows, mine_hard_negatives


def test_margin_rule_drops_candidates_too_close_to_the_positive():
    mat = np.array([[1.0, 0.0], [0.99, 0.14], [0.8, 0.6], [0.0, 1.0]], dtype="float32")
    q = np.array([1.0, 0.0], dtype="float32")
    allowed = np.array([False, True, True, True])
    negs, why = mine_hard_negatives(q, ["p"], ["p", "dup", "hard", "easy"], mat, {"p": 0, "dup": 1, "hard": 2, "easy": 3},
                                    allowed, depth=10, margin=0.95, n=1)
    assert negs == ["hard"] and why["too_close"] == 1
    negs, _ = mine_hard_negatives(q, ["p"], ["p", "dup", "hard", "easy"], mat, {"p": 0, "dup": 1, "hard": 2, "easy": 3},
                                  allowed, depth=10, margin=1.01, n=2)
    assert negs == ["dup", "hard"]


def test_triplets_never_use_positives_relevant_chunks_or_other_splits():
    rng = np.random.default_rng(0)
    n = 80
    chunks = pd.DataFrame({"chunk_id": [f"c{i}" for i in range(n)], "doc_id": [f"d{i // 2}" for i in range(n)],
                           "text": [f"text {i}" for i in range(n)]})
    mat = rng.normal(size=(n, 16)).astype("float32")
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    cfg = SplitConfig()
    rows = []
    for i in range(0, n, 2):
        split = document_split(f"d{i // 2}", cfg)
        if split != "test":
            rows.append({"query_id": f"q{i}", "doc_id": f"d{i // 2}", "split": split, "style": "question",
                         "text": f"query {i}", "positives": [f"c{i}"], "labelled": True})
    splits = pd.DataFrame(rows)
    q_vecs = mat[[int(p[0][1:]) for p in splits["positives"]]] + 0.1
    # the judge found each query's nearest other chunk relevant: it must not become a negative
    relevant = []
    for q, v in zip(splits.itertuples(), q_vecs):
        order = [j for j in np.argsort(-(mat @ v)) if f"c{j}" != q.positives[0]]
        relevant.append({"query_id": q.query_id, "chunk_id": f"c{order[0]}", "grade": 3, "score": 0.0,
                         "judge": "t", "is_source": False})
    labels = pd.DataFrame(relevant)
    table = split_of(split_table(chunks["doc_id"], cfg))
    df, stats = build_triplets(splits, labels, chunks, q_vecs, list(chunks["chunk_id"]), mat,
                               TripletConfig(margin=2.0), table)
    assert len(df) > 0 and set(df["split"]) <= {"train", "validation"}
    rel = set(zip(labels["query_id"], labels["chunk_id"]))
    for r in df.itertuples():
        assert r.negative_chunk_id != r.positive_chunk_id
        assert (r.query_id, r.negative_chunk_id) not in rel
        assert chunks.set_index("chunk_id").loc[r.negative_chunk_id, "doc_id"] != splits.set_index("query_id").loc[r.query_id, "doc_id"]
    assert cross_split_rows(df, chunks, table) == 0
    broken = df.copy()
    test_chunk = next(c for c, d in zip(chunks["chunk_id"], chunks["doc_id"]) if document_split(d, cfg) == "test")
    broken.loc[broken.index[0], "negative_chunk_id"] = test_chunk
    assert cross_split_rows(broken, chunks, table) == 1
