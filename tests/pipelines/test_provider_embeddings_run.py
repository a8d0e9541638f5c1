"""Tier 3 with a provider's embeddings: the whole graph on the tiny corpus, its vectors from a fake
/v1/embeddings (tests/fake_embeddings.py), run twice on one home. What cannot be fine-tuned is skipped with
its reason; the base, adapter, expansion and fusion rows are evaluated; the rerun pays for no vector."""
import json
import os

import dagster as dg
import numpy as np
import pytest

from pipelines.definitions import build_definitions
from tests.fake_embeddings import FakeEmbeddingsEndpoint, fake_vector
from tests.pipelines.test_definitions import TINY_RUN_CONFIG

KEY = "sk-providerembedkey0123456789"
ENV = {"FLYWHEEL_EMBED_BASE_URL": None, "FLYWHEEL_EMBED_MODEL": "fake-embed", "FLYWHEEL_EMBED_API_KEY": KEY}


@pytest.fixture(scope="module")
def provider_run(tmp_path_factory, tiny_beir, tiny_feedback_log):
    from tests.conftest import fake_llm_class

    endpoint = FakeEmbeddingsEndpoint(dim=64)
    endpoint.fail_next(["429", "500"])   # the first two requests fail, transiently
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update({**ENV, "FLYWHEEL_EMBED_BASE_URL": endpoint.url})   # the UI's path: dg.EnvVar values
    home = tmp_path_factory.mktemp("provider_home")
    ops = {**TINY_RUN_CONFIG["ops"], "corpus": {"config": {"path": str(tiny_beir)}},
           "feedback": {"config": {"path": str(tiny_feedback_log)}},
           "evaluation_report": {"config": {"offtheshelf_first_stages": ["hybrid_base"]}}}   # no hybrid_finetuned
    instance = dg.DagsterInstance.ephemeral()
    try:
        runs, requests = [], []
        for _ in range(2):   # a fresh Definitions (fresh resources) per run, as a new process would have
            defs = build_definitions(home, llm=fake_llm_class()(cache_path=str(home / "llm_cache.sqlite")))
            runs.append(defs.resolve_job_def("flywheel_job").execute_in_process(run_config={"ops": ops},
                                                                                instance=instance))
            requests.append(endpoint.requests)
        yield home, runs, requests, endpoint
    finally:
        endpoint.close()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def metadata(result, asset: str) -> dict:
    [m] = [e.materialization.metadata for e in result.get_asset_materialization_events()
           if e.asset_key.to_user_string() == asset]
    return {k: getattr(v, "value", v) for k, v in m.items()}


def test_both_runs_complete_with_every_check_passing(provider_run):
    home, runs, _, endpoint = provider_run
    for result in runs:
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} >= {"no_document_leakage", "champion_is_vetted",
                                                  "no_test_query_in_expansion"} and all(c.passed for c in checks)
    assert endpoint.served["429"] == 1 and endpoint.served["500"] == 1   # retried, not fatal


def test_the_rerun_calls_the_endpoint_zero_times_and_no_vector_was_paid_for_twice(provider_run):
    home, runs, requests, endpoint = provider_run
    first, second = requests
    assert first > 0 and second == first and endpoint.paid_twice() == []
    assert metadata(runs[0], "baseline_index")["embed_requests"] > 0
    rerun = metadata(runs[1], "baseline_index")
    assert rerun["embed_requests"] == 0 and rerun["chunks_embedded"] == 0
    assert (home / "embedding_cache.sqlite").exists()


def test_the_fine_tunes_are_skipped_with_the_reason_and_the_adapter_trains_over_the_provider_vectors(provider_run):
    home, runs, _, _ = provider_run
    result = runs[0]
    for asset in ("finetuned_biencoder", "finetuned_crossencoder", "distilled_biencoder"):   # distill is on here
        out = result.output_for_node(asset)
        assert out["enabled"] is False and out["model_path"] is None
        assert "not trained" in out["skipped"] and "cannot be fine-tuned" in out["skipped"]
        assert metadata(result, asset)["skipped"] == out["skipped"]
    assert "set base_model" in result.output_for_node("finetuned_crossencoder")["skipped"]
    assert result.output_for_node("learning_curve").empty
    assert "cannot be fine-tuned" in metadata(result, "learning_curve")["skipped"]
    assert result.output_for_node("finetuned_index")["enabled"] is False
    assert "MiniLM" in metadata(result, "chunks")["tokenizer"]
    adapter = result.output_for_node("query_adapter")
    assert adapter["enabled"] and adapter["steps"] > 0 and adapter["dim"] == 64
    assert adapter["base_model"] == "openai:fake-embed"
    base = result.output_for_node("baseline_index")
    assert base["model"] == "openai:fake-embed" and base["dim"] == 64
    import lancedb

    table = lancedb.connect(str(home / "lancedb")).open_table(base["table"]).to_pandas()
    row = table.iloc[0]
    want = fake_vector(row["text"], 64)
    assert np.allclose(np.asarray(row["vector"]), want / np.linalg.norm(want), atol=1e-5)   # the provider's vector
    stats = json.loads((home / "reports" / "run_stats.json").read_text())
    assert stats["retrained"] is False and "cannot be fine-tuned" in stats["retrain_reason"]


def test_the_evaluation_has_the_base_adapter_expanded_and_fusion_rows_and_says_what_was_not_trained(provider_run):
    home, runs, _, _ = provider_run
    report = json.loads((home / "reports" / "evaluation.json").read_text())
    rows = {"bm25", "dense_base", "hybrid_base", "dense_adapter", "hybrid_adapter", "bm25_expanded",
            "hybrid_expanded", "hybrid_learned", "hybrid_base+rerank_offtheshelf"}
    kinds = set()
    for qs in report["query_sets"].values():
        kinds.add(qs["kind"])
        assert set(qs["retrievers"]) == rows
        adapter = qs["retrievers"]["dense_adapter"]
        assert adapter["baseline"] == "dense_base" and adapter["n_paired"] == qs["n_queries"]
    assert kinds == {"synthetic", "human"}
    [human] = [qs for qs in report["query_sets"].values() if qs["kind"] == "human"]
    assert human["retrievers"]["dense_base"]["recall@10"] > 0.5   # the hashed bag of words finds the topic
    assert len(report["not_trained"]) == 3 and all("cannot be fine-tuned" in r for r in report["not_trained"])
    assert report["reranker_verdict"]["ship"] is False
    md = (home / "reports" / "evaluation.md").read_text()
    assert "## Not trained" in md and "the bi-encoder not trained" in md
    assert "cannot be fine-tuned" in metadata(runs[0], "evaluation_report")["not_trained"]


def test_the_gate_keeps_the_base_and_serving_and_monitoring_use_the_provider(provider_run):
    home, runs, _, _ = provider_run
    result = runs[0]
    gate = result.output_for_node("promotion_gate")
    assert gate["decision"] == "no_candidate" and gate["promote"] is False
    assert gate["reason"].startswith("not decided: the bi-encoder not trained") and "base model serves" in gate["reason"]
    assert gate["champion"]["version"] is None and gate["champion"]["base_model"] == "openai:fake-embed"
    served = result.output_for_node("serving_index")
    assert served["champion"]["model_path"] is None and served["model"] == "openai:fake-embed" and served["n_rows"] > 0
    assert metadata(result, "serving_index")["chunks_embedded"] == 0   # the base table's vectors, reused
    # the adapter over the provider's vectors is the one candidate, decided by the gate's rule against the base
    decided = gate["adapter"]
    assert decided["decision"] in ("promoted", "rejected") and "the base model + adapter version" in decided["reason"]
    assert decided["gate"]["n"] > 0 and (served["adapter"] is not None) == decided["promote"]
    queue = result.output_for_node("query_review")
    assert len(queue) > 0 and queue["top_cosine"].notna().all()
    assert metadata(result, "query_review")["reranker"].startswith("none")


def test_the_key_is_in_no_file_of_the_home(provider_run):
    home, _, _, endpoint = provider_run
    assert endpoint.auth and set(endpoint.auth) == {f"Bearer {KEY}"}   # the key reached the endpoint (an EnvVar)
    for path in home.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
