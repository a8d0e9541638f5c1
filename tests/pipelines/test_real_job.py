"""Slow tier: the real CLI with the real bundled models (Gemma 3 270M writes and judges, MiniLM embeds and
trains) on a small slice of the bundled sample corpus."""
import json

import pytest

from assets.corpus.sample import write_sample_corpus
from pipelines.cli import main
from resources.tracking import registered_model_name


@pytest.mark.slow
def test_flywheel_run_with_the_real_bundled_models(tmp_path, monkeypatch, capsys):
    for var in ("DAGSTER_HOME", "FLYWHEEL_HOME"):
        monkeypatch.delenv(var, raising=False)
    sample = write_sample_corpus(tmp_path / "sample")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in sorted(sample.glob("*.txt"))[:10]:
        (corpus / f.name).write_text(f.read_text())
    home = tmp_path / "home"
    args = ["run", "--corpus", str(corpus), "--home", str(home), "--max-chunks", "24", "--queries-per-chunk", "2",
            "--label-queries", "10", "--candidates", "2", "--max-steps", "2", "--reranker-steps", "2"]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((home / "reports" / "evaluation.json").read_text())
    synthetic = report["query_sets"]["synthetic/test"]
    assert synthetic["kind"] == "synthetic" and synthetic["n_queries"] > 0
    first = {"bm25", "dense_base", "hybrid_base", "dense_finetuned", "hybrid_finetuned"}
    levers = {"dense_adapter", "hybrid_adapter", "bm25_expanded", "hybrid_expanded", "hybrid_learned"}
    assert set(synthetic["retrievers"]) == first | levers | {f"{s}+rerank_finetuned" for s in first} | {
        "hybrid_finetuned+rerank_offtheshelf"}
    assert "p_value" in synthetic["retrievers"]["dense_finetuned"]
    # the learning curve's data and plot come out of `flywheel run`, and are in the training run in MLflow
    assert (home / "reports" / "learning_curve.png").stat().st_size > 0
    assert (home / "reports" / "learning_curve.parquet").exists()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(report["model"]["mlflow_run_id"])}
    assert "learning_curve.png" in artifacts, artifacts
    # the first trained version was put to the gate against the base model, and the decision recorded
    tags = client.get_model_version(registered_model_name("flywheel", report["corpus"], "biencoder"), "1").tags
    import pickle

    gate = pickle.loads((home / "storage" / "promotion_gate").read_bytes())
    guard_ok = gate["guard"] is None or gate["guard"]["delta_ndcg@10"] >= -0.01
    should = gate["gate"]["ci95"][0] > 0 and guard_ok   # the gate's rule, applied to the numbers it reports
    assert tags["flywheel.gate"] == ("promoted" if should else "rejected") and gate["promote"] is should
    assert tags["flywheel.gate_reason"] == gate["reason"] and "ndcg@10" in gate["reason"]
    # real queries written by the real model find their source chunk far above chance (1 / #chunks)
    assert synthetic["retrievers"]["dense_base"]["recall@10"] > 0.3
    assert "| synthetic/test |" in out
    # a second run pays for no LLM call: every response comes from the cache
    from pipelines.cli import parser, run_flywheel

    result, _ = run_flywheel(parser().parse_args(args))
    assert result.success
    for asset in ("synthetic_queries", "relevance_labels"):
        meta = _metadata(result, asset)
        assert meta["llm_calls"] == 0 and meta["llm_cache_hits"] > 0, (asset, meta)


def _metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        if mat.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")
