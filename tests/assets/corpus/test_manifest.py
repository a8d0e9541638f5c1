import pandas as pd

from assets.corpus.manifest import chunk_changes, read_manifest, write_manifest


def _m(rows):
    return pd.DataFrame(rows, columns=["chunk_id", "doc_id"])


def test_first_run_counts_everything_as_new():
    assert chunk_changes(None, _m([("a", "d1"), ("b", "d2")])) == {
        "chunks_total": 2, "chunks_new": 2, "chunks_removed": 0, "chunks_unchanged": 0,
        "documents_new": 2, "documents_removed": 0, "documents_changed": 0}


def test_an_edited_document_a_new_one_and_a_deleted_one():
    before = _m([("a", "d1"), ("b", "d1"), ("c", "d2"), ("x", "d3")])
    after = _m([("a", "d1"), ("b2", "d1"), ("c", "d2"), ("n", "d4")])   # d1 edited, d3 deleted, d4 new
    assert chunk_changes(before, after) == {
        "chunks_total": 4, "chunks_new": 2, "chunks_removed": 2, "chunks_unchanged": 2,
        "documents_new": 1, "documents_removed": 1, "documents_changed": 1}


def test_manifest_round_trips(tmp_path):
    path = tmp_path / "state" / "m.parquet"
    assert read_manifest(path) is None
    write_manifest(path, pd.DataFrame({"chunk_id": ["a"], "doc_id": ["d"], "text": ["t"]}))
    assert read_manifest(path).to_dict("records") == [{"chunk_id": "a", "doc_id": "d"}]
