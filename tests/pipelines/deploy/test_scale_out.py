"""The scale-out backends, for real, on loopback: the whole tiny graph runs with Dagster's instance in
PostgreSQL (the storage section of pipelines/deploy/dagster-instance.yaml), MLflow tracking and registry in
PostgreSQL, and LanceDB on an S3-compatible server."""
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.definitions import build_definitions
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource

pytestmark = pytest.mark.servers
DEPLOY = Path(__file__).resolve().parents[3] / "pipelines" / "deploy"


def postgres_instance(tmp_path: Path, url: str, monkeypatch) -> dg.DagsterInstance:
    """The deployment's instance config, minus the Kubernetes run launcher (no cluster here)."""
    config = yaml.safe_load((DEPLOY / "dagster-instance.yaml").read_text())
    config.pop("run_launcher")
    monkeypatch.setenv("DAGSTER_PG_URL", f"{url}/dagster")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(tmp_path))


def test_whole_graph_on_postgres_instance_postgres_mlflow_and_s3_lancedb(tmp_path, monkeypatch, postgres_url,
                                                                       s3_server, tiny_beir, tiny_model_path):
    import mlflow
    import psycopg2

    from tests.conftest import fake_llm_class
    from tests.pipelines.test_definitions import TINY_RUN_CONFIG

    (tmp_path / "dagster_home").mkdir()
    instance = postgres_instance(tmp_path / "dagster_home", postgres_url, monkeypatch)
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    _, options = s3_server
    lancedb = LanceDBResource(uri="s3://flywheel/graph", storage_options=options)
    tracking = MLflowResource(tracking_uri=f"{postgres_url}/mlflow", artifact_root=(tmp_path / "artifacts").as_uri())
    defs = build_definitions(tmp_path / "home", llm=fake_llm_class()(), embedder=EmbedderResource(model=tiny_model_path),
                             lancedb=lancedb, mlflow=tracking)
    config = {"ops": {**TINY_RUN_CONFIG["ops"], "corpus": {"config": {"path": str(tiny_beir)}}}}
    result = defs.resolve_job_def("flywheel_job").execute_in_process(run_config=config, instance=instance)
    assert result.success

    # Dagster: the run and its materializations are rows in PostgreSQL, readable by any other process
    again = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    assert again.get_run_by_id(result.run_id).is_success
    assert again.get_latest_materialization_event(dg.AssetKey("run_stats")).run_id == result.run_id
    with psycopg2.connect(f"{postgres_url}/dagster".replace("+psycopg2", "")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone()[0] > 20

    # MLflow: the training run and the registered model version are in PostgreSQL
    model = result.output_for_node("finetuned_biencoder")
    client = mlflow.MlflowClient(f"{postgres_url}/mlflow")
    assert client.get_run(model["mlflow_run_id"]).data.params["loss"] == "MultipleNegativesRankingLoss"
    name = tracking.model_name(result.output_for_node("evaluation_report")["corpus"], "biencoder")
    assert model["registered_model"] == name
    assert [v.run_id for v in client.search_model_versions(f"name='{name}'")] == [model["mlflow_run_id"]]

    # LanceDB: both indices live in the bucket and answer all three retrievers
    for table in ("chunks_base", "chunks_finetuned"):
        index = lancedb.open(table)
        assert index.count() == 36
        assert index.bm25("vortex shedding cylinder", 5)
