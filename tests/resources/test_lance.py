import numpy as np
import pandas as pd
import pytest

from resources.lance import LanceDBResource, fts_query_text, rrf_fuse


def test_rrf_fuse_rewards_agreement_and_is_deterministic():
    fused = rrf_fuse([["a", "b", "c"], ["b", "a", "d"]], k=60)
    assert [d for d, _ in fused[:2]] == ["a", "b"]          # tie on score: broken by id
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert [d for d, _ in rrf_fuse([["x"], ["y", "x"]])][0] == "x"
    assert len(rrf_fuse([["a", "b", "c"]], limit=2)) == 2


def test_fts_query_text_strips_operators():
    assert fts_query_text('what is "lift": AND (drag)?') == "what is lift AND drag"
    assert fts_query_text("?!") == ""


@pytest.fixture
def index(tmp_path):
    rng = np.random.default_rng(0)
    texts = ["the wing produces lift", "boundary layer separation on a flat plate", "heat transfer in hypersonic flow",
             "shock waves at mach three", "a cat sat on the mat"]
    chunks = pd.DataFrame({"chunk_id": [f"c{i}" for i in range(5)], "doc_id": [f"d{i}" for i in range(5)], "text": texts})
    vecs = rng.normal(size=(5, 8)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    res = LanceDBResource(uri=str(tmp_path / "db"))
    return res, res.write_chunk_table("t", chunks, vecs), vecs


def test_three_retrievers_find_the_right_chunk(index):
    res, idx, vecs = index
    assert idx.count() == 5
    assert idx.bm25("hypersonic heat", 2)[0][0] == "c2"
    assert idx.dense(vecs[3], 2)[0][0] == "c3"
    assert idx.dense(vecs[3], 1)[0][1] == pytest.approx(1.0, abs=1e-5)
    assert idx.hybrid("shock mach", vecs[3], 3)[0][0] == "c3"
    assert idx.bm25("???", 3) == []
    ids, mat = idx.vectors()
    assert ids == [f"c{i}" for i in range(5)] and np.allclose(mat, vecs)


def test_rewriting_a_table_makes_new_rows_searchable(index):
    res, idx, vecs = index
    chunks = pd.DataFrame({"chunk_id": ["n1"], "doc_id": ["dn"], "text": ["supersonic inlet buzz"]})
    res.write_chunk_table("t", chunks, vecs[:1])
    reopened = res.open("t")
    assert reopened.bm25("inlet buzz", 3)[0][0] == "n1"


def test_open_missing_table_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="materialize the index asset first"):
        LanceDBResource(uri=str(tmp_path / "db")).open("nope")


def test_mismatched_vectors_are_rejected(tmp_path):
    chunks = pd.DataFrame({"chunk_id": ["a"], "doc_id": ["d"], "text": ["x"]})
    with pytest.raises(ValueError, match="1 chunks but 2 vectors"):
        LanceDBResource(uri=str(tmp_path / "db")).write_chunk_table("t", chunks, np.zeros((2, 4), "float32"))


def _frame(rows):
    return pd.DataFrame(rows, columns=["chunk_id", "doc_id", "text"])


def test_sync_adds_new_rows_deletes_gone_ones_and_every_retriever_sees_the_change(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(4, 8)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    res = LanceDBResource(uri=str(tmp_path / "db"))
    first = _frame([("c0", "d0", "the wing produces lift"), ("c1", "d1", "heat transfer in hypersonic flow"),
                    ("c2", "d2", "shock waves at mach three")])
    _, info = res.sync_chunk_table("t", first, vecs[:3], model="m")
    assert info == {"mode": "rewrite", "rows_added": 3, "rows_deleted": 0}
    # d1 deleted, d3 added: only the difference is written
    second = _frame([("c0", "d0", "the wing produces lift"), ("c2", "d2", "shock waves at mach three"),
                     ("c3", "d3", "vortex shedding behind a cylinder")])
    idx, info = res.sync_chunk_table("t", second, vecs[[0, 2, 3]], model="m")
    assert info == {"mode": "incremental", "rows_added": 1, "rows_deleted": 1}
    assert idx.count() == 3
    assert idx.bm25("vortex cylinder", 3)[0][0] == "c3"
    assert idx.dense(vecs[3], 1)[0][0] == "c3"
    assert idx.hybrid("vortex shedding", vecs[3], 3)[0][0] == "c3"
    assert idx.bm25("hypersonic heat", 3) == []
    assert "c1" not in [c for c, _ in idx.dense(vecs[1], 10)]
    assert "c1" not in [c for c, _ in idx.hybrid("hypersonic heat", vecs[1], 10)]
    # the new row is in the full-text index itself, not only found by a flat scan of unindexed rows
    fts = [i for i in idx.table.list_indices() if i.index_type == "FTS"]
    assert len(fts) == 1 and idx.table.index_stats(fts[0].name).num_unindexed_rows == 0
    # nothing changed: nothing written
    _, info = res.sync_chunk_table("t", second, vecs[[0, 2, 3]], model="m")
    assert info == {"mode": "incremental", "rows_added": 0, "rows_deleted": 0}
    # a chunk that moved to another document is rewritten with its new doc_id
    moved = _frame([("c0", "d9", "the wing produces lift"), ("c2", "d2", "shock waves at mach three"),
                    ("c3", "d3", "vortex shedding behind a cylinder")])
    idx, info = res.sync_chunk_table("t", moved, vecs[[0, 2, 3]], model="m")
    assert info["rows_added"] == 1 and info["rows_deleted"] == 1
    assert dict(zip(*[idx.table.to_arrow().column(c).to_pylist() for c in ("chunk_id", "doc_id")]))["c0"] == "d9"


def test_sync_rewrites_the_table_when_the_model_changes(tmp_path):
    vecs = np.eye(2, 8, dtype="float32")
    res = LanceDBResource(uri=str(tmp_path / "db"))
    chunks = _frame([("c0", "d0", "lift"), ("c1", "d1", "drag")])
    res.sync_chunk_table("t", chunks, vecs, model="m1")
    idx, info = res.sync_chunk_table("t", chunks, vecs, model="m2")
    assert info["mode"] == "rewrite" and set(idx.table.to_arrow().column("model").to_pylist()) == {"m2"}
