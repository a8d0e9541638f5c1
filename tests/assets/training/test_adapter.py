"""Tier 1: the query-side adapter on toy vectors (milliseconds to a second each)."""
import numpy as np
import pytest

from assets.evaluation.scoring import dense_hits
from assets.training.adapter import (AdapterSettings, QueryAdapter, apply_adapter, identity_adapter, load_adapter,
                                     save_adapter, train_adapter)


def _normalise(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def _rotated_world(n_docs=240, dim=16, seed=0, noise=0.05):
    """Documents, and queries that are their positive document under a fixed random rotation plus noise: the base
    cosine between a query and its document is near chance, a linear map (the inverse rotation) fixes it."""
    rng = np.random.default_rng(seed)
    docs = _normalise(rng.standard_normal((n_docs, dim)))
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    queries = _normalise(docs @ rotation.T + noise * rng.standard_normal((n_docs, dim)))
    negatives = docs[rng.permutation(n_docs)]
    return docs, queries, negatives


def _recall_at(k, queries, docs, positive_rows):
    hits = dense_hits(queries, [str(i) for i in range(len(docs))], docs, k)
    return float(np.mean([str(r) in {c for c, _ in h} for h, r in zip(hits, positive_rows)]))


def test_the_identity_adapter_reproduces_the_base_vectors_and_rankings():
    docs, queries, _ = _rotated_world()
    for kind in ("linear", "mlp"):
        adapter = identity_adapter(docs.shape[1], kind)
        adapted = apply_adapter(adapter, queries)
        assert adapted.dtype == np.float32 and adapted.shape == queries.shape
        np.testing.assert_allclose(adapted, queries, atol=1e-6)
        ids = [str(i) for i in range(len(docs))]
        base, mine = dense_hits(queries, ids, docs, 20), dense_hits(adapted, ids, docs, 20)
        assert [[c for c, _ in h] for h in mine] == [[c for c, _ in h] for h in base]
        np.testing.assert_allclose([s for h in mine for _, s in h], [s for h in base for _, s in h], atol=1e-6)


def test_training_on_rotated_queries_lowers_the_loss_and_raises_recall():
    docs, queries, negatives = _rotated_world()
    train, val = slice(0, 180), slice(180, 240)
    before = _recall_at(10, queries[val], docs, range(180, 240))
    result = train_adapter(queries[train], docs[train], negatives[train], (queries[val], docs[val], negatives[val]),
                           AdapterSettings(batch_size=32, max_epochs=40, learning_rate=1e-2, seed=0))
    after = _recall_at(10, apply_adapter(result.weights, queries[val]), docs, range(180, 240))
    assert before < 0.3 and after > 0.9          # 240 documents: chance recall@10 is 0.04
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.validation_best["loss"] < 0.5 * result.validation_identity["loss"]
    assert result.validation_best["recall@10"] > result.validation_identity["recall@10"]
    assert result.best_epoch > 0 and result.steps == result.epochs * (180 // 32)
    assert not np.allclose(result.weights.arrays["W"], np.eye(16))


def test_the_mlp_adapter_trains_too_and_keeps_its_residual_shape():
    docs, queries, negatives = _rotated_world(seed=1)
    result = train_adapter(queries[:180], docs[:180], negatives[:180], (queries[180:], docs[180:], negatives[180:]),
                           AdapterSettings(kind="mlp", hidden=8, batch_size=32, max_epochs=20, learning_rate=1e-2))
    assert set(result.weights.arrays) == {"W", "b", "W1", "b1", "W2"} and result.weights.arrays["W2"].shape == (16, 8)
    assert result.validation_best["loss"] < result.validation_identity["loss"]


def test_when_no_epoch_helps_validation_the_identity_comes_back():
    docs, queries, negatives = _rotated_world()
    # trained towards a rotation that validation (queries = their documents) does not want: epoch 0 stays best
    result = train_adapter(queries[:180], docs[:180], negatives[:180], (docs[180:], docs[180:], negatives[180:]),
                           AdapterSettings(batch_size=32, max_epochs=30, learning_rate=1e-2, patience=2))
    assert result.best_epoch == 0 and result.stopped_early and result.epochs == 2
    np.testing.assert_array_equal(result.weights.arrays["W"], np.eye(16, dtype="float32"))
    assert result.validation_best == result.validation_identity


def test_a_repeated_positive_is_not_its_own_negative():
    docs, _, negatives = _rotated_world(n_docs=8)
    q = np.concatenate([docs, docs[:4]])            # rows 8..11 ask the queries of rows 0..3 again, same positive
    pos, neg = np.concatenate([docs, docs[:4]]), np.concatenate([negatives, negatives[:4]])
    result = train_adapter(q, pos, neg, (q, pos, neg), AdapterSettings(max_epochs=1))
    # a query equal to its positive scores 20 against near-orthogonal others; an unmasked duplicate would tie
    # with it and cost ln 2 = 0.69 for those rows
    assert result.validation_identity["loss"] < 0.1 and result.validation_identity["recall@10"] == 1.0


def test_weights_round_trip_and_the_serving_side_adapts_a_query(tmp_path):
    docs, queries, negatives = _rotated_world()
    result = train_adapter(queries, docs, negatives, settings=AdapterSettings(kind="mlp", hidden=4, max_epochs=2))
    assert result.best_epoch == result.epochs == 2 and not result.validation_identity   # no validation: last epoch
    loaded = load_adapter(save_adapter(result.weights, tmp_path / "a" / "adapter.npz"))
    assert loaded.kind == "mlp"
    np.testing.assert_array_equal(apply_adapter(loaded, queries), apply_adapter(result.weights, queries))
    table = {"q0": queries[0], "q1": queries[1]}
    serving = QueryAdapter(loaded, lambda texts: np.stack([table[t] for t in texts]))
    vec = serving.adapt_query("q1")
    assert vec.shape == (16,) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(vec, apply_adapter(result.weights, queries[1:2])[0])
    assert serving.adapt_queries([]).shape == (0, 16)


def test_bad_inputs_say_what_to_change():
    docs, queries, negatives = _rotated_world(n_docs=4)
    with pytest.raises(ValueError, match="queries_per_chunk"):
        train_adapter(queries[:1], docs[:1], negatives[:1])
    with pytest.raises(ValueError, match="one of each per triplet"):
        train_adapter(queries, docs[:3], negatives)
    with pytest.raises(ValueError, match=r"expected \(n, 16\)"):
        train_adapter(queries, docs[:, :8], negatives)
    with pytest.raises(ValueError, match="linear"):
        train_adapter(queries, docs, negatives, settings=AdapterSettings(kind="conv"))
