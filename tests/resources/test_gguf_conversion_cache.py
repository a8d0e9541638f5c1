"""The GGUF -> safetensors conversion cache of the local LLM: made once, reused, keyed by the file, and a
folder that cannot be written falls back to loading the GGUF (with no half-written copy left behind)."""
import os
import time

import pytest

from resources.llm_local import LocalGGUFLLMResource   # importable on its own: no cycle through resources.llm


class _Saved:
    def __init__(self, log, fail=False):
        self.log, self.fail = log, fail
        self.config = type("C", (), {})()
        self.config.quantization_config = {"q4": True}
        self.hf_quantizer = "q"

    def to(self, dtype):
        self.log.append(("cast", str(dtype)))
        return self

    def save_pretrained(self, path):
        self.log.append(("save", str(path)))
        if self.fail:
            os.makedirs(path, exist_ok=True)       # a partial write, then the disk is full
            raise OSError("No space left on device")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            f.write("{}")


@pytest.fixture
def fake_transformers(monkeypatch):
    import transformers

    log = []
    state = {"fail": False}

    def model_from_pretrained(folder, gguf_file=None, **kw):
        log.append(("load", gguf_file))
        return _Saved(log, state["fail"])

    class Tok:
        def save_pretrained(self, path):
            log.append(("tokenizer", str(path)))

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tok())
    return log, state


def test_converted_once_then_reused_and_a_new_file_converts_again(tmp_path, fake_transformers):
    log, _ = fake_transformers
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    first = LocalGGUFLLMResource._converted_folder(tmp_path, "m.gguf", isolate=False)
    st = gguf.stat()
    assert first == tmp_path / f"m.hf-{st.st_size}-{st.st_mtime_ns}" and (first / "config.json").exists()
    assert [e[0] for e in log] == ["load", "save", "tokenizer"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]          # renamed into place, atomically
    log.clear()
    assert LocalGGUFLLMResource._converted_folder(tmp_path, "m.gguf", isolate=False) == first and log == []   # the cache hit
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))      # the GGUF was replaced
    second = LocalGGUFLLMResource._converted_folder(tmp_path, "m.gguf", isolate=False)
    assert second != first and [e[0] for e in log] == ["load", "save", "tokenizer"]


def test_a_folder_that_cannot_be_written_loads_the_gguf_and_leaves_no_partial_copy(tmp_path, fake_transformers):
    log, state = fake_transformers
    state["fail"] = True
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert LocalGGUFLLMResource._converted_folder(tmp_path, "m.gguf", isolate=False) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_the_conversion_runs_in_a_child_process_and_its_failure_is_an_oserror_here(tmp_path):
    """The real isolated path: a child process that does the work, and one that fails."""
    from resources.llm_local import run_isolated

    run_isolated("os", "mkdir", str(tmp_path / "made"))
    assert (tmp_path / "made").is_dir()
    with pytest.raises(OSError, match=r"os.mkdir failed in a child process \(rc 1\).*FileExistsError"):
        run_isolated("os", "mkdir", str(tmp_path / "made"))


def test_a_conversion_that_fails_in_the_child_falls_back_to_loading_the_gguf(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF not really")   # the child's transformers cannot read it
    assert LocalGGUFLLMResource._converted_folder(tmp_path, "m.gguf") == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]   # no half-written copy


def test_each_dtype_has_its_own_converted_copy_cast_before_saving(tmp_path, fake_transformers):
    log, _ = fake_transformers
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    fp32 = LocalGGUFLLMResource._converted_folder(tmp_path, "m.gguf", isolate=False)
    log.clear()
    bf16 = LocalGGUFLLMResource._converted_folder(tmp_path, "m.gguf", isolate=False, dtype="bfloat16")
    assert bf16 != fp32 and bf16.name.endswith("-bfloat16") and (bf16 / "config.json").exists()
    assert [e[0] for e in log] == ["load", "cast", "save", "tokenizer"] and log[1][1] == "torch.bfloat16"


def test_one_gguf_reader_shares_a_reader_per_file_inside_and_restores_the_class_after(tmp_path):
    """transformers' loader opens the GGUF three times (config, weights, tokenizer); inside the context each open
    of the same file is the one parsed reader, with the same fields a fresh reader reads, and outside it nothing
    is patched."""
    import gguf
    import numpy as np

    from resources.llm_local import one_gguf_reader

    paths = []
    for name in ("a.gguf", "b.gguf"):
        writer = gguf.GGUFWriter(str(tmp_path / name), arch="llama")
        writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(50)])
        writer.add_tensor("w", np.arange(8, dtype=np.float32))
        writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
        writer.close()
        paths.append(tmp_path / name)
    original = gguf.GGUFReader
    fresh = original(paths[0])
    with one_gguf_reader():
        first = gguf.GGUFReader(paths[0])
        assert gguf.GGUFReader(str(paths[0])) is first                       # a str or a Path: one file, one parse
        assert gguf.GGUFReader(paths[1]) is not first                        # another file: its own reader
        assert list(first.fields) == list(fresh.fields)
        assert [t.name for t in first.tensors] == ["w"] and np.array_equal(first.tensors[0].data, np.arange(8))
    assert gguf.GGUFReader is original and gguf.GGUFReader(paths[0]) is not first


def test_a_conversion_in_progress_elsewhere_is_waited_for_and_not_done_twice(tmp_path, fake_transformers):
    """A run starts the conversion in a child before its imports; the first LLM stage's load then waits on the
    lock (flock on the GGUF itself) and uses the copy the child made."""
    import subprocess
    import sys

    log, _ = fake_transformers
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    st = gguf.stat()
    target = tmp_path / f"m.hf-{st.st_size}-{st.st_mtime_ns}"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, pathlib, sys, time; f = open(sys.argv[1], 'rb'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(1.0); t = pathlib.Path(sys.argv[2]); t.mkdir(); "
        "(t / 'config.json').write_text('{}')"), str(gguf), str(target)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert LocalGGUFLLMResource._converted_folder(tmp_path, "m.gguf", isolate=False) == target
    assert log == [] and holder.wait() == 0      # waited for the holder's copy; converted nothing itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", target.name]   # and left no lock file


def test_the_conversion_started_in_advance_skips_what_is_no_gguf_and_fails_cleanly_in_its_child(tmp_path):
    from resources.llm_local import start_conversion

    assert start_conversion(str(tmp_path)) is None                       # a transformers folder: nothing to convert
    assert start_conversion(str(tmp_path / "missing.gguf")) is None      # the stage that loads it says why
    (tmp_path / "m.gguf").write_bytes(b"GGUF not really")                # the child's transformers cannot read it
    child = start_conversion(str(tmp_path / "m.gguf"), dtype="float32", device="cpu")
    deadline = time.monotonic() + 300
    while child.returncode is None and time.monotonic() < deadline:   # reaped by its own thread: no zombie left
        time.sleep(0.1)
    assert child.returncode is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]      # no half-written copy for the stage to trust


def test_a_holder_that_never_lets_go_is_waited_for_only_until_the_timeout(tmp_path):
    import subprocess
    import sys

    from resources.llm_local import converting

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'rb'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), str(gguf)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with converting(gguf, timeout_s=0.5):
            waited = time.monotonic() - t0
        assert 0.5 <= waited < 30 and holder.poll() is None    # gave up waiting; the holder still holds it
    finally:
        holder.kill()
        holder.wait()
