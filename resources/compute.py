"""Where a stage runs: a compute profile ("gpu", "llm", "cpu") becomes the stage's op tags.

    @dg.asset(pool="gpu", op_tags=compute_tags("gpu"))

gives the step `flywheel/compute: gpu` and `dagster-k8s/config` with the profile's container resources
(requests/limits such as `nvidia.com/gpu: 1` and memory), tolerations and node selector. Dagster's
per-step Kubernetes executor (`k8s_job_executor`) reads that tag when it creates the step's pod; local runs
ignore it. The profiles live in pipelines/deploy/compute.yaml; FLYWHEEL_COMPUTE_PROFILES names another file
(read when the code location loads, since op tags are part of an asset's definition). Which device the step
then uses (CUDA, MPS or CPU), in what precision and with what batch size, is chosen at run time by
resources/device.py.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import yaml

PROFILES_ENV = "FLYWHEEL_COMPUTE_PROFILES"
DEFAULT_PROFILES_FILE = Path(__file__).resolve().parent.parent / "pipelines" / "deploy" / "compute.yaml"
K8S_CONFIG_TAG = "dagster-k8s/config"
_KNOWN_KEYS = {"requests", "limits", "tolerations", "node_selector"}


@lru_cache(maxsize=8)
def load_profiles(path: str | None = None) -> dict[str, dict]:
    """Profiles by name from a YAML file (default: $FLYWHEEL_COMPUTE_PROFILES, else the bundled compute.yaml)."""
    file = Path(path or os.environ.get(PROFILES_ENV) or DEFAULT_PROFILES_FILE)
    if not file.exists():
        raise FileNotFoundError(f"compute profiles file {file} not found; unset {PROFILES_ENV} to use "
                                f"{DEFAULT_PROFILES_FILE}, or copy that file and edit it")
    profiles = yaml.safe_load(file.read_text()) or {}
    for name, profile in profiles.items():
        unknown = set(profile or {}) - _KNOWN_KEYS
        if unknown:
            raise ValueError(f"compute profile {name!r} in {file} has unknown keys {sorted(unknown)}; "
                             f"use {sorted(_KNOWN_KEYS)}")
    return profiles


def k8s_config(profile: dict) -> dict:
    """The `dagster-k8s/config` value for a profile (the schema of dagster_k8s.UserDefinedDagsterK8sConfig)."""
    resources = {k: {r: str(v) for r, v in profile[k].items()} for k in ("requests", "limits") if profile.get(k)}
    pod_spec = {}
    if profile.get("tolerations"):
        pod_spec["tolerations"] = profile["tolerations"]
    if profile.get("node_selector"):
        pod_spec["node_selector"] = profile["node_selector"]
    config: dict = {"container_config": {"resources": resources}}
    if pod_spec:
        config["pod_spec_config"] = pod_spec
    return config


def compute_tags(kind: str, profiles: dict[str, dict] | None = None) -> dict:
    """Op tags for a stage of compute profile `kind`."""
    profiles = load_profiles() if profiles is None else profiles
    if kind not in profiles:
        raise ValueError(f"unknown compute profile {kind!r}; the profiles file defines {sorted(profiles)}")
    return {"flywheel/compute": kind, K8S_CONFIG_TAG: k8s_config(profiles[kind] or {})}
