import pandas as pd
import pytest

from assets.training.crossencoder import (RerankerSettings, accumulation, head_rate, is_biencoder_folder,
                                          load_reranker, reranker_pairs, train_crossencoder, validation_samples)


def _fixture(n=24):
    splits, triplets, labels, chunks = [], [], [], []
    for i in range(n):
        split = "validation" if i % 4 == 0 else "test" if i % 4 == 1 else "train"
        doc = f"{split}-d{i}"
        chunks += [{"chunk_id": f"p{i}", "doc_id": doc, "text": f"topic {i} is described here in detail"},
                   {"chunk_id": f"n{i}", "doc_id": doc + "x", "text": f"unrelated text about cooking {i}"},
                   {"chunk_id": f"j{i}", "doc_id": doc + "y", "text": f"topic {i} is mentioned in passing"}]
        splits.append({"query_id": f"q{i}", "doc_id": doc, "split": split, "style": "question",
                       "text": f"what is topic {i}", "positives": [f"p{i}"], "labelled": True})
        if split != "test":
            triplets.append({"query_id": f"q{i}", "split": split, "anchor": f"what is topic {i}",
                             "positive": chunks[-3]["text"], "negative": chunks[-2]["text"],
                             "positive_chunk_id": f"p{i}", "negative_chunk_id": f"n{i}"})
        labels += [{"query_id": f"q{i}", "chunk_id": f"p{i}", "grade": 3, "score": -1.0, "judge": "t", "is_source": True},
                   {"query_id": f"q{i}", "chunk_id": f"j{i}", "grade": 1, "score": -3.0, "judge": "t",
                    "is_source": False}]
    return pd.DataFrame(splits), pd.DataFrame(labels), pd.DataFrame(triplets), pd.DataFrame(chunks)


def _split_of(doc):
    return doc.split("-")[0]


def test_pairs_carry_graded_targets_and_never_read_test_queries_or_other_splits():
    splits, labels, triplets, chunks = _fixture()
    # a judged pair whose chunk belongs to another split's document must be dropped
    labels = pd.concat([labels, pd.DataFrame([{"query_id": "q2", "chunk_id": "p1", "grade": 3, "score": 0.0,
                                               "judge": "t", "is_source": False}])])
    pairs = reranker_pairs(splits, labels, triplets, chunks, _split_of)
    assert set(pairs["split"]) == {"train", "validation"}
    assert not pairs["query_id"].isin(splits.loc[splits["split"] == "test", "query_id"]).any()
    assert not ((pairs["query_id"] == "q2") & (pairs["chunk_id"] == "p1")).any()
    by = pairs.set_index(["query_id", "chunk_id"])["target"]
    assert by[("q2", "p2")] == 1.0 and by[("q2", "n2")] == 0.0
    assert by[("q2", "j2")] == pytest.approx(1 / 3)          # "marginally relevant" is not a zero
    assert set(pairs.loc[pairs["chunk_id"] == "j2", "origin"]) == {"judged"}


def test_a_judged_grade_overrides_the_positive_rule():
    splits, labels, triplets, chunks = _fixture()
    labels.loc[(labels["query_id"] == "q2") & (labels["chunk_id"] == "p2"), "grade"] = 0
    pairs = reranker_pairs(splits, labels, triplets, chunks, _split_of)
    row = pairs[(pairs["query_id"] == "q2") & (pairs["chunk_id"] == "p2")].iloc[0]
    assert row["target"] == 0.0 and row["origin"] == "judged"


def test_validation_samples_need_a_positive_and_a_negative():
    splits, labels, triplets, chunks = _fixture()
    pairs = reranker_pairs(splits, labels, triplets, chunks, _split_of)
    samples = validation_samples(pairs)
    assert len(samples) == (splits["split"] == "validation").sum()
    assert all(s["positive"] and s["negative"] for s in samples)
    assert validation_samples(pairs[pairs["target"] > 0.5]) == []


def test_reranker_trains_validates_and_reloads_with_the_same_scores(tmp_path, tiny_model_path):
    import numpy as np
    import torch

    splits, labels, triplets, chunks = _fixture()
    pairs = reranker_pairs(splits, labels, triplets, chunks, _split_of)
    model = load_reranker(tiny_model_path, "cpu", max_length=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logged = []
    result = train_crossencoder(model, pairs, tmp_path, RerankerSettings(max_steps=4, batch_size=8, evals_per_run=2,
                                                                         learning_rate=1e-3, max_length=64),
                                on_log=lambda logs, step: logged.append((step, logs)))
    assert result.steps == 4
    assert "validation_ndcg@10" in result.validation_base and "validation_ndcg@10" in result.validation_final
    assert any("eval_validation_ndcg@10" in logs for _, logs in logged)
    after = model.state_dict()
    assert any(not torch.allclose(before[k], after[k]) for k in before if before[k].is_floating_point())
    reloaded = load_reranker(result.model_path, "cpu", max_length=64)
    probe = [("what is topic 3", "topic 3 is described here"), ("what is topic 3", "cooking")]
    assert np.allclose(reloaded.predict(probe), model.predict(probe), atol=1e-5)
    assert not (tmp_path / "checkpoints").exists()
    assert is_biencoder_folder(tiny_model_path) and not is_biencoder_folder(result.model_path)


def test_a_bi_encoder_body_gets_a_mean_pooled_head_trained_at_its_own_rate(tiny_model_path):
    """From a bi-encoder folder: body -> mean pooling -> one-logit Dense; the head alone matches the fast rate."""
    import re

    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    model = load_reranker(tiny_model_path, "cpu", max_length=32)
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense"]
    [(pattern, rate)] = head_rate(model, 1e-3).items()
    names = [n for n, _ in BinaryCrossEntropyLoss(model).named_parameters()]   # as the trainer matches them
    head = [n for n in names if re.search(pattern, n)]
    assert rate == 1e-3 and len(head) == 2 and all(".2.linear." in n for n in head)
    assert head_rate(model, 0.0) is None
    scores = model.predict([("a query", "a passage"), ("a query", "another passage entirely")])
    assert scores.shape == (2,)


def test_one_kind_of_target_is_a_clear_error(tmp_path, tiny_model_path):
    splits, labels, triplets, chunks = _fixture()
    pairs = reranker_pairs(splits, labels, triplets, chunks, _split_of)
    with pytest.raises(ValueError, match="positives and negatives"):
        train_crossencoder(load_reranker(tiny_model_path, "cpu"), pairs[pairs["target"] == 1.0], tmp_path,
                           RerankerSettings(max_steps=1))


def test_micro_batches_sum_to_the_batchs_update(tmp_path, tiny_model_path):
    """A batch of 8 run as two passes of 4 (gradients summed) ends at the weights of 8 at once (dropout off)."""
    import torch

    assert accumulation(16, 8) == {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}
    assert accumulation(16, 0)["gradient_accumulation_steps"] == accumulation(16, 5)["gradient_accumulation_steps"] == 1
    assert accumulation(4, 8) == {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}
    splits, labels, triplets, chunks = _fixture()
    pairs = reranker_pairs(splits, labels, triplets, chunks, _split_of)
    weights = {}
    for micro in (0, 4):
        torch.manual_seed(0)   # the same fresh head for both
        model = load_reranker(tiny_model_path, "cpu", max_length=64)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        train_crossencoder(model, pairs, tmp_path / str(micro),
                           RerankerSettings(max_steps=3, batch_size=8, micro_batch=micro, evals_per_run=1,
                                            learning_rate=1e-3, max_length=64))
        weights[micro] = {k: v.clone() for k, v in model.state_dict().items()}
    moved = [k for k in weights[0] if weights[0][k].is_floating_point()]
    assert moved and all(torch.allclose(weights[0][k], weights[4][k], atol=1e-5) for k in moved)
