from pathlib import Path

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


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


def test_bound_heap_fixes_the_mmap_threshold_and_the_arenas():
    from resources.device import HEAP_ARENAS, HEAP_MMAP_THRESHOLD, M_ARENA_MAX, M_MMAP_THRESHOLD, bound_heap

    libc = _FakeLibc()
    assert bound_heap(environ={}, libc=libc) is True
    assert libc.calls == [(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD), (M_ARENA_MAX, HEAP_ARENAS)]


def test_bound_heap_leaves_what_the_user_set_alone():
    from resources.device import bound_heap

    for env in ({"MALLOC_MMAP_THRESHOLD_": "1"}, {"MALLOC_ARENA_MAX": "4"},
                {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}):
        libc = _FakeLibc()
        assert bound_heap(environ=env, libc=libc) is False
        assert libc.calls == []


def test_bound_heap_on_this_machine_returns_freed_blocks_at_once():
    """In a fresh interpreter: after a 16 MiB block was freed, glibc's dynamic threshold would put the next 8 MiB
    blocks on the heap; bounded, each is its own mapping and freeing it lowers the resident set at once."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    code = '''
import ctypes, sys
from resources.device import bound_heap
if sys.argv[1] == "bounded":
    assert bound_heap(environ={})
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def touch(p, n):
    ctypes.memset(p, 1, n)
big = libc.malloc(16 << 20); touch(big, 16 << 20); libc.free(big)   # raises the dynamic threshold to 16 MiB
blocks = [libc.malloc(8 << 20) for _ in range(8)]
for b in blocks:
    touch(b, 8 << 20)
keep = libc.malloc(64); before = rss()
for b in blocks[:-1]:
    libc.free(b)
print((before - rss()) >> 20)
'''
    freed = {}
    for mode in ("bounded", "default"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True,
                             env={"PATH": "", "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        freed[mode] = int(out.stdout.strip())
    assert freed["bounded"] >= 50          # 7 blocks of 8 MiB handed back at once
    assert freed["default"] < freed["bounded"]
