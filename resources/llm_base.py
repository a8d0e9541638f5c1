"""The LLM resources' shared types and base class: requests, answers, call statistics, the failure-share
rule and `LLMResource`, with no backend in it. The backends (resources/llm_local.py, resources/llm_openai.py)
import from here; resources/llm.py, the one import for callers, re-exports both (see its docstring).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from resources import prompts
from resources.llm_cache import LLMCache, cache_key, text_hash
from resources.prompts import ALL_STYLES
from resources.scrub import scrub_secrets

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_MAX_FAILURE_EXAMPLES = 5

@dataclass(frozen=True)
class QueryRequest:
    chunk_id: str  # stable content hash of the chunk text
    text: str  # the passage
    style: str  # one of QUERY_STYLES
    n: int = 1  # how many queries of this style to write for this chunk
    examples: tuple[tuple[str, str], ...] = ()  # logged (passage, query) few-shot examples; () = the generic ones


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


@dataclass(frozen=True)
class Summary:
    doc_id: str
    text: str       # the summary
    model: str
    prompt_version: str
    cached: bool


@dataclass
class CallStats:
    """What a batch of calls cost and lost; assets put it in their metadata."""

    requested: int = 0  # distinct calls the batch needed, cached or not
    calls: int = 0  # calls sent to the backend (one per generated query locally, one per request remotely)
    cache_hits: int = 0  # calls answered from the cache instead
    failures: int = 0  # calls that failed after all retries (skipped)
    parse_failures: int = 0  # calls whose answer gave no query / grade / score (skipped)
    parse_retries: int = 0  # calls sent again because their cached answer did not parse (within parse_attempts)
    filtered: int = 0  # parsed queries dropped by prompts.filter_queries
    failure_examples: list[str] = field(default_factory=list)  # a few error messages
    filter_reasons: dict[str, int] = field(default_factory=dict)  # filter_queries' reasons, summed

    @property
    def lost(self) -> int:
        """Calls that gave nothing usable: failed, or answered with something unreadable."""
        return self.failures + self.parse_failures

    @property
    def failure_share(self) -> float:
        return self.lost / self.requested if self.requested else 0.0

    def add_failure(self, exc: BaseException, secrets: tuple[str, ...] = ()) -> None:
        self.failures += 1
        if len(self.failure_examples) < _MAX_FAILURE_EXAMPLES:
            self.failure_examples.append(failure_text(exc, secrets)[:300])   # scrubbed whole, then cut


class TooManyLLMFailures(RuntimeError):
    """Most of a stage's LLM calls gave nothing usable: the stage stops rather than go on with what is left."""


def check_failure_share(stats: CallStats, stage: str, max_share: float) -> None:
    """Raise TooManyLLMFailures when more than `max_share` of a batch's distinct calls gave nothing usable.

    Everything that was answered is already in the cache, so a rerun once the endpoint is healthy pays only
    for the calls that were lost."""
    if stats.requested == 0 or stats.failure_share <= max_share:
        return
    errors = "; ".join(stats.failure_examples[:3]) or "none recorded"
    raise TooManyLLMFailures(
        f"{stage}: {stats.lost} of {stats.requested} LLM calls gave nothing usable ({stats.failures} failed after "
        f"retries, {stats.parse_failures} unreadable answers), {stats.failure_share:.0%} > max_failure_share "
        f"{max_share:.0%}, so the stage stops instead of going on with what is left. The "
        f"{stats.requested - stats.lost} usable answers are in the LLM cache: rerun once the endpoint is healthy "
        f"and only the lost calls are paid for. Errors: {errors}. To accept more losses, raise the llm "
        f"resource's max_failure_share (--llm-max-failure-share)."
    )


@dataclass(frozen=True)
class _Call:
    key: str  # cache key
    payload: Any  # (QueryRequest, index, count) for a query call, JudgeRequest for a judge call


# ---------------------------------------------------------------------------------------------- helpers


def failure_text(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """What a failed call's error says, with the key and anything token-like scrubbed: it goes into logs and
    metadata, and some endpoints echo the request's Authorization header in their errors."""
    return scrub_secrets(f"{type(exc).__name__}: {exc}", secrets)


# ------------------------------------------------------------------------------------------------- base


class LLMResource(dg.ConfigurableResource):
    """Writes synthetic queries and judges relevance; caches every raw response. Abstract: use a subclass."""

    cache_path: str = Field(description='sqlite file of raw responses; "" = no cache (tests only)')
    max_passage_chars: int = Field(
        default=prompts.DEFAULT_MAX_PASSAGE_CHARS, description="passages are cut to this many characters in prompts"
    )
    max_failure_share: float = Field(
        default=0.5, description="a stage stops when more than this share of its LLM calls gave nothing usable"
    )
    parse_attempts: int = Field(
        default=3, description="a call whose cached answer does not parse is asked again on later runs, up to this "
        "many answers in all (1: never ask again)"
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

    def _summary_prompt_version(self) -> str:
        raise NotImplementedError

    def _summary_signature(self) -> str:
        """Settings that change what a summary call returns: part of its cache key."""
        return ""

    def _run_summary_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        """Call emit(call, raw_text) or fail(call, exc) once for each call; a call's payload is (doc id, text)."""
        raise NotImplementedError

    def _parse_summary(self, raw: str) -> str | None:
        return prompts.parse_summary(raw)

    def _secrets(self) -> tuple[str, ...]:
        """Values that must never be recorded (an endpoint's key): scrubbed from every failure's text."""
        return ()

    def release(self) -> None:
        """Free what the backend holds in memory (a local model's weights); the next call loads it again. Each
        LLM stage calls it when its calls are done, so the training stages that follow do not carry the
        writer's weights (an endpoint holds nothing: a no-op)."""

    # -- shared machinery
    def get_cache(self) -> LLMCache:
        if self._cache is None:
            self._cache = LLMCache(self.cache_path)
        return self._cache

    def _run_cached(
        self, kind: str, version: str, calls: list[_Call], runner: Callable, stats: CallStats,
        progress: Progress | None, parse: Callable[[_Call, str], Any],
    ) -> tuple[dict[str, Any], set[str]]:
        """Parsed answers by key (only those that parse), from the cache or the backend; and the cache hits.

        A cached answer that does not parse is not done: it is asked again, until the key has had
        `parse_attempts` answers; after that it stays a parse failure without further calls."""
        cache, model = self.get_cache(), self.model_id()
        unique = list({c.key: c for c in calls}.values())
        stats.requested += len(unique)
        entries = cache.get_entries(c.key for c in unique)
        parsed: dict[str, Any] = {}
        answered: set[str] = set()  # keys with an answer, usable or not
        hits: set[str] = set()
        attempts: dict[str, int] = {}
        todo = []
        for call in unique:
            if call.key in entries:
                raw, n = entries[call.key]
                value = parse(call, raw)
                if value is not None or n >= self.parse_attempts:
                    hits.add(call.key)
                    answered.add(call.key)
                    if value is not None:
                        parsed[call.key] = value
                    continue
                attempts[call.key] = n
                stats.parse_retries += 1
            todo.append(call)
        stats.cache_hits += len(hits)
        total, done = len(unique), len(hits)
        if progress:
            progress(done, total)

        def emit(call: _Call, raw: str) -> None:
            nonlocal done
            cache.put(call.key, raw, kind=kind, model=model, prompt_version=version,  # before any parsing
                      attempts=attempts.get(call.key, 0) + 1)
            value = parse(call, raw)
            answered.add(call.key)
            if value is not None:
                parsed[call.key] = value
            stats.calls += 1
            done += 1
            if progress:
                progress(done, total)

        def fail(call: _Call, exc: BaseException) -> None:
            nonlocal done
            logger.warning("%s call failed: %s", kind, failure_text(exc, self._secrets()))
            stats.calls += 1
            stats.add_failure(exc, self._secrets())
            done += 1
            if progress:
                progress(done, total)

        if todo:
            runner(todo, emit, fail)
        stats.parse_failures += len(answered - set(parsed))
        return parsed, hits

    def _query_calls(self, req: QueryRequest, version: str, model: str) -> list[_Call]:
        if req.style not in ALL_STYLES:
            raise ValueError(
                f"Unknown query style {req.style!r} for chunk {req.chunk_id}: use one of {', '.join(ALL_STYLES)}."
            )
        version = prompts.versioned(version, req.examples)
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
        parse = lambda call, raw: self._parse_queries(raw, call.payload[2]) or None  # noqa: E731
        parsed, hits = self._run_cached("query", version, all_calls, self._run_query_calls, stats, progress, parse)

        results: list[GeneratedQuery] = []
        reasons: Counter = Counter()
        for req, calls in zip(requests, per_request):
            candidates: list[str] = []
            cached: dict[str, bool] = {}
            for call in calls:
                if call.key not in parsed:
                    continue  # failed or unreadable: already counted
                for text in parsed[call.key][: call.payload[2]]:
                    candidates.append(text)
                    cached.setdefault(" ".join(text.split()), call.key in hits)
            kept, why = prompts.filter_queries(candidates, req.text, req.style, req.examples)
            reasons.update(why)
            used = prompts.versioned(version, req.examples)
            results += [GeneratedQuery(req.chunk_id, req.style, q, model, used, cached.get(q, False)) for q in kept]
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
        by_key, hits = self._run_cached("judge", version, calls, self._run_judge_calls, stats, progress,
                                        lambda call, raw: self._parse_judge(raw))
        parsed = [by_key.get(call.key) for call in calls]
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

    def summarize(self, documents: list[tuple[str, str]], progress: Progress | None = None
                  ) -> tuple[list[Summary], CallStats]:
        """A short summary of each (doc id, text) that could be summarised, in input order; failures and answers
        that give no summary are counted, not raised. Keyed by the text the prompt holds: an unchanged document
        costs nothing on the next run."""
        stats, version, model = CallStats(), self._summary_prompt_version(), self.model_id()
        calls = []
        for doc_id, text in documents:
            passage_hash = text_hash(prompts.truncate_passage(text, self.max_passage_chars))
            calls.append(_Call(cache_key("summary", version, model, passage_hash, self._summary_signature()),
                               (doc_id, text)))
        by_key, hits = self._run_cached("summary", version, calls, self._run_summary_calls, stats, progress,
                                        lambda call, raw: self._parse_summary(raw))
        return [Summary(call.payload[0], by_key[call.key], model, version, call.key in hits)
                for call in calls if call.key in by_key], stats

    def name_topics(self, groups: list[list[str]]) -> tuple[list[str | None], CallStats]:
        """A short name for each group of user queries, where the backend can write one. Not available by default
        (the local base model cannot follow the instruction): None for each group, and no call is made."""
        return [None] * len(groups), CallStats()
