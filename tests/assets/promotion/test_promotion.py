"""Tier 2: the promotion gate on real registered models, trained to be better or deliberately worse.

The gate set is the tiny corpus with one human query per document. A model trained on those (query,
document) pairs is better than the base model; one trained on the same queries paired with the wrong
documents is deliberately worse. The registry is a real MLflow sqlite store.
"""
import dagster as dg
import pandas as pd
import pytest

from assets.corpus.readers import HumanQuerySet
from assets.indices import BASELINE_TABLE, build_index
from assets.promotion import PromotionConfig, champion_is_vetted, promotion_gate, serving_index
from assets.training.biencoder import TrainSettings, train_biencoder
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource
from tests.conftest import tiny_documents

NAME = "flywheel-biencoder"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_path):
    home = tmp_path_factory.mktemp("promotion")
    docs = tiny_documents()
    chunks = pd.DataFrame({"chunk_id": [f"c-{d['_id']}" for d in docs], "doc_id": [d["_id"] for d in docs],
                           "text": [d["text"] for d in docs]})
    queries = {f"h-{d['_id']}": d["title"].removeprefix("On ") + " measurements" for d in docs}
    human = [HumanQuerySet(name="tiny/test", queries=queries, qrels={f"h-{d['_id']}": {d["_id"]: 1} for d in docs})]
    splits = pd.DataFrame(columns=["query_id", "text", "split", "positives"])   # no synthetic test split: human gate
    r = {"embedder": EmbedderResource(model=tiny_model_path), "lancedb": LanceDBResource(uri=str(home / "lancedb")),
         "mlflow": MLflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}"),
         "workspace": WorkspaceResource(home=str(home))}
    build_index(dg.build_asset_context(), chunks, r["embedder"], r["lancedb"], BASELINE_TABLE, None)
    return home, chunks, human, splits, queries, r


def trained_version(world, shift: int) -> dict:
    """A model trained on each query paired with the document `shift` places on (0: its own), registered."""
    import mlflow as mlflow_api
    from sentence_transformers import SentenceTransformer

    home, chunks, _, _, queries, r = world
    texts = list(chunks["text"])
    rows = [{"anchor": q, "positive": texts[(i + shift) % len(texts)], "negative": texts[(i + shift + 7) % len(texts)],
             "split": "train", "query_id": qid} for i, (qid, q) in enumerate(queries.items())]
    model = SentenceTransformer(r["embedder"].base_model_path(), device="cpu")
    out = home / "models" / f"shift{shift}"
    settings = TrainSettings(epochs=8, learning_rate=2e-3, batch_size=12, interpolation=1.0, evals_per_run=1)
    result = train_biencoder(model, pd.DataFrame(rows), chunks, out, settings)
    with r["mlflow"].start_run("tiny", run_name=f"shift{shift}") as run:
        info = mlflow_api.sentence_transformers.log_model(model, name="model", registered_model_name=NAME)
    return {"model_path": result.model_path, "registered_model": NAME, "model_version": info.registered_model_version,
            "mlflow_run_id": run.info.run_id, "mlflow_run_url": ""}


def gate(world, candidate: dict) -> dict:
    _, chunks, human, splits, _, r = world
    triplets = pd.DataFrame(columns=["query_id", "split", "anchor", "positive_chunk_id", "origin"])   # no feedback
    build_index(dg.build_asset_context(), chunks, r["embedder"], r["lancedb"], "chunks_finetuned",
                candidate["model_path"])   # as finetuned_index does for each new model
    out = promotion_gate(dg.build_asset_context(), chunks=chunks, query_splits=splits, human_queries=human,
                         training_triplets=triplets,
                         finetuned_biencoder=candidate, baseline_index={"table": BASELINE_TABLE},
                         finetuned_index={"table": "chunks_finetuned"}, config=PromotionConfig(resamples=2000),
                         **r)
    return out.value


def test_a_better_model_is_promoted_and_a_deliberately_worse_one_is_not(world):
    r = world[-1]
    better = trained_version(world, shift=0)
    first = gate(world, better)
    assert first["decision"] == "promoted", first["reason"]
    assert first["gate"]["ci95"][0] > 0 and "the base model" in first["reason"]
    assert r["mlflow"].alias_version(NAME).version == better["model_version"]
    assert r["mlflow"].version_tags(NAME, better["model_version"])["flywheel.gate"] == "promoted"

    worse = trained_version(world, shift=1)
    second = gate(world, worse)
    assert second["decision"] == "rejected"
    assert second["reason"].startswith("not promoted") and "lower bound is below" in second["reason"]
    assert f"version {better['model_version']}" in second["reason"]          # it was compared with the champion
    assert second["gate"]["delta_ndcg@10"] < 0
    assert r["mlflow"].alias_version(NAME).version == better["model_version"]   # the alias did not move
    tags = r["mlflow"].version_tags(NAME, worse["model_version"])
    assert tags["flywheel.gate"] == "rejected" and tags["flywheel.gate_reason"] == second["reason"]
    assert second["champion"]["model_path"] == better["model_path"]

    again = gate(world, worse)   # a rerun with no new model decides nothing twice
    assert again["decision"] == "already_decided" and "not promoted" in again["reason"]

    # what serves is the champion, not the latest model
    _, chunks, *_ = world
    served = serving_index(dg.build_asset_context(), chunks=chunks, promotion_gate=second,
                           embedder=r["embedder"], lancedb=r["lancedb"]).value
    assert served["model"] == better["model_path"] and served["champion"]["version"] == str(better["model_version"])

    # a version aliased by hand past the gate does not pass the blocking check
    assert champion_is_vetted(promotion_gate=second, mlflow=r["mlflow"]).passed
    r["mlflow"].set_alias(NAME, worse["model_version"])
    tampered = {**second, "champion": {"version": worse["model_version"], "what": "version 2"}}
    check = champion_is_vetted(promotion_gate=tampered, mlflow=r["mlflow"])
    assert not check.passed and "aliased by hand" in check.description
