"""Per-asset compute on Kubernetes, rendered offline with dagster-k8s's own code: each stage's pod asks for what
its profile says, and the deployment's instance config is one Dagster and dagster-k8s accept."""
from pathlib import Path

import pytest
import yaml

from pipelines.definitions import build_definitions
from pipelines.k8s import render_step_job
from resources.compute import load_profiles

DEPLOY = Path(__file__).resolve().parents[2] / "pipelines" / "deploy"
ACCELERATED = {"baseline_index": "gpu", "finetuned_index": "gpu", "finetuned_biencoder": "gpu",
               "evaluation_report": "gpu", "synthetic_queries": "llm", "relevance_labels": "llm",
               "finetuned_crossencoder": "gpu", "distilled_biencoder": "gpu", "distilled_index": "gpu",
               "judge_agreement": "llm", "document_summaries": "llm", "summary_index": "gpu"}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    return build_definitions(tmp_path_factory.mktemp("home")).resolve_asset_graph()


def _op_tags(graph, asset: str) -> dict:
    import dagster as dg

    return dict(graph.get(dg.AssetKey(asset)).assets_def.op.tags)


@pytest.mark.parametrize("asset,profile", sorted(ACCELERATED.items()))
def test_accelerated_stage_pods_request_a_gpu_and_memory(graph, asset, profile):
    expected = load_profiles()[profile]
    job = render_step_job(_op_tags(graph, asset), asset)
    pod = job.spec.template.spec
    [container] = pod.containers
    assert container.resources.requests["nvidia.com/gpu"] == "1"
    assert container.resources.requests["memory"] == expected["requests"]["memory"]
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert [t.key for t in pod.tolerations] == ["nvidia.com/gpu"]
    assert job.metadata.labels["dagster/op"] == asset
    assert graph.get(__import__("dagster").AssetKey(asset)).pools == {"gpu" if profile == "gpu" else "llm"}


@pytest.mark.parametrize("asset", ["chunks", "query_splits", "training_triplets", "query_adapter", "run_stats",
                                   "expanded_index", "fusion_weights"])
def test_other_stages_get_the_cpu_profile_and_no_gpu(graph, asset):
    cpu = load_profiles()["cpu"]
    [container] = render_step_job(_op_tags(graph, asset), asset).spec.template.spec.containers
    assert "nvidia.com/gpu" not in (container.resources.requests or {})
    assert container.resources.requests["memory"] == cpu["requests"]["memory"]


def test_k8s_executor_definitions_load(tmp_path):
    job = build_definitions(tmp_path, executor="k8s").resolve_job_def("flywheel_job")
    assert job.executor_def.name == "k8s_job_executor"
    with pytest.raises(ValueError, match="FLYWHEEL_EXECUTOR='celery'"):
        build_definitions(tmp_path, executor="celery")


def test_deployment_instance_config_is_valid_for_dagster_and_dagster_k8s(tmp_path, monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster-instance.yaml").read_text())
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://u:p@db:5432/dagster")
    config, _ = dagster_instance_config(str(tmp_path))                   # the instance schema, env vars resolved
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}


def test_helm_values_name_the_image_env_and_launcher(tmp_path):
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "pipelines.definitions"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert env["FLYWHEEL_EXECUTOR"] == "k8s" and env["FLYWHEEL_LANCEDB_URI"].startswith("s3://")
    assert env["FLYWHEEL_MLFLOW_TRACKING_URI"].startswith("http")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False   # an external, managed PostgreSQL


def test_mlflow_server_manifest_uses_a_database_backend_and_serves_artifacts():
    docs = list(yaml.safe_load_all((DEPLOY / "mlflow.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--backend-store-uri") + 1] == "$(MLFLOW_BACKEND_STORE_URI)"
    assert "--serve-artifacts" in args and args[args.index("--artifacts-destination") + 1].startswith("s3://")
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    env = {e["name"]: e.get("value") for e in values["dagster-user-deployments"]["deployments"][0]["env"]}
    assert env["FLYWHEEL_MLFLOW_TRACKING_URI"] == f"http://{service['metadata']['name']}.flywheel.svc:{service['spec']['ports'][0]['port']}"
