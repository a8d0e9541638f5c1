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
from assets.training import BIENCODER_KIND, TrainConfig, finetuned_biencoder
from assets.training.biencoder import TrainSettings, train_biencoder
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource, RegistryUnavailable
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


def registered(world, model_path: str, name: str) -> dict:
    """A saved model logged as a new version of `name` (no training), in the shape of finetuned_biencoder."""
    import mlflow as mlflow_api
    from sentence_transformers import SentenceTransformer

    r = world[-1]
    with r["mlflow"].start_run("tiny", run_name="copy") as run:
        info = mlflow_api.sentence_transformers.log_model(
            SentenceTransformer(model_path, device="cpu"), name="model", registered_model_name=name,
            pip_requirements=["sentence-transformers"])   # listed, not inferred: inferring loads the model again
    return {"model_path": model_path, "registered_model": name, "model_version": info.registered_model_version,
            "mlflow_run_id": run.info.run_id, "mlflow_run_url": ""}


def gate(world, candidate: dict, config: PromotionConfig | None = None, query_adapter: dict | None = None,
         **resources) -> dict:
    _, chunks, human, splits, _, r = world
    r = {**r, **resources}
    triplets = pd.DataFrame(columns=["query_id", "split", "anchor", "positive_chunk_id", "origin"])   # no feedback
    build_index(dg.build_asset_context(), chunks, r["embedder"], r["lancedb"], "chunks_finetuned",
                candidate["model_path"])   # as finetuned_index does for each new model
    out = promotion_gate(dg.build_asset_context(), chunks=chunks, query_splits=splits, human_queries=human,
                         training_triplets=triplets,
                         finetuned_biencoder=candidate, query_adapter=query_adapter or {"enabled": False},
                         baseline_index={"table": BASELINE_TABLE},
                         finetuned_index={"table": "chunks_finetuned"}, config=config or PromotionConfig(resamples=2000),
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



def outage(monkeypatch, failures: int | None = None):
    """The registry answers the next `failures` alias reads (all, if None) with a 503, whichever call is made."""
    import mlflow as mlflow_api
    from mlflow.exceptions import RestException

    error = RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the registry database is restarting"})
    failed = []
    for method in ("get_registered_model", "get_model_version_by_alias"):
        real = getattr(mlflow_api.MlflowClient, method)

        def read(self, *args, _real=real, **kwargs):
            if failures is None or len(failed) < failures:
                failed.append(args)
                raise error
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(mlflow_api.MlflowClient, method, read)
    return failed


def champion_and_candidate(world, name: str) -> tuple[dict, dict]:
    """Version 1 of `name` promoted by the gate and aliased, version 2 a new candidate (both the base weights)."""
    r, base = world[-1], world[-1]["embedder"].base_model_path()
    champion = registered(world, base, name)
    r["mlflow"].tag_version(name, champion["model_version"], {"flywheel.gate": "promoted"})
    r["mlflow"].set_alias(name, champion["model_version"])
    return champion, registered(world, base, name)


def test_a_registry_that_cannot_say_who_the_champion_is_stops_the_gate_before_it_changes_anything(world, monkeypatch):
    r = world[-1]
    name = "flywheel-down-biencoder"   # its own registered model: no other test's alias
    champion, candidate = champion_and_candidate(world, name)
    outage(monkeypatch)
    flaky = MLflowResource(tracking_uri=r["mlflow"].tracking_uri, registry_attempts=2, registry_backoff_s=0.0)
    with pytest.raises(RegistryUnavailable, match=f"which version of '{name}' carries the alias 'champion'.*"
                                                  "TEMPORARILY_UNAVAILABLE.*Nothing was changed"):
        gate(world, candidate, mlflow=flaky)
    monkeypatch.undo()
    assert r["mlflow"].alias_version(name).version == champion["model_version"]        # the alias did not move
    assert "flywheel.gate" not in r["mlflow"].version_tags(name, candidate["model_version"])   # nothing decided


def test_a_registry_error_that_passes_is_retried_and_the_candidate_meets_the_real_champion(world, monkeypatch):
    r = world[-1]
    name = "flywheel-blip-biencoder"
    champion, candidate = champion_and_candidate(world, name)
    assert len(outage(monkeypatch, failures=1)) == 0
    decided = gate(world, candidate, mlflow=MLflowResource(tracking_uri=r["mlflow"].tracking_uri, registry_backoff_s=0.0))
    # not "against the base model": a passing 503 used to read as "no version promoted yet"
    assert f"(against the champion, version {champion['model_version']})" in decided["reason"], decided["reason"]
    assert decided["previous_champion"]["version"] == str(champion["model_version"])
    assert decided["champion"]["version"] == str(champion["model_version"])


def trained_in_corpus(world, corpus: str, mlflow: MLflowResource | None = None, min_change: float = 0.0) -> dict:
    """finetuned_biencoder on the tiny corpus named `corpus`, in its own home (2 steps: a version, not a good one)."""
    home, chunks, _, _, queries, r = world
    texts = list(chunks["text"])
    triplets = pd.DataFrame([{"query_id": qid, "anchor": q, "positive": texts[i], "negative": texts[(i + 7) % len(texts)],
                              "positive_chunk_id": chunks["chunk_id"][i], "split": "train", "origin": "synthetic"}
                             for i, (qid, q) in enumerate(queries.items())])
    corpus_chunks = chunks.copy()
    corpus_chunks.attrs["corpus_name"] = corpus
    config = TrainConfig(max_steps=2, batch_size=8, evals_per_run=1, min_change_to_retrain=min_change)
    return finetuned_biencoder(dg.build_asset_context(), training_triplets=triplets, chunks=corpus_chunks,
                               embedder=r["embedder"], mlflow=mlflow or r["mlflow"], config=config,
                               workspace=WorkspaceResource(home=str(home / corpus))).value


def test_two_corpora_on_one_registry_have_two_champions(world):
    """Corpus A and corpus B tracked on one MLflow server, each trained by finetuned_biencoder in its own home:
    promoting A's candidate must not move B's champion (one global registered model name shared one alias)."""
    r = world[-1]
    b = trained_in_corpus(world, "corpus-b")
    assert b["registered_model"] == r["mlflow"].model_name("corpus-b", BIENCODER_KIND) == "flywheel-corpus-b-biencoder"
    r["mlflow"].tag_version(b["registered_model"], b["model_version"], {"flywheel.gate": "promoted"})
    r["mlflow"].set_alias(b["registered_model"], b["model_version"])   # B's champion

    a = trained_in_corpus(world, "corpus-a")
    assert a["registered_model"] == "flywheel-corpus-a-biencoder"
    decided = gate(world, a, config=PromotionConfig(resamples=200, min_gain=-1.0, alpha=1.1, guard_tolerance=1.0))   # promote
    assert decided["decision"] == "promoted" and "no version promoted yet" in decided["reason"]   # A had no champion
    assert r["mlflow"].alias_version(a["registered_model"]).version == a["model_version"]
    assert r["mlflow"].alias_version(b["registered_model"]).version == b["model_version"]   # B's did not move
    b_gate = {"registered_model": b["registered_model"], "decision": "promoted",
              "champion": {"version": b["model_version"], "what": f"version {b['model_version']}"}}
    assert champion_is_vetted(promotion_gate=b_gate, mlflow=r["mlflow"]).passed   # B still serves its vetted one


def test_a_kept_model_registered_under_another_name_is_retrained_not_reused(world):
    r = world[-1]
    first = trained_in_corpus(world, "corpus-c", min_change=0.05)
    again = trained_in_corpus(world, "corpus-c", min_change=0.05)   # nothing changed: the model is kept
    assert again["retrained"] is False and again["registered_model"] == first["registered_model"]
    renamed = MLflowResource(tracking_uri=r["mlflow"].tracking_uri, registry_project="corpus-c-renamed")
    moved = trained_in_corpus(world, "corpus-c", mlflow=renamed, min_change=0.05)
    assert moved["retrained"] is True and "registered model name changed" in moved["retrain_reason"]
    assert moved["registered_model"] == "flywheel-corpus-c-renamed-biencoder" and str(moved["model_version"]) == "1"


def test_a_champion_trained_elsewhere_is_downloaded_from_the_registry_once(tmp_path, tiny_model_path, monkeypatch):
    """The recorded path of a version is another machine's: the champion's weights come from its registered
    artifacts, into the workspace, once; they encode exactly as the model that was registered."""
    import mlflow as mlflow_api
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from assets.promotion import PATH_TAG, champion_model_path

    r = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    workspace = WorkspaceResource(home=str(tmp_path / "here"))
    model = SentenceTransformer(tiny_model_path, device="cpu")
    name = r.model_name("docs", "biencoder")
    with r.start_run("docs", "elsewhere"):
        mlflow_api.sentence_transformers.log_model(model, name="model", registered_model_name=name)
    r.tag_version(name, "1", {PATH_TAG: "/another/machine/models/biencoder/run/model"})
    version = r.client().get_model_version(name, "1")
    path = champion_model_path(version, r, workspace)
    assert path.startswith(str(workspace.models_dir / "champion"))
    text = ["pressure distribution on a swept wing"]
    np.testing.assert_allclose(SentenceTransformer(path, device="cpu").encode(text), model.encode(text), atol=1e-6)

    def no_second_download(*args, **kwargs):
        raise AssertionError("downloaded twice")

    monkeypatch.setattr(MLflowResource, "download_version", no_second_download)
    assert champion_model_path(version, r, workspace) == path                 # the copy in the workspace is reused
    r.tag_version(name, "1", {PATH_TAG: path})
    assert champion_model_path(r.client().get_model_version(name, "1"), r, workspace) == path   # recorded and here


def test_a_registered_version_without_a_sentence_transformer_is_a_clear_error(tmp_path):
    import mlflow as mlflow_api

    from assets.promotion import champion_model_path

    r = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    name = r.model_name("docs", "biencoder")
    with r.start_run("docs", "not-a-model") as run:
        (tmp_path / "notes.txt").write_text("no weights here")
        mlflow_api.log_artifact(str(tmp_path / "notes.txt"), artifact_path="model")
    r.client().create_registered_model(name)
    r.client().create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    with pytest.raises(FileNotFoundError, match="has no sentence-transformers model"):
        champion_model_path(r.client().get_model_version(name, "1"), r, WorkspaceResource(home=str(tmp_path / "h")))


def registered_adapter(world, shift: int, name: str) -> dict:
    """A linear query adapter fitted by least squares to map each human query's base vector onto the vector of
    the document `shift` places on (0: its own, better than the base model; 1: the wrong one, worse), registered
    as a version of `name` the way query_adapter registers one; in the shape of query_adapter's output."""
    import mlflow as mlflow_api
    import numpy as np

    from assets.training.adapter import AdapterWeights, save_adapter
    from assets.training.query_adapter import log_adapter_model

    home, chunks, _, _, queries, r = world
    q = r["embedder"].encode(list(queries.values()), None)
    d = np.roll(r["embedder"].encode(list(chunks["text"]), None), -shift, axis=0)
    w = np.linalg.lstsq(q, d, rcond=None)[0].T
    path = str(save_adapter(AdapterWeights("linear", {"W": w.astype("float32"), "b": np.zeros(len(w), "float32")}),
                            home / "adapters" / name / f"shift{shift}.npz"))
    with r["mlflow"].start_run("tiny", run_name=f"adapter-shift{shift}"):
        version = log_adapter_model(mlflow_api, path, name)
    return {"enabled": True, "registered_model": name, "model_version": version, "weights_path": path,
            "model_path": path, "base_model": r["embedder"].base_model_path()}


def test_the_query_adapter_is_a_gate_candidate_and_what_serves_applies_it(world):
    import numpy as np

    from assets.promotion import serving_query_vectors
    from assets.training.adapter import apply_adapter, load_adapter

    home, chunks, _, _, queries, r = world
    name, adapter_name = "flywheel-adapted-biencoder", "flywheel-adapted-adapter"   # no other test's aliases
    base = r["embedder"].base_model_path()
    same = registered(world, base, name)   # the base weights again: no gain, so the bi-encoder is rejected
    better = registered_adapter(world, shift=0, name=adapter_name)
    first = gate(world, same, query_adapter=better)
    assert first["decision"] == "rejected"
    decided = first["adapter"]
    assert decided["decision"] == "promoted", decided["reason"]
    assert decided["gate"]["ci95"][0] > 0 and "the base model + adapter version" in decided["reason"]
    assert "(no version promoted yet)" in decided["reason"]                    # it met the base model alone
    assert str(r["mlflow"].alias_version(adapter_name).version) == str(better["model_version"])
    assert r["mlflow"].version_tags(adapter_name, better["model_version"])["flywheel.gate"] == "promoted"
    assert first["champion"]["adapter"]["version"] == str(better["model_version"])
    assert "with query adapter version" in first["champion"]["what"]
    assert champion_is_vetted(promotion_gate=first, mlflow=r["mlflow"]).passed

    # what serves: the base model's vectors, searched with the adapted query vectors
    served = serving_index(dg.build_asset_context(), chunks=chunks, promotion_gate=first,
                           embedder=r["embedder"], lancedb=r["lancedb"]).value
    assert served["adapter"]["version"] == str(better["model_version"]) and served["champion"]["model_path"] is None
    texts = list(queries.values())[:3]
    expected = apply_adapter(load_adapter(better["weights_path"]), r["embedder"].encode(texts, None))
    np.testing.assert_allclose(serving_query_vectors(texts, served, r["embedder"]), expected, atol=1e-6)
    assert not np.allclose(expected, r["embedder"].encode(texts, None), atol=1e-3)   # the adapter does change them

    # a worse adapter meets "base + the champion adapter" and is refused; the alias stays
    worse = registered_adapter(world, shift=1, name=adapter_name)
    second = gate(world, same, query_adapter=worse)
    assert second["adapter"]["decision"] == "rejected" and second["adapter"]["gate"]["delta_ndcg@10"] < 0
    assert f"with query adapter version {better['model_version']}" in second["adapter"]["reason"]
    assert str(r["mlflow"].alias_version(adapter_name).version) == str(better["model_version"])
    assert gate(world, same, query_adapter=worse)["adapter"]["decision"] == "already_decided"

    # an adapter aliased by hand past the gate does not pass the blocking check
    r["mlflow"].set_alias(adapter_name, worse["model_version"])
    tampered = {**second, "champion": {**second["champion"], "adapter": {**second["champion"]["adapter"],
                                                                         "version": str(worse["model_version"])}}}
    check = champion_is_vetted(promotion_gate=tampered, mlflow=r["mlflow"])
    assert not check.passed and "query adapter version" in check.description and "aliased by hand" in check.description
    r["mlflow"].set_alias(adapter_name, better["model_version"])

    # a bi-encoder promoted over "base + adapter" takes the alias off the adapter: its vectors replace the base ones
    newer = registered(world, base, name)
    forced = PromotionConfig(resamples=200, min_gain=-1.0, alpha=1.1, guard_tolerance=1.0)
    third = gate(world, newer, config=forced, query_adapter=better)
    assert third["decision"] == "promoted" and f"with query adapter version {better['model_version']}" in third["reason"]
    assert third["adapter_retired"] == str(better["model_version"])
    assert r["mlflow"].alias_version(adapter_name) is None
    assert third["champion"]["adapter"] is None and third["champion"]["version"] == str(newer["model_version"])
    fresh = registered_adapter(world, shift=0, name=adapter_name)
    fourth = gate(world, newer, query_adapter=fresh)
    assert fourth["adapter"]["decision"] == "not_decided" and "fine-tuned bi-encoder version" in fourth["adapter"]["reason"]
    assert "flywheel.gate" not in r["mlflow"].version_tags(adapter_name, fresh["model_version"])
