import pytest

from resources.device import choose_device, plan_for


def test_auto_prefers_cuda_then_mps_then_cpu():
    assert choose_device("auto", {"cpu", "cuda", "mps"}) == "cuda"
    assert choose_device("auto", {"cpu", "mps"}) == "mps"
    assert choose_device("auto", {"cpu"}) == "cpu"


def test_explicit_missing_device_is_an_error_not_a_silent_cpu_run():
    with pytest.raises(ValueError, match="device='auto'"):
        choose_device("cuda", {"cpu"})
    assert choose_device("cuda:1", {"cpu", "cuda"}) == "cuda:1"


def test_precision_plan_per_device():
    assert plan_for("cuda", bf16_supported=True).precision == "bf16"
    assert plan_for("cuda:0", bf16_supported=False).precision == "fp16"
    assert plan_for("cuda", bf16_supported=True).batch_scale > 1
    assert plan_for("cpu").precision == "fp32" and plan_for("cpu").batch_scale == 1


def test_this_machine_resolves_a_device():
    assert choose_device("auto") in {"cpu", "cuda", "mps"}
