import json

import pytest

from resources.compute import compute_tags, k8s_config, load_profiles


def test_bundled_profiles_ask_for_a_gpu_for_gpu_and_llm_stages_only():
    profiles = load_profiles()
    assert profiles["gpu"]["requests"]["nvidia.com/gpu"] == "1" and profiles["llm"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in profiles["cpu"]["requests"]


def test_compute_tags_carry_the_profile_as_dagster_k8s_config():
    tags = compute_tags("gpu", {"gpu": {"requests": {"memory": "8Gi", "nvidia.com/gpu": 2}, "node_selector": {"pool": "a100"}}})
    assert tags["flywheel/compute"] == "gpu"
    assert tags["dagster-k8s/config"] == {
        "container_config": {"resources": {"requests": {"memory": "8Gi", "nvidia.com/gpu": "2"}}},
        "pod_spec_config": {"node_selector": {"pool": "a100"}}}


def test_profiles_file_from_the_environment_and_clear_errors(tmp_path, monkeypatch):
    custom = tmp_path / "compute.yaml"
    custom.write_text(json.dumps({"gpu": {"requests": {"nvidia.com/gpu": "4"}}}))   # JSON is YAML
    monkeypatch.setenv("FLYWHEEL_COMPUTE_PROFILES", str(custom))
    load_profiles.cache_clear()
    try:
        assert compute_tags("gpu")["dagster-k8s/config"]["container_config"]["resources"]["requests"] == {"nvidia.com/gpu": "4"}
        with pytest.raises(ValueError, match="unknown compute profile 'tpu'"):
            compute_tags("tpu")
        custom.write_text("gpu: {request: {memory: 1Gi}}")
        load_profiles.cache_clear()
        with pytest.raises(ValueError, match="unknown keys \\['request'\\]"):
            load_profiles()
    finally:
        load_profiles.cache_clear()


def test_k8s_config_without_gpu_keys_is_plain_resources():
    assert k8s_config({"requests": {"cpu": 1}}) == {"container_config": {"resources": {"requests": {"cpu": "1"}}}}
