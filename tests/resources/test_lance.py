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
