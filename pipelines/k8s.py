"""Running flywheel on Kubernetes: the per-step executor and the pod each stage would get.

`FLYWHEEL_EXECUTOR=k8s` (read by pipelines/definitions.py) gives flywheel_job Dagster's `k8s_job_executor`:
every step runs in its own pod, so the GPU stages get GPU nodes (their op tags, resources/compute.py) and the
rest the `cpu` profile, set here as the executor's default resources. The run itself is launched by the
instance's run launcher (K8sRunLauncher, pipelines/deploy/dagster-instance.yaml). The full recipe:
pipelines/deploy/README.md.

`render_step_job` builds the Kubernetes Job that executor would submit for a step, with dagster-k8s's own
code and no cluster, so a test (or a user, before deploying) can check each stage's requests.
"""
import dagster as dg

from resources.compute import k8s_config, load_profiles


def k8s_executor(max_concurrent: int = 0) -> dg.ExecutorDefinition:
    """k8s_job_executor whose default pod resources are the `cpu` profile (GPU stages override via op tags).

    The image, namespace, env and volumes are left to the run config / Helm values, where they belong."""
    from dagster_k8s import k8s_job_executor

    cpu = k8s_config(load_profiles().get("cpu") or {})["container_config"]["resources"]
    return k8s_job_executor.configured({"resources": cpu, "max_concurrent": max_concurrent}, name="k8s_job_executor")


def render_step_job(op_tags: dict, step_key: str, image: str = "flywheel:latest", run_id: str = "0" * 36,
                    dagster_home: str = "/opt/dagster/dagster_home"):
    """The kubernetes V1Job the per-step executor would create for a step with these op tags (no cluster used).

    Same merge order as dagster_k8s.executor.K8sStepHandler: executor defaults (the cpu profile), then the
    step's `dagster-k8s/config` tag."""
    import json

    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config

    tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in op_tags.items()}
    cpu = k8s_config(load_profiles().get("cpu") or {})["container_config"]["resources"]
    context = K8sContainerContext(resources=cpu).merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    name = get_k8s_job_name(run_id, step_key)
    return construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(job_image=image, dagster_home=dagster_home),
        args=["dagster", "api", "execute_step"], job_name=name, pod_name=name, component="step_worker",
        user_defined_k8s_config=context.run_k8s_config, labels={"dagster/op": step_key})
