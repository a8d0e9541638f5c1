"""The provider embedder against a fake /v1/embeddings: batching, the cache, retries, normalisation, the key."""
import time

import numpy as np
import pytest

from resources.embedder import EmbedderResource, bundled_minilm_path
from resources.embedder_openai import EmbeddingEndpointError, OpenAIEmbedderResource, batch_vectors, l2_normalise
from resources.embedding_cache import EmbeddingCache, text_hash
from tests.fake_embeddings import FakeEmbeddingsEndpoint, fake_vector

KEY = "sk-embedsecret1234567890"
TEXTS = [f"passage {i} on the wing tip vortex and lift" for i in range(10)]


@pytest.fixture
def endpoint():
    ep = FakeEmbeddingsEndpoint(dim=48)
    yield ep
    ep.close()


def embedder(endpoint, tmp_path, **kw) -> OpenAIEmbedderResource:
    settings = {"model": "fake-embed", "batch_size": 4, "retry_backoff_s": 0.01, "max_backoff_s": 2.0,
                "timeout_s": 5.0, **kw}
    return OpenAIEmbedderResource(base_url=endpoint.url, api_key=KEY,
                                  cache_path=str(tmp_path / "embedding_cache.sqlite"), **settings)


def test_texts_go_in_batches_and_come_back_normalised_float32_in_order(endpoint, tmp_path):
    vectors = embedder(endpoint, tmp_path).encode(TEXTS)
    assert sorted(len(b) for b in endpoint.batches) == [2, 4, 4]   # up to 4 in flight: any arrival order
    assert sorted(t for b in endpoint.batches for t in b) == sorted(TEXTS)
    assert all(b["model"] == "fake-embed" and b["encoding_format"] == "float" for b in endpoint.bodies)
    assert vectors.dtype == np.float32 and vectors.shape == (10, 48)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    expected = np.stack([fake_vector(t, 48) for t in TEXTS])   # the endpoint answers in reverse: sorted by index
    assert np.allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)


def test_a_rerun_calls_the_endpoint_zero_times_and_a_new_text_costs_one_request(endpoint, tmp_path):
    first = embedder(endpoint, tmp_path).encode(TEXTS)
    assert endpoint.requests == 3
    again = embedder(endpoint, tmp_path)   # a new resource (a new run) on the same home's cache
    assert np.array_equal(again.encode(TEXTS), first) and endpoint.requests == 3
    assert again.usage() == {"embed_requests": 0, "embed_texts_sent": 0, "embed_cache_hits": 10}
    mixed = again.encode([TEXTS[0], "a brand new passage", TEXTS[1], "a brand new passage"])
    assert endpoint.requests == 4 and endpoint.batches[-1] == ["a brand new passage"]   # each missing text once
    assert np.array_equal(mixed[1], mixed[3]) and np.array_equal(mixed[0], first[0])
    assert endpoint.paid_twice() == []
    cache = EmbeddingCache(tmp_path / "embedding_cache.sqlite")
    assert cache.count("openai:fake-embed") == 11 and cache.dim("openai:fake-embed") == 48


def test_the_cache_is_keyed_by_model_and_dimensions(endpoint, tmp_path):
    embedder(endpoint, tmp_path).encode(TEXTS[:2])
    other = embedder(endpoint, tmp_path, model="other-embed").encode(TEXTS[:2])
    short = embedder(endpoint, tmp_path, dimensions=16)
    assert short.base_model_path() == "openai:fake-embed@16"
    assert short.encode(TEXTS[:2]).shape == (2, 16) and endpoint.bodies[-1]["dimensions"] == 16
    assert endpoint.requests == 3 and other.shape == (2, 48)


def test_429_with_retry_after_500_503_html_and_a_timeout_are_retried_and_paid_once(endpoint, tmp_path):
    endpoint.retry_after, endpoint.hang_s = 0.4, 1.0
    endpoint.fail_next(["429", "500", "503", "html", "hang"])
    e = embedder(endpoint, tmp_path, max_concurrency=1, timeout_s=0.3)
    t0 = time.perf_counter()
    vectors = e.encode(TEXTS)
    assert time.perf_counter() - t0 >= 0.4 + 0.3   # the 429's Retry-After (backoff alone is 0.01 s) and the timeout
    assert endpoint.served == {"429": 1, "500": 1, "503": 1, "html": 1, "hang": 1, "ok": 3}
    assert endpoint.requests == 8 and e.usage()["embed_requests"] == 8 and endpoint.paid_twice() == []
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_a_retry_after_longer_than_max_backoff_is_capped(endpoint, tmp_path):
    endpoint.retry_after = 30.0
    endpoint.fail_next(["429"])
    t0 = time.perf_counter()
    embedder(endpoint, tmp_path, max_backoff_s=0.2).encode(TEXTS[:1])
    assert 0.2 <= time.perf_counter() - t0 < 5.0


def test_a_client_error_fails_at_once_saying_what_to_change_and_the_key_is_in_no_error_text(endpoint, tmp_path):
    endpoint.fail_next(["echo401"])
    with pytest.raises(EmbeddingEndpointError) as err:
        embedder(endpoint, tmp_path).encode(TEXTS[:1])
    assert endpoint.requests == 1 and KEY not in str(err.value) and "Bearer ***" in str(err.value)
    assert "check FLYWHEEL_EMBED_API_KEY" in str(err.value) and endpoint.url in str(err.value)
    endpoint.fail_next(["500"] * 10)
    with pytest.raises(EmbeddingEndpointError) as err:
        embedder(endpoint, tmp_path, max_retries=2).encode(TEXTS[:1])
    assert "after 3 tries" in str(err.value) and "raise max_retries" in str(err.value) and KEY not in str(err.value)
    assert endpoint.requests == 4


def test_a_batch_that_fails_leaves_the_others_cached_and_the_rerun_pays_only_for_it(endpoint, tmp_path):
    texts = [*TEXTS[:8], "this one says fault=400"]
    with pytest.raises(EmbeddingEndpointError, match="1 of 3 batches failed; the 8 vectors received are cached"):
        embedder(endpoint, tmp_path).encode(texts)
    cache = EmbeddingCache(tmp_path / "embedding_cache.sqlite")
    assert set(cache.get_many("openai:fake-embed", [text_hash(t) for t in texts])) == {text_hash(t) for t in TEXTS[:8]}
    before = endpoint.requests
    assert embedder(endpoint, tmp_path).encode(TEXTS[:8]).shape == (8, 48) and endpoint.requests == before


def test_a_400_names_the_model_and_the_input_length_as_what_to_check(endpoint, tmp_path):
    endpoint.fail_next(["400"])
    with pytest.raises(EmbeddingEndpointError, match="after 1 try.*FLYWHEEL_EMBED_MODEL.*max_tokens"):
        embedder(endpoint, tmp_path).encode(TEXTS[:1])


def test_an_answer_with_a_vector_missing_is_refused_and_nothing_of_it_is_cached(endpoint, tmp_path):
    endpoint.fail_next(["short"])
    with pytest.raises(EmbeddingEndpointError, match="answered 3 vectors for 4 texts"):
        embedder(endpoint, tmp_path).encode(TEXTS[:4])
    assert EmbeddingCache(tmp_path / "embedding_cache.sqlite").count() == 0


def test_concurrency_is_bounded(endpoint, tmp_path):
    endpoint.fail_next(["slow"] * 6)
    embedder(endpoint, tmp_path, batch_size=1, max_concurrency=2).encode(TEXTS[:6])
    assert endpoint.max_in_flight == 2 and endpoint.requests == 6


def test_a_provider_cannot_load_or_encode_a_local_model_and_says_why(endpoint, tmp_path):
    e = embedder(endpoint, tmp_path)
    assert "cannot be fine-tuned" in e.frozen_reason() and "query adapter" in e.frozen_reason()
    assert EmbedderResource().frozen_reason() == ""
    assert e.tokenizer_path() == bundled_minilm_path() and "MiniLM" in e.tokenizer_note()
    with pytest.raises(ValueError, match="no local weights"):
        e.load()
    with pytest.raises(ValueError, match="only the provider's own model"):
        e.encode(["x"], "/models/biencoder/run/model")
    assert e.encode(["x"], e.base_model_path()).shape == (1, 48)
    assert e.encode([]).shape == (0, 48) and endpoint.requests == 1   # the length is known from the cache


def test_pure_checks_of_an_answer_and_normalisation():
    class Item:
        def __init__(self, index, embedding):
            self.index, self.embedding = index, embedding

    assert [v.tolist() for v in batch_vectors([Item(1, [0, 2]), Item(0, [3, 4])], 2)] == [[3, 4], [0, 2]]
    with pytest.raises(ValueError, match="indices"):
        batch_vectors([Item(0, [1.0]), Item(0, [1.0])], 2)
    with pytest.raises(ValueError, match="lengths"):
        batch_vectors([Item(0, [1.0]), Item(1, [1.0, 2.0])], 2)
    with pytest.raises(ValueError, match="zero or not finite"):
        batch_vectors([Item(0, [0.0, 0.0])], 1)
    out = l2_normalise(np.array([[3.0, 4.0]]))
    assert out.dtype == np.float32 and out.tolist() == [[0.6000000238418579, 0.800000011920929]]
    with pytest.raises(ValueError, match="vector 1"):
        l2_normalise(np.array([[1.0, 0.0], [np.nan, 1.0]]))
