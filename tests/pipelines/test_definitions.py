"""Tier 3: the Definitions load, and the whole graph materializes in-process on the tiny corpus and model."""
import json
from pathlib import Path

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from resources.embedder import EmbedderResource
from resources.tracking import registered_model_name

TINY_RUN_CONFIG = {
    "ops": {
        "synthetic_queries": {"config": {"queries_per_chunk": 2}},
        "relevance_labels": {"config": {"max_queries": 40, "candidates_per_query": 2}},
        "finetuned_biencoder": {"config": {"max_steps": 3, "batch_size": 8, "evals_per_run": 1}},
        "distilled_biencoder": {"config": {"enabled": True, "max_steps": 2, "batch_size": 8, "evals_per_run": 1}},
        "finetuned_crossencoder": {"config": {"max_steps": 3, "batch_size": 8, "evals_per_run": 1, "max_length": 64}},
        "learning_curve": {"config": {"sizes": [4, 8], "logged_sizes": [3, 6], "seeds": [0, 1], "batch_size": 8}},
        "query_adapter": {"config": {"batch_size": 8, "max_epochs": 10}},
        "expanded_index": {"config": {"drop_lowest_fraction": 0.25}},   # doc2query--'s filter too
        "chunker_baselines": {"config": {"chunkers": ["shipped", "tokens-16-4", "sentences-24"]}},   # the tiny
        #   documents (~45 tokens) are one shipped chunk each: these budgets cut them otherwise
    }
}


def test_definitions_load_with_job_schedule_and_checks(tmp_path):
    defs = build_definitions(tmp_path)
    job = defs.resolve_job_def("flywheel_job")
    assert job.name == "flywheel_job"
    assert defs.resolve_schedule_def("flywheel_job_schedule").cron_schedule == "0 2 * * *"
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"documents", "human_queries", "chunks", "baseline_index", "synthetic_queries", "relevance_labels",
            "query_splits", "training_triplets", "finetuned_biencoder", "finetuned_crossencoder",
            "finetuned_index", "judge_agreement", "evaluation_report", "learning_curve", "query_adapter",
            "expanded_index", "fusion_weights", "chunker_baselines", "document_summaries", "summary_index"} <= keys
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert {"no_document_leakage", "triplets_stay_in_split", "champion_is_vetted", "no_test_query_in_training",
            "no_test_query_in_expansion"} <= checks
    assert {"promotion_gate", "serving_index"} <= keys


def test_default_llm_is_the_local_model_not_a_fake(tmp_path):
    from resources.llm import LocalGGUFLLMResource

    defs = build_definitions(tmp_path)
    assert isinstance(defs.resources["llm"], LocalGGUFLLMResource)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_beir, tiny_model_path, tiny_feedback_log):
    from tests.conftest import fake_llm_class

    home = tmp_path_factory.mktemp("home")
    defs = build_definitions(home, llm=fake_llm_class()(), embedder=EmbedderResource(model=tiny_model_path))
    config = {"ops": {**TINY_RUN_CONFIG["ops"], "corpus": {"config": {"path": str(tiny_beir)}},
                      "feedback": {"config": {"path": str(tiny_feedback_log)}}}}
    result = defs.resolve_job_def("flywheel_job").execute_in_process(run_config=config,
                                                                     instance=dg.DagsterInstance.ephemeral())
    return home, result


def test_whole_graph_materializes_and_every_check_passes(tiny_run):
    home, result = tiny_run
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {"no_document_leakage", "triplets_stay_in_split", "champion_is_vetted",
                                              "no_test_query_in_training", "no_test_query_in_expansion"}
    assert all(c.passed for c in checks)


def test_report_has_every_retriever_on_synthetic_and_human_sets(tiny_run):
    home, result = tiny_run
    report = json.loads((home / "reports" / "evaluation.json").read_text())
    assert report == result.output_for_node("evaluation_report")
    sets = report["query_sets"]
    assert "synthetic/test" in sets
    assert [n for n in sets if n.startswith("human/")] == [f"human/{home_set}" for home_set in [_human_name(sets)]]
    human = [s for s in sets.values() if s["kind"] == "human"]
    assert len(human) == 1 and human[0]["n_queries"] == 6
    first = {"bm25", "dense_base", "hybrid_base", "dense_finetuned", "hybrid_finetuned"}
    for qs in sets.values():
        assert set(qs["retrievers"]) == first | {f"{s}+rerank_finetuned" for s in first} | {
            "hybrid_finetuned+rerank_offtheshelf", "dense_distilled", "hybrid_distilled", "dense_adapter",
            "hybrid_adapter", "bm25_expanded", "hybrid_expanded", "hybrid_learned"}
        upr = qs["retrievers"]["hybrid_finetuned+rerank_offtheshelf"]
        assert upr["rerank_depth"] == 20 and upr["rerank_timed_queries"] == qs["n_queries"]
        assert 0 < upr["rerank_ms_p50"] <= upr["rerank_ms_p95"]
        for metrics in qs["retrievers"].values():
            for m in ("ndcg@10", "mrr@10", "recall@10", "recall@100", "accuracy@1", "accuracy@3"):
                assert 0.0 <= metrics[m] <= 1.0
    # BM25 on the tiny corpus's keyword-laden human queries is far from random
    assert human[0]["retrievers"]["bm25"]["recall@10"] > 0.5
    assert (home / "reports" / "evaluation.md").read_text().count("\n") >= 10
    from tests.conftest import tiny_documents

    assert report["input"] == {"documents_read": len(tiny_documents()), "skipped": {}, "examples": {},
                               "decoded_as": {}, "qrels_dropped": {}}
    assert "## What reading the corpus skipped" in (home / "reports" / "evaluation.md").read_text()
    assert set(report["distillation"]) == set(sets)
    assert {v["better"] for v in report["distillation"].values()} <= {"distilled", "contrastive", "tie"}
    [(name, judge)] = report["judge_agreement"].items()
    assert name == _human_name(sets) and judge["queries"] == 6 and judge["pairs"] >= 6
    assert judge["roc_auc"] is not None and judge["threshold"] is not None


def test_report_compares_each_retriever_with_its_baseline_and_breaks_the_sets_down(tiny_run):
    import pandas as pd

    home, result = tiny_run
    report = json.loads((home / "reports" / "evaluation.json").read_text())
    for set_name, qs in report["query_sets"].items():
        tuned = qs["retrievers"]["dense_finetuned"]
        assert tuned["baseline"] == "dense_base" and tuned["n_paired"] == qs["n_queries"]
        lo, hi = tuned["ci95"]
        assert lo <= tuned["delta_ndcg@10"] <= hi and 0.0 <= tuned["p_value"] <= 1.0
        assert tuned["delta_ndcg@10"] == pytest.approx(
            tuned["ndcg@10"] - qs["retrievers"]["dense_base"]["ndcg@10"], abs=1e-5)
        assert qs["retrievers"]["hybrid_finetuned+rerank_finetuned"]["baseline"] == "hybrid_finetuned"
        assert "baseline" not in qs["retrievers"]["bm25"]
        bd = qs["breakdown"]
        expected_styles = {"human"} if qs["kind"] == "human" else {"question", "keywords", "claim"}
        assert set(bd["by_style"]) <= expected_styles and bd["by_style"]
        assert sum(g["n_queries"] for g in bd["by_style"].values()) == qs["n_queries"]
        assert sum(g["n_queries"] for g in bd["by_doc_length"].values()) == qs["n_queries"]
        assert set(bd["by_doc_length"]) <= {"short", "medium", "long"}
        assert set(bd["by_style"][next(iter(bd["by_style"]))]["ndcg@10"]) == set(qs["retrievers"])
        plot = home / "reports" / report["plots"][set_name]
        assert plot.parent.name == "plots" and plot.read_bytes()[:4] == b"\x89PNG"
    edges = report["doc_length_buckets"]["edges"]
    assert report["doc_length_buckets"]["unit"] == "words" and edges[0] <= edges[1]
    per_query = pd.read_parquet(home / "reports" / "per_query.parquet")
    assert per_query[["style", "doc_length_bucket"]].notna().all().all()
    assert set(per_query.loc[per_query["query_set"].str.startswith("human/"), "style"]) == {"human"}
    md = (home / "reports" / "evaluation.md").read_text()
    assert "| dense_finetuned | dense_base |" in md and "by query style, document length and feedback" in md
    [materialization] = [m for m in result.get_asset_materialization_events()
                         if m.asset_key.to_user_string() == "evaluation_report"]
    metadata = materialization.materialization.metadata
    assert {f"plot/{n}" for n in report["query_sets"]} <= set(metadata)
    assert "data:image/png;base64," in metadata["plot/synthetic/test"].value
    assert "dense_finetuned" in metadata["comparisons"].value


def _human_name(sets) -> str:
    names = [n.removeprefix("human/") for n in sets if n.startswith("human/")]
    assert len(names) == 1 and names[0].startswith("tiny_beir") and names[0].endswith("/test")
    return names[0]


def test_the_report_has_the_chunkers_section_with_the_shipped_rows_equal_to_the_main_table(tiny_run):
    from assets.common import md_text

    home, result = tiny_run
    report = json.loads((home / "reports" / "evaluation.json").read_text())
    [human] = [n for n, qs in report["query_sets"].items() if qs["kind"] == "human"]
    section = report["chunkers"]
    assert list(section) == ["tokens-256-32", "tokens-16-4", "sentences-24"]
    assert report["chunker_baselines"]["shipped"] == "tokens-256-32" and report["chunker_baselines"]["note"] == ""
    main = report["query_sets"][human]["retrievers"]
    for name, sets in section.items():
        assert list(sets) == [human] and list(sets[human]) == ["bm25", "dense_base", "hybrid_base"]
        for row, m in sets[human].items():
            if name == "tokens-256-32":          # the shipped chunker is scored on the baseline table itself
                assert m == {k: v for k, v in main[row].items() if k in m}
                assert "baseline" not in m and m["ndcg@10"] == main[row]["ndcg@10"]
            else:
                assert m["baseline"] == "tokens-256-32" and m["n_paired"] == 6
                assert m["ci95"][0] <= m["delta_ndcg@10"] <= m["ci95"][1]
    stats = report["chunker_baselines"]["stats"]
    assert stats["tokens-256-32"]["chunks_embedded"] == 0 and stats["tokens-16-4"]["chunks_embedded"] > 0
    md = (home / "reports" / "evaluation.md").read_text()
    assert "## Chunkers: is chunking the problem?" in md and f"| {md_text(human)} | sentences-24 |" in md
    run_stats = json.loads((home / "reports" / "run_stats.json").read_text())
    embedded = sum(s["chunks_embedded"] for s in stats.values())
    assert run_stats["chunks_embedded_by_asset"]["chunker_baselines"] == embedded


def test_training_run_is_in_mlflow_with_the_model_registered(tiny_run):
    import mlflow

    home, result = tiny_run
    model = result.output_for_node("finetuned_biencoder")
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    run = client.get_run(model["mlflow_run_id"])
    assert run.data.tags["corpus_hash"] and run.data.tags["code_version"]
    assert run.data.params["loss"] == "MultipleNegativesRankingLoss"
    distilled = result.output_for_node("distilled_biencoder")
    assert client.get_run(distilled["mlflow_run_id"]).data.params["loss"] == "MarginMSELoss"
    assert any(k.startswith("synthetic.test.dense_finetuned") for k in run.data.metrics)
    assert "synthetic.test.dense_finetuned.delta_ndcg_at_10" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} >= {"plots/synthetic_test.png"}
    assert "loss" in run.data.metrics or any("loss" in k for k in run.data.metrics)
    corpus = result.output_for_node("evaluation_report")["corpus"]
    assert model["registered_model"] == registered_model_name("flywheel", corpus, "biencoder") == f"flywheel-{corpus}-biencoder"
    versions = client.search_model_versions(f"name='{model['registered_model']}'")   # this corpus's own model
    assert [v.run_id for v in versions] == [model["mlflow_run_id"]]
    from importlib.metadata import version as installed

    requirements = Path(client.download_artifacts(model["mlflow_run_id"], "model/requirements.txt")).read_text()
    assert requirements.split() == [f"mlflow=={installed('mlflow')}"] + [     # listed and pinned, not inferred
        f"{name}=={installed(name).split('+')[0]}" for name in ("sentence-transformers", "transformers", "torch")]


def test_learning_curve_has_every_size_and_seed_and_is_in_the_training_run(tiny_run):
    import mlflow
    import pandas as pd

    home, result = tiny_run
    reports = home / "reports"
    points = pd.read_parquet(reports / "learning_curve.parquet")
    assert points.equals(result.output_for_node("learning_curve").astype(points.dtypes.to_dict()))
    assert (reports / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    sets = set(points["query_set"])
    assert "synthetic/validation" in sets and any(s.startswith("human/") for s in sets)
    for _, rows in points.groupby("query_set"):
        subsets = rows[rows["kind"] == "subset"]
        assert sorted(zip(subsets["size"], subsets["seed"])) == [(3, 0), (3, 1), (6, 0), (6, 1)]   # logged queries
        assert (rows["kind"] == "baseline").sum() == 1 and (rows["kind"] == "full").sum() == 1
    run_id = result.output_for_node("finetuned_biencoder")["mlflow_run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert {"learning_curve.png", "learning_curve.parquet"} <= {a.path for a in client.list_artifacts(run_id)}
    assert "learning_curve.synthetic.validation.ndcg_at_10" in client.get_run(run_id).data.metrics


def test_reranker_is_tracked_registered_and_served_from_the_registry(tiny_run):
    import mlflow
    import pandas as pd

    home, result = tiny_run
    reranker = result.output_for_node("finetuned_crossencoder")
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    run = client.get_run(reranker["mlflow_run_id"])
    assert run.data.tags["model_kind"] == "cross-encoder"
    assert "eval_validation_ndcg_at_10" in run.data.metrics
    name = registered_model_name("flywheel", result.output_for_node("evaluation_report")["corpus"], "crossencoder")
    assert reranker["registered_model"] == name
    [version] = client.search_model_versions(f"name='{name}'")
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    scores = served.predict(pd.DataFrame({"query": ["a wing", "a wing"], "passage": ["the wing lifts", "cats"]}))
    assert len(scores) == 2 and all(isinstance(x, float) for x in scores)
    verdict = result.output_for_node("evaluation_report")["reranker_verdict"]   # the evaluation's, on the version
    assert version.tags["flywheel.reranker_verdict"] == ("ship" if verdict["ship"] else "hold")
    assert version.tags["flywheel.reranker_reason"] == verdict["reason"] and verdict["sets"]
    assert ("champion" in version.aliases) == verdict["ship"]


def test_the_adapter_is_trained_registered_and_compared_with_the_base_rows_on_every_set(tiny_run):
    import mlflow

    home, result = tiny_run
    adapter = result.output_for_node("query_adapter")
    assert adapter["enabled"] and adapter["steps"] > 0 and adapter["index_table"] == "chunks_base"
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    [version] = client.search_model_versions(f"name='{adapter['registered_model']}'")
    assert version.run_id == adapter["mlflow_run_id"]
    assert "adapter.npz" in {a.path for a in client.list_artifacts(adapter["mlflow_run_id"])}
    report = json.loads((home / "reports" / "evaluation.json").read_text())
    assert report["adapter"]["weights_path"] == adapter["weights_path"]
    kinds = set()
    for qs in report["query_sets"].values():
        kinds.add(qs["kind"])
        for row, base in (("dense_adapter", "dense_base"), ("hybrid_adapter", "hybrid_base")):
            m = qs["retrievers"][row]
            assert m["baseline"] == base and m["n_paired"] == qs["n_queries"]
            assert m["ci95"][0] <= m["delta_ndcg@10"] <= m["ci95"][1]
            assert m["delta_ndcg@10"] == pytest.approx(m["ndcg@10"] - qs["retrievers"][base]["ndcg@10"], abs=1e-5)
        by = qs["breakdown"]["by_feedback"]
        assert all("dense_adapter" in by[g]["vs_baseline"] for g in ("seen", "unseen") if by[g]["n_queries"])
    assert kinds == {"synthetic", "human"}
    md = (home / "reports" / "evaluation.md").read_text()
    assert "| hybrid_adapter | hybrid_base |" in md
    run = client.get_run(result.output_for_node("finetuned_biencoder")["mlflow_run_id"])
    assert "synthetic.test.dense_adapter.delta_ndcg_at_10" in run.data.metrics
    own = client.get_run(adapter["mlflow_run_id"]).data.metrics    # the adapter's run gets its rows, only those
    assert own["synthetic.test.hybrid_adapter.ndcg_at_10"] == report["query_sets"]["synthetic/test"]["retrievers"][
        "hybrid_adapter"]["ndcg@10"] and not any("finetuned" in k for k in own)


def test_the_expanded_and_learned_fusion_rows_are_compared_with_their_baselines_and_reported(tiny_run):
    import pandas as pd

    home, result = tiny_run
    report = json.loads((home / "reports" / "evaluation.json").read_text())
    expansion, fusion = result.output_for_node("expanded_index"), result.output_for_node("fusion_weights")
    assert report["expansion"] == expansion and report["fusion"] == fusion
    splits, queries = result.output_for_node("query_splits"), result.output_for_node("synthetic_queries")
    n_test = int(queries["query_id"].map(dict(zip(splits["query_id"], splits["split"]))).eq("test").sum())
    assert n_test > 0 and expansion["filtered"]["test_split"] == n_test            # every test query left out
    assert expansion["filtered"]["lowest_scoring"] > 0 and 0 < expansion["chunks_expanded"] <= expansion["queries_used"]
    assert expansion["queries_used"] == sum(expansion["queries_by_split"].values())
    val = splits[splits["split"] == "validation"]
    assert fusion["tuned_on"] == "synthetic/validation" and fusion["n_queries"] == len(val)
    assert fusion["method"] in ("rrf", "convex") and 0.0 <= fusion["weight_dense"] <= 1.0
    assert fusion["at_grid_edge"] == (fusion["weight_dense"] in (0.0, 1.0))
    assert bool(fusion["note"]) == fusion["at_grid_edge"]
    per_query = pd.read_parquet(home / "reports" / "per_query.parquet")
    for set_name, qs in report["query_sets"].items():
        for row, base in (("bm25_expanded", "bm25"), ("hybrid_expanded", "hybrid_base"),
                          ("hybrid_learned", "hybrid_base")):
            m = qs["retrievers"][row]
            assert m["baseline"] == base and m["n_paired"] == qs["n_queries"]
            assert m["ci95"][0] <= m["delta_ndcg@10"] <= m["ci95"][1]
            assert m["delta_ndcg@10"] == pytest.approx(m["ndcg@10"] - qs["retrievers"][base]["ndcg@10"], abs=1e-5)
        if (fusion["method"], fusion["weight_dense"]) == ("rrf", 0.5):   # the fixed RRF picked: the same ranking
            rows = per_query[per_query["query_set"] == set_name]
            wide = rows.pivot(index="qid", columns="retriever", values="ndcg@10")
            assert wide["hybrid_learned"].equals(wide["hybrid_base"])
    md = (home / "reports" / "evaluation.md").read_text()
    assert "## Document expansion, summaries and learned fusion" in md and "| bm25_expanded | bm25 |" in md
    assert report["summaries"] == {"enabled": False} and "bm25_summaries" not in md   # off by default: no LLM call
    assert f"`hybrid_learned`: {fusion['method']} with weight {fusion['weight_dense']:g}" in md
    [meta] = [m.materialization.metadata for m in result.get_asset_materialization_events()
              if m.asset_key.to_user_string() == "evaluation_report"]
    assert fusion["method"] in meta["fusion"].value


def test_an_endpoint_in_the_environment_switches_the_llm_and_keeps_the_key_out_of_config(tmp_path, monkeypatch):
    from resources.llm import OpenAICompatibleLLMResource

    monkeypatch.setenv("FLYWHEEL_LLM_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("FLYWHEEL_LLM_MODEL", "qwen")
    monkeypatch.setenv("FLYWHEEL_LLM_API_KEY", "secret")
    llm = build_definitions(tmp_path).resources["llm"]
    assert isinstance(llm, OpenAICompatibleLLMResource)
    assert llm.mode == "json"
    monkeypatch.setenv("FLYWHEEL_LLM_MODE", "tools")  # endpoints differ in what structured output they honour
    assert build_definitions(tmp_path).resources["llm"].mode == "tools"
    assert isinstance(llm.api_key, dg.EnvVar) and "secret" not in repr(llm.api_key)


def test_an_embeddings_endpoint_in_the_environment_switches_the_embedder_and_keeps_the_key_out_of_config(
        tmp_path, monkeypatch):
    from resources.embedder_openai import OpenAIEmbedderResource

    monkeypatch.delenv("FLYWHEEL_EMBED_BASE_URL", raising=False)
    assert type(build_definitions(tmp_path).resources["embedder"]) is EmbedderResource   # unset: the local model
    monkeypatch.setenv("FLYWHEEL_EMBED_BASE_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("FLYWHEEL_EMBED_MODEL", "text-embedding-3-small")
    monkeypatch.setenv("FLYWHEEL_EMBED_API_KEY", "secret")
    embedder = build_definitions(tmp_path).resources["embedder"]
    assert isinstance(embedder, OpenAIEmbedderResource)
    assert embedder.cache_path == str(tmp_path / "embedding_cache.sqlite")
    assert isinstance(embedder.api_key, dg.EnvVar) and "secret" not in repr(embedder.api_key)


def test_the_gate_decides_on_the_new_model_and_the_serving_index_uses_the_champion(tiny_run):
    home, result = tiny_run
    gate = result.output_for_node("promotion_gate")
    assert gate["candidate_version"] == "1"
    assert [s.split("/")[0] for s in gate["gate"]["sets"]] == ["human"] and gate["guard"]["sets"] == ["synthetic/test"]
    lo, hi = gate["gate"]["ci95"]
    assert lo <= gate["gate"]["delta_ndcg@10"] <= hi
    # the decision is the gate's rule applied to the numbers it reports, whichever way the tiny run falls
    should = lo > 0 and gate["guard"]["delta_ndcg@10"] >= -0.01
    assert gate["promote"] is should and gate["decision"] == ("promoted" if should else "rejected")
    assert gate["reason"].startswith("promoted:" if should else "not promoted:")
    served = result.output_for_node("serving_index")
    expected = gate["candidate_model_path"] if gate["promote"] else None
    assert served["champion"]["model_path"] == expected and served["n_rows"] > 0


def test_the_feedback_log_is_read_counted_blended_and_split_seen_unseen(tiny_run):
    home, result = tiny_run
    pairs, logged = result.output_for_node("feedback", "feedback_pairs"), result.output_for_node("feedback", "logged_queries")
    assert len(logged) == 18 and "what is known about lift in wing experiments" not in set(logged["norm"])
    assert (pairs["label"] == "positive").sum() == 18 and (pairs["weak"] & (pairs["label"] == "negative")).sum() == 18
    [meta] = [m.materialization.metadata for m in result.get_asset_materialization_events()
              if m.asset_key.to_user_string() == "logged_queries"]
    assert meta["test_queries_dropped"].value == 1 and meta["skipped_bad_json"].value == 2
    triplets = result.output_for_node("training_triplets")
    fb = triplets[triplets["origin"] == "feedback"]
    assert len(fb) > 0 and set(fb["split"]) <= {"train", "validation"}
    assert all(a.startswith("how does") for a in fb["anchor"])
    report = json.loads((home / "reports" / "evaluation.json").read_text())
    [human] = [qs for qs in report["query_sets"].values() if qs["kind"] == "human"]
    by = human["breakdown"]["by_feedback"]
    assert by["seen"]["n_queries"] + by["unseen"]["n_queries"] == 6 and by["unseen"]["n_queries"] >= 3
    if by["seen"]["n_queries"]:
        assert by["seen"]["vs_baseline"]["dense_finetuned"]["n_paired"] == by["seen"]["n_queries"]
    gate = result.output_for_node("promotion_gate")
    assert gate["by_feedback"]["unseen"]["n"] == by["unseen"]["n_queries"]
    run = __import__("mlflow").MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(
        result.output_for_node("finetuned_biencoder")["mlflow_run_id"])
    assert int(run.data.params["n_train_feedback"]) == int((fb["split"] == "train").sum())


def test_the_review_queue_and_the_segments_come_from_the_log(tiny_run):
    import pandas as pd

    home, result = tiny_run
    queue = pd.read_parquet(home / "reports" / "review_queue.parquet")
    logged = result.output_for_node("feedback", "logged_queries")
    assert 0 < len(queue) <= len(logged) and set(queue["query_id"]) <= set(logged["query_id"])
    assert queue["precision"].is_monotonic_increasing or queue["precision"].isna().any()
    segments = json.loads((home / "reports" / "segments.json").read_text())["segments"]
    assert segments and sum(s["n_queries"] for s in segments) == len(logged)
    assert {"name", "n_queries", "share", "examples", "precision", "trend"} <= set(segments[0])
    assert abs(sum(s["share"] for s in segments) - 1.0) < 1e-6
