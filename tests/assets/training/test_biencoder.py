import pandas as pd
import pytest
import torch

from assets.training.biencoder import TrainSettings, interpolate_weights, train_biencoder


def test_interpolation_is_a_convex_mix_of_float_tensors():
    base = {"w": torch.zeros(2), "ids": torch.tensor([1, 2])}
    tuned = {"w": torch.ones(2), "ids": torch.tensor([3, 4])}
    mixed = interpolate_weights(base, tuned, 0.25)
    assert torch.allclose(mixed["w"], torch.full((2,), 0.25))
    assert torch.equal(mixed["ids"], tuned["ids"])
    assert torch.allclose(interpolate_weights(base, tuned, 1.0)["w"], tuned["w"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpolate_weights(base, tuned, 1.5)


def _triplets(n=24):
    rows = []
    for i in range(n):
        split = "validation" if i % 4 == 0 else "train"
        rows.append({"query_id": f"q{i}", "split": split, "anchor": f"what is topic {i}",
                     "positive": f"topic {i} is described here", "negative": f"unrelated text {i}",
                     "positive_chunk_id": f"p{i}", "negative_chunk_id": f"n{i}"})
    return pd.DataFrame(rows)


def _chunks(tr):
    return pd.DataFrame({"chunk_id": list(tr["positive_chunk_id"]) + list(tr["negative_chunk_id"]),
                         "doc_id": list(tr["query_id"]) * 2, "text": list(tr["positive"]) + list(tr["negative"])})


def test_training_moves_the_weights_validates_and_saves_a_reloadable_model(tmp_path, tiny_model_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tr = _triplets()
    logged = []
    result = train_biencoder(model, tr, _chunks(tr), tmp_path, TrainSettings(max_steps=4, batch_size=4, evals_per_run=2,
                                                                              learning_rate=1e-3, interpolation=0.5),
                             on_log=lambda logs, step: logged.append((step, logs)))
    assert result.steps == 4
    assert any("loss" in h for h in result.history)
    assert "validation_cosine_ndcg@10" in result.validation_base and result.validation_final
    assert any("eval_validation_cosine_ndcg@10" in logs for _, logs in logged)
    after = model.state_dict()
    assert any(not torch.allclose(before[k], after[k]) for k in before if before[k].is_floating_point())
    reloaded = SentenceTransformer(result.model_path, device="cpu")
    assert torch.allclose(reloaded.encode(["x"], convert_to_tensor=True), model.encode(["x"], convert_to_tensor=True),
                          atol=1e-5)
    assert not (tmp_path / "checkpoints").exists()


def test_too_few_triplets_is_a_clear_error(tmp_path, tiny_model_path):
    from sentence_transformers import SentenceTransformer

    tr = _triplets(1)
    with pytest.raises(ValueError, match="queries_per_chunk"):
        train_biencoder(SentenceTransformer(tiny_model_path, device="cpu"), tr, _chunks(tr), tmp_path, TrainSettings())


def test_margin_mse_distils_a_teacher_and_needs_its_margins(tmp_path, tiny_model_path):
    from sentence_transformers import SentenceTransformer

    from assets.training.biencoder import teacher_margins
    from assets.training.crossencoder import load_reranker

    tr = _triplets()
    teacher = load_reranker(tiny_model_path, "cpu", max_length=32)
    margins = teacher_margins(teacher, tr)
    assert len(margins) == len(tr) and all(-1.0 <= m <= 1.0 for m in margins)
    model = SentenceTransformer(tiny_model_path, device="cpu")
    settings = TrainSettings(max_steps=2, batch_size=4, evals_per_run=1, learning_rate=1e-3, loss="margin_mse")
    with pytest.raises(ValueError, match="label"):
        train_biencoder(model, tr, _chunks(tr), tmp_path, settings)
    result = train_biencoder(model, tr.assign(label=margins), _chunks(tr), tmp_path, settings)
    assert result.steps == 2 and any("loss" in h for h in result.history)
    with pytest.raises(ValueError, match="mnrl"):
        train_biencoder(model, tr, _chunks(tr), tmp_path, TrainSettings(loss="triplet"))


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.mark.parametrize("loss", ["mnrl", "margin_mse"])
def test_mini_batches_train_the_same_weights_as_the_whole_batch_at_once(tmp_path, tiny_model_path, loss):
    """GradCache (mnrl) and gradient accumulation (margin_mse) only change how much is in memory at once."""
    from sentence_transformers import SentenceTransformer

    tr = _triplets(40).assign(label=[0.5] * 40)
    trained = {}
    for mini in (0, 2):
        model = _no_dropout(SentenceTransformer(tiny_model_path, device="cpu"))
        settings = TrainSettings(max_steps=3, batch_size=8, mini_batch_size=mini, evals_per_run=1, learning_rate=1e-3,
                                 interpolation=1.0, loss=loss)
        train_biencoder(model, tr, _chunks(tr), tmp_path / f"{loss}-{mini}", settings)
        trained[mini] = {k: v.clone() for k, v in model.state_dict().items()}
    start = SentenceTransformer(tiny_model_path, device="cpu").state_dict()
    moved = [k for k in start if start[k].is_floating_point() and not torch.allclose(start[k], trained[0][k])]
    assert moved   # the comparison is between trained weights, not two copies of the start
    for k in moved:
        assert torch.allclose(trained[0][k], trained[2][k], atol=1e-5), k
