import dagster as dg
import numpy as np
import pandas as pd

from assets.indices import baseline_index, embed_incrementally
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource


def test_embed_incrementally_only_encodes_unknown_chunks():
    chunks = pd.DataFrame({"chunk_id": ["a", "b", "c"], "text": ["ta", "tb", "tc"]})
    seen = []

    def encode(texts):
        seen.extend(texts)
        return np.ones((len(texts), 2), "float32")

    vecs, n_new = embed_incrementally(chunks, {"b": np.zeros(2, "float32")}, encode)
    assert seen == ["ta", "tc"] and n_new == 2
    assert vecs.tolist() == [[1, 1], [0, 0], [1, 1]]


def test_second_build_embeds_nothing_and_new_rows_are_found_by_every_retriever(tmp_path, tiny_model_path):
    from tests.conftest import tiny_documents

    docs = tiny_documents()
    chunks = pd.DataFrame({"chunk_id": [d["_id"] for d in docs], "doc_id": [d["_id"] for d in docs],
                           "text": [d["text"] for d in docs]})
    embedder = EmbedderResource(model=tiny_model_path)
    lancedb = LanceDBResource(uri=str(tmp_path / "db"))
    first = baseline_index(context=dg.build_asset_context(), chunks=chunks.iloc[:-1], embedder=embedder, lancedb=lancedb)
    assert first.metadata["chunks_embedded"].value == len(chunks) - 1
    again = baseline_index(context=dg.build_asset_context(), chunks=chunks, embedder=embedder, lancedb=lancedb)
    assert again.metadata["chunks_embedded"].value == 1 and again.metadata["chunks_reused"].value == len(chunks) - 1
    index = lancedb.open(again.value["table"])
    new = chunks.iloc[-1]
    vec = embedder.encode([new["text"]])[0]
    assert new["chunk_id"] in [c for c, _ in index.bm25(new["text"], 3)]
    assert index.dense(vec, 1)[0][0] == new["chunk_id"]
    assert new["chunk_id"] in [c for c, _ in index.hybrid(new["text"], vec, 3)]


def test_a_deleted_document_leaves_the_index(tmp_path, tiny_model_path):
    from tests.conftest import tiny_documents

    docs = tiny_documents()
    chunks = pd.DataFrame({"chunk_id": [d["_id"] for d in docs], "doc_id": [d["_id"] for d in docs],
                           "text": [d["text"] for d in docs]})
    embedder = EmbedderResource(model=tiny_model_path)
    lancedb = LanceDBResource(uri=str(tmp_path / "db"))
    baseline_index(context=dg.build_asset_context(), chunks=chunks, embedder=embedder, lancedb=lancedb)
    gone = chunks.iloc[0]
    after = baseline_index(context=dg.build_asset_context(), chunks=chunks.iloc[1:], embedder=embedder, lancedb=lancedb)
    assert after.metadata["chunks_removed"].value == 1 and after.metadata["chunks_embedded"].value == 0
    assert after.metadata["rows_deleted"].value == 1 and after.metadata["write_mode"].value == "incremental"
    index = lancedb.open(after.value["table"])
    vec = embedder.encode([gone["text"]])[0]
    assert index.count() == len(chunks) - 1
    assert gone["chunk_id"] not in [c for c, _ in index.bm25(gone["text"], 50)]
    assert gone["chunk_id"] not in [c for c, _ in index.dense(vec, 50)]
    assert gone["chunk_id"] not in [c for c, _ in index.hybrid(gone["text"], vec, 50)]
