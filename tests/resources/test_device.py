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



def test_encoding_precision_is_bf16_only_on_a_cpu_that_has_it_natively(tmp_path):
    assert plan_for("cpu", cpu_bf16=True).inference == "bf16" and plan_for("cpu", cpu_bf16=True).precision == "fp32"
    assert plan_for("cpu", cpu_bf16=False).inference == "fp32"
    assert plan_for("cuda", bf16_supported=True).inference == "fp32"   # a GPU encodes fp32 fast enough
    from resources.device import cpu_has_native_bf16

    # one file per flag set: the answer is cached per path (it is read once a process)
    for i, (flags, expected) in enumerate(
        (("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True), ("fpu avx512f", False))
    ):
        cpuinfo = tmp_path / f"cpuinfo{i}"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_has_native_bf16(str(cpuinfo)) is expected, flags
    assert cpu_has_native_bf16(str(tmp_path / "absent")) is False
