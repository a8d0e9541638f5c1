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


def test_this_machine_resolves_the_device_torch_reports():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert choose_device("auto") == expected


def test_available_devices_asks_torch(monkeypatch):
    import torch

    from resources.device import available_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert available_devices() == {"cpu", "cuda"} and choose_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_devices() == {"cpu"} and choose_device("auto") == "cpu"

