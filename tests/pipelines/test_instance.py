"""dagster.yaml is a valid instance config: telemetry off, one LLM step and one GPU step at a time."""
import shutil
from pathlib import Path

import dagster as dg

from pipelines.definitions import build_definitions

REPO = Path(__file__).resolve().parents[2]


def test_dagster_yaml_loads_with_telemetry_off_and_pools(tmp_path, monkeypatch):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = dg.DagsterInstance.get()
    cfg = instance.get_concurrency_config()
    assert cfg.pool_config.default_pool_limit == 1
    assert cfg.run_queue_config.max_concurrent_runs == 1
    assert instance.telemetry_enabled is False


def test_llm_and_gpu_stages_are_in_their_pools(tmp_path):
    graph = build_definitions(tmp_path).resolve_asset_graph()
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    assert pools["synthetic_queries"] == {"llm"} and pools["relevance_labels"] == {"llm"}
    assert pools["finetuned_biencoder"] == {"gpu"} and pools["baseline_index"] == {"gpu"}
