"""Tier 2: the learning_curve asset called directly, on the tiny corpus and the tiny model, with a real MLflow."""
import json

import dagster as dg
import pandas as pd
import pytest

from assets.corpus.readers import HumanQuerySet
from assets.training.learning_curve import LearningCurveConfig, learning_curve, shipped_seed
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource
from tests.conftest import TOPICS, tiny_documents

SPLIT_OF_TOPIC = {"cylinder": "validation", "nozzle": "test"}   # the other four topics train


@pytest.fixture(scope="module")
def inputs():
    docs = tiny_documents()
    chunks = pd.DataFrame({"chunk_id": [f"{d['_id']}#0" for d in docs], "doc_id": [d["_id"] for d in docs],
                           "text": [d["text"] for d in docs]})
    chunks.attrs["corpus_name"] = "tiny"
    splits, triplets = [], []
    for n, d in enumerate(docs):
        topic, i = d["_id"].rsplit("-", 1)
        split, qid, term = SPLIT_OF_TOPIC.get(topic, "train"), f"q{n}", TOPICS[topic][int(i)]
        splits.append({"query_id": qid, "text": f"what about {term}", "split": split, "positives": [f"{d['_id']}#0"]})
        for k in range(1 + n % 2):   # one or two rows a query: subsets must keep them together
            neg = docs[(n + 7 + k) % len(docs)]
            triplets.append({"query_id": qid, "split": split, "anchor": f"what about {term}", "positive": d["text"],
                             "negative": neg["text"], "positive_chunk_id": f"{d['_id']}#0",
                             "negative_chunk_id": f"{neg['_id']}#0"})
    human = [HumanQuerySet(name="tiny/test", queries={"h0": "lift of a wing"}, qrels={"h0": {"wing-0": 1}})]
    return pd.DataFrame(triplets), chunks, pd.DataFrame(splits), human


def _md(out: dg.Output) -> dict:
    return {k: v.value for k, v in out.metadata.items()}


def _materialize(tmp_path, inputs, model_path, shipped: dict, indices=({}, {}), embedder=None, lancedb=None, **config):
    triplets, chunks, splits, human = inputs
    return learning_curve(dg.build_asset_context(), training_triplets=triplets, chunks=chunks, query_splits=splits,
                          human_queries=human, finetuned_biencoder=shipped,
                          baseline_index=indices[0], finetuned_index=indices[1],
                          embedder=embedder or EmbedderResource(model=model_path, device="cpu"),
                          lancedb=lancedb or LanceDBResource(uri=str(tmp_path / "lancedb")),
                          mlflow=MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
                          workspace=WorkspaceResource(home=str(tmp_path)),
                          config=LearningCurveConfig(**{"sizes": [4, 8], "seeds": [0, 1], "batch_size": 4, **config}))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, tiny_model_path):
    """A stand-in for finetuned_biencoder's output: the tiny model itself, with an MLflow run to log into."""
    home = tmp_path_factory.mktemp("curve_home")
    mlflow = MLflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    with mlflow.start_run("tiny", run_name="biencoder-test") as run:
        pass
    return home, {"model_path": tiny_model_path, "mlflow_run_id": run.info.run_id, "mlflow_run_url": "http://x",
                  "seed": 42, "retrained": True}


@pytest.fixture(scope="module")
def computed(shipped, inputs, tiny_model_path):
    home, value = shipped
    return _materialize(home, inputs, tiny_model_path, value)


def test_every_seed_and_size_is_a_point_beside_the_base_and_the_shipped_model(computed, inputs):
    points = computed.value
    n_train = int((inputs[0]["split"] == "train").sum())
    assert set(points["query_set"]) == {"synthetic/validation", "human/tiny/test"}
    for name, rows in points.groupby("query_set"):
        assert sorted(zip(rows["kind"], rows["size"], rows["seed"].fillna(-1))) == sorted(
            [("baseline", 0, -1), ("full", n_train, 42)] + [("subset", s, seed) for s in (4, 8) for seed in (0, 1)])
    subsets = points[points["kind"] == "subset"]
    assert (subsets["n_examples"] <= subsets["size"]).all() and (subsets["n_examples"] >= 1).all()
    assert points[["ndcg@10", "recall@10"]].apply(lambda c: c.between(0, 1)).all().all()
    assert set(points.loc[points["query_set"] == "synthetic/validation", "n_queries"]) == {6}   # the cylinder topic
    md = _md(computed)
    assert md["models_trained"] == 4 and md["points"] == len(points)
    one_set = subsets[subsets["query_set"] == "synthetic/validation"]
    assert md["steps"] == sum(-(-n // 4) for n in one_set["n_examples"])   # one epoch at batch 4, every model
    assert md["learning_curve"].startswith("![learning curve")
    assert "0 (base model)" in md["ndcg@10"]


def test_the_curve_is_written_and_logged_into_the_shipped_models_run(computed, shipped):
    import mlflow

    home, value = shipped
    reports = home / "reports"
    assert (reports / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_parquet(reports / "learning_curve.parquet").shape == computed.value.shape
    assert len(json.loads((reports / "learning_curve.json").read_text())["points"]) == len(computed.value)
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert {"learning_curve.png", "learning_curve.parquet", "learning_curve.json"} <= {
        a.path for a in client.list_artifacts(value["mlflow_run_id"])}
    history = client.get_metric_history(value["mlflow_run_id"], "learning_curve.human.tiny.test.ndcg_at_10")
    assert sorted(m.step for m in history) == [0, 4, 8, int(computed.value["size"].max())]


def test_a_nightly_run_without_retraining_reads_the_last_curve_back(computed, shipped, inputs, tiny_model_path):
    home, value = shipped
    again = _materialize(home, inputs, tiny_model_path, {**value, "retrained": False})
    assert _md(again)["models_trained"] == 0 and _md(again)["status"].startswith("reused")
    pd.testing.assert_frame_equal(again.value, computed.value)
    other = _materialize(home, inputs, tiny_model_path, {**value, "retrained": False}, sizes=[4], seeds=[3])
    assert _md(other)["models_trained"] == 1   # other settings: the last curve does not answer them


def test_off_is_an_empty_frame_that_says_how_to_turn_it_on(tmp_path, inputs, tiny_model_path):
    out = _materialize(tmp_path, inputs, tiny_model_path, {"model_path": tiny_model_path}, enabled=False)
    assert out.value.empty and list(out.value.columns)[:4] == ["size", "seed", "query_set", "kind"]
    assert "--no-learning-curve" in _md(out)["skipped"]
    assert not (tmp_path / "reports" / "learning_curve.png").exists()


def test_the_shipped_seed_is_read_from_its_run_and_a_server_error_is_not_read_as_no_seed(shipped, monkeypatch):
    import mlflow as mlflow_api
    from mlflow.exceptions import RestException

    home, _ = shipped
    tracking = MLflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    with tracking.start_run("tiny", run_name="seeded") as run:
        mlflow_api.log_param("seed", 7)
    assert shipped_seed({"mlflow_run_id": run.info.run_id}, tracking) == 7
    assert shipped_seed({"mlflow_run_id": "0" * 32}, tracking) is None   # a run the server does not have
    assert shipped_seed({}, tracking) is None

    def bad_gateway(self, run_id):
        raise RestException({"error_code": "INTERNAL_ERROR", "message": "Response: 502 Bad Gateway"})

    monkeypatch.setattr(mlflow_api.MlflowClient, "get_run", bad_gateway)
    with pytest.raises(RestException, match="502 Bad Gateway"):
        shipped_seed({"mlflow_run_id": run.info.run_id}, tracking)


def test_the_base_and_shipped_models_chunk_vectors_are_read_from_their_indices_not_embedded_again(
        tmp_path, shipped, inputs, tiny_model_path):
    value = {k: v for k, v in shipped[1].items() if k != "mlflow_run_id"}   # no run to log into: not the point here
    _, chunks, _, _ = inputs
    embedder = EmbedderResource(model=tiny_model_path, device="cpu")
    lancedb = LanceDBResource(uri=str(tmp_path / "lancedb"))
    vectors = embedder.encode(chunks["text"].tolist())
    for table in ("chunks_base", "chunks_finetuned"):
        lancedb.sync_chunk_table(table, chunks, vectors, model=tiny_model_path)
    index = {"table": "chunks_base", "model": tiny_model_path}
    indices = (index, {**index, "table": "chunks_finetuned"})

    class Counting(EmbedderResource):
        def encode(self, texts, path=None, **kw):
            calls.append(len(texts))
            return super().encode(texts, path, **kw)

    calls = []
    reused = _materialize(tmp_path / "a", inputs, tiny_model_path, value, indices=indices, sizes=[4], seeds=[0],
                          embedder=Counting(model=tiny_model_path, device="cpu"), lancedb=lancedb)
    chunk_passes_reused = sum(n == len(chunks) for n in calls)
    calls.clear()
    embedded = _materialize(tmp_path / "b", inputs, tiny_model_path, value, sizes=[4], seeds=[0],
                            embedder=Counting(model=tiny_model_path, device="cpu"))
    assert _md(reused)["indices_reused"] == 2 and _md(embedded)["indices_reused"] == 0
    assert sum(n == len(chunks) for n in calls) == chunk_passes_reused + 2   # two corpus passes saved
    cols = ["query_set", "kind", "size", "ndcg@10", "recall@10"]
    pd.testing.assert_frame_equal(reused.value[cols], embedded.value[cols], atol=1e-5)
    # an index that lacks a chunk (or holds another model's vectors) is not used: the corpus is embedded
    partial = LanceDBResource(uri=str(tmp_path / "partial"))
    partial.sync_chunk_table("chunks_base", chunks.iloc[1:], vectors[1:], model=tiny_model_path)
    ids = chunks["chunk_id"].tolist()
    assert partial.index_vectors(index, ids) == (None, [ids[0]])
    assert lancedb.index_vectors({**index, "model": "other"}, ids)[0] is None
    assert lancedb.index_vectors({"enabled": False}, ids)[0] is None
