"""Tier 1-2: the local embedder's precision, and the key its vectors are stored under."""
import numpy as np
import pytest

from resources.embedder import EmbedderResource

TEXTS = ["the lift of a swept wing at low speed", "heat transfer in a laminar boundary layer", "jet noise"]


def test_bf16_vectors_are_close_to_fp32_but_are_not_them(tiny_model_path):
    fp32 = EmbedderResource(model=tiny_model_path, device="cpu", precision="fp32").encode(TEXTS)
    bf16 = EmbedderResource(model=tiny_model_path, device="cpu", precision="bf16").encode(TEXTS)
    assert fp32.dtype == bf16.dtype == np.float32 and fp32.shape == bf16.shape
    cosine = (fp32 * bf16).sum(axis=1)
    assert (cosine > 0.99).all()
    assert not np.allclose(fp32, bf16, atol=1e-6)   # autocast really ran: bf16 rounds the matmuls


def test_vectors_are_keyed_by_model_and_by_precision_when_it_is_not_fp32(tiny_model_path):
    fp32 = EmbedderResource(model=tiny_model_path, precision="fp32")
    bf16 = EmbedderResource(model=tiny_model_path, precision="bf16")
    assert fp32.vector_key() == tiny_model_path and fp32.vector_key("/m/tuned") == "/m/tuned"
    assert bf16.vector_key() == f"{tiny_model_path}@bf16" and bf16.vector_key("/m/tuned") == "/m/tuned@bf16"
    assert EmbedderResource(model=tiny_model_path).inference_precision() in ("fp32", "bf16")   # auto: this CPU's
    with pytest.raises(ValueError, match="'auto', 'fp32' or 'bf16'"):
        EmbedderResource(model=tiny_model_path, precision="fp16").vector_key()


def test_an_index_built_in_fp32_is_re_embedded_not_mixed_when_the_precision_changes(tmp_path, tiny_model_path):
    import dagster as dg
    import pandas as pd

    from assets.indices import build_index
    from resources.lance import LanceDBResource

    chunks = pd.DataFrame({"chunk_id": ["a", "b", "c"], "doc_id": ["a", "b", "c"], "text": TEXTS})
    lancedb = LanceDBResource(uri=str(tmp_path / "lance"))
    ctx = dg.build_asset_context()
    first = build_index(ctx, chunks, EmbedderResource(model=tiny_model_path, precision="fp32"), lancedb, "t", None)
    again = build_index(ctx, chunks, EmbedderResource(model=tiny_model_path, precision="fp32"), lancedb, "t", None)
    other = build_index(ctx, chunks, EmbedderResource(model=tiny_model_path, precision="bf16"), lancedb, "t", None)
    md = lambda out: {k: v.value for k, v in out.metadata.items()}   # noqa: E731
    assert (md(first)["chunks_embedded"], md(again)["chunks_embedded"], md(other)["chunks_embedded"]) == (3, 0, 3)
    assert other.value["vector_key"] == f"{tiny_model_path}@bf16" and other.value["model"] == tiny_model_path
    assert set(lancedb.stored_vectors("t", f"{tiny_model_path}@bf16")) == {"a", "b", "c"}
    assert lancedb.stored_vectors("t", tiny_model_path) == {}   # one precision in the table, never both
