"""Tier 2: the query_adapter asset on the tiny corpus's base index, tracked in a real MLflow sqlite store, and its
rows in the evaluation: at the identity they are the base rows, query by query."""
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.evaluation import ADAPTER, adapter_systems, evaluate_query_set, make_encoder
from assets.evaluation.scoring import QuerySet
from assets.indices import BASELINE_TABLE, build_index
from assets.training.adapter import apply_adapter, identity_adapter, load_adapter, save_adapter
from assets.training.query_adapter import AdapterConfig, query_adapter
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource
from tests.conftest import tiny_documents


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_path):
    home = tmp_path_factory.mktemp("adapter")
    docs = tiny_documents()
    chunks = pd.DataFrame({"chunk_id": [f"c-{d['_id']}" for d in docs], "doc_id": [d["_id"] for d in docs],
                           "text": [d["text"] for d in docs]})
    chunks.attrs["corpus_name"] = "tiny"
    r = {"embedder": EmbedderResource(model=tiny_model_path), "lancedb": LanceDBResource(uri=str(home / "lancedb")),
         "mlflow": MLflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}"),
         "workspace": WorkspaceResource(home=str(home))}
    index = build_index(dg.build_asset_context(), chunks, r["embedder"], r["lancedb"], BASELINE_TABLE, None).value
    rows = []
    for i, d in enumerate(docs):   # each document's title as its query; a document 7 places on as the negative
        neg = docs[(i + 7) % len(docs)]
        for origin in ("synthetic", "feedback") if i % 4 == 0 else ("synthetic",):
            rows.append({"query_id": f"{origin[0]}{i}", "split": "validation" if i % 3 == 0 else "train",
                         "anchor": d["title"] if origin == "synthetic" else f"how about {d['title']}",
                         "positive": d["text"], "negative": neg["text"], "positive_chunk_id": f"c-{d['_id']}",
                         "negative_chunk_id": f"c-{neg['_id']}", "origin": origin})
    return home, chunks, pd.DataFrame(rows), index, r


def chunks_name(world) -> str:
    return world[1].attrs.get("corpus_name", "corpus")


def materialize(world, **config):
    _, chunks, triplets, index, r = world
    return query_adapter(context=dg.build_asset_context(), training_triplets=triplets, chunks=chunks,
                         baseline_index=index, config=AdapterConfig(**config), **r)


def test_the_adapter_trains_over_the_stored_vectors_is_tracked_and_served_from_the_registry(world):
    import mlflow

    home, _, triplets, index, r = world
    out = materialize(world, batch_size=8, max_epochs=4, patience=10)
    value, meta = out.value, out.metadata
    synthetic_val = ((triplets["split"] == "validation") & (triplets["origin"] == "synthetic")).sum()
    assert value["enabled"] and value["retrained"] and value["registered_model"] == r["mlflow"].model_name(chunks_name(world), "adapter") and str(value["model_version"]) == "1"
    assert meta["n_train"].value == (triplets["split"] == "train").sum()     # blend (1, 1): every train row once
    assert meta["n_validation"].value == synthetic_val                      # early stopping: synthetic rows only
    assert meta["rows_without_vectors"].value == 0 and meta["dim"].value == 32 and meta["epochs"].value == 4
    assert meta["steps"].value == 4 * (meta["n_train"].value // 8)
    assert meta["validation_loss_best"].value <= meta["validation_loss_identity"].value
    assert "data:image/png;base64," in meta["loss_curve"].value and "a promotion-gate candidate" in meta["promotion"].value
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    run = client.get_run(value["mlflow_run_id"])
    assert run.data.tags["model_kind"] == "query-adapter" and run.data.params["kind"] == "linear"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4]
    assert {"adapter.npz", "adapter_loss.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    ids, vectors = r["lancedb"].open(index["table"]).vectors()
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    assert value["registered_model"].endswith("-adapter") and value["registered_model"] != "flywheel-adapter"
    served = mlflow.pyfunc.load_model(f"models:/{value['registered_model']}/1")
    np.testing.assert_allclose(served.predict(vectors[:3]), apply_adapter(load_adapter(value["weights_path"]),
                                                                          vectors[:3]), atol=1e-6)


def test_the_blend_weights_choose_the_rows_and_off_means_no_adapter(world):
    _, _, triplets, _, _ = world
    out = materialize(world, batch_size=8, max_epochs=1, feedback_weight=0.0, register_model=False)
    assert out.metadata["n_train_feedback"].value == 0 and out.value["model_version"] is None
    assert out.metadata["n_train"].value == ((triplets["split"] == "train") & (triplets["origin"] == "synthetic")).sum()
    again = materialize(world, batch_size=8, max_epochs=1, feedback_weight=0.0, register_model=False)
    assert again.value["retrained"] is False and again.value["mlflow_run_id"] == out.value["mlflow_run_id"]
    assert again.value["weights_path"] == out.value["weights_path"]   # nothing changed: the same adapter
    off = materialize(world, enabled=False)
    assert off.value == {"enabled": False} and "--no-adapter" in off.metadata["skipped"].value
    assert adapter_systems(off.value, object()) == {}


def test_at_the_identity_the_adapter_rows_are_the_base_rows_query_by_query(world, tmp_path):
    home, chunks, triplets, index, r = world
    base = r["lancedb"].open(index["table"])
    path = save_adapter(identity_adapter(32), tmp_path / "identity.npz")
    adapter = {"enabled": True, "weights_path": str(path)}
    systems = {"dense_base": (base, "dense", None), "hybrid_base": (base, "hybrid", None),
               **adapter_systems(adapter, base)}
    assert systems["hybrid_adapter"] == (base, "hybrid", ADAPTER)
    val = triplets[triplets["origin"] == "synthetic"]
    qs = QuerySet("s", "synthetic", dict(zip(val["query_id"], val["anchor"])),
                  {q: {c: 1} for q, c in zip(val["query_id"], val["positive_chunk_id"])}, None)
    entry, pq = evaluate_query_set(qs, systems, make_encoder(r["embedder"], adapter))
    wide = pq.pivot(index="qid", columns="retriever", values="ndcg@10")
    assert wide["dense_base"].nunique() > 1                                  # not all ties: the test can tell
    pd.testing.assert_series_equal(wide["dense_adapter"], wide["dense_base"], check_names=False)
    pd.testing.assert_series_equal(wide["hybrid_adapter"], wide["hybrid_base"], check_names=False)
    for m in ("ndcg@10", "recall@10", "mrr@10"):
        assert entry["retrievers"]["dense_adapter"][m] == entry["retrievers"]["dense_base"][m]
