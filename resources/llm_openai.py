"""The online LLM backend: any OpenAI-compatible chat endpoint, structured output through instructor.

What counts as transient (retried with backoff, never cached): timeouts, dropped connections, HTTP 408, 409,
429 and 5xx, and a 200 whose body is not JSON. The last is what a proxy or load balancer in front of the
model sends when the model is down (an HTML error page with status 200); openai hands such a body back as
a string and instructor reads it as an invalid answer, re-asks, and gives up, so without the check below a
gateway outage was recorded as the model's final answer. A 429's Retry-After is honoured, up to
`max_backoff_s`.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from resources import prompts
from resources.llm_base import CallStats, JudgeRequest, LLMResource, _Call
from resources.llm_cache import cache_key

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- remote


class WrittenQueries(BaseModel):
    queries: list[str]


class RelevanceGrade(BaseModel):
    grade: int = Field(ge=0, le=3)
    reason: str = ""


class DocumentSummary(BaseModel):
    summary: str


class TopicName(BaseModel):
    name: str


class NonJSONAnswer(Exception):
    """The endpoint said 200 but sent something that is not JSON (e.g. a gateway's HTML error page)."""


def require_json(response: Any) -> None:
    """httpx response hook: raise NonJSONAnswer for a 200 whose body does not parse as JSON."""
    if response.status_code != 200:
        return
    response.read()
    try:
        json.loads(response.content)
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise NonJSONAnswer(f"HTTP 200 with a {kind} body that is not JSON (a gateway error page?): "
                            f"{response.text[:160]!r}") from None


def retry_after_seconds(headers: Any) -> float | None:
    """The wait a 429/503 asks for: retry-after-ms, else Retry-After in seconds (an HTTP date is not read)."""
    lower = {str(k).lower(): v for k, v in dict(headers or {}).items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(lower[name]) * scale)
        except (KeyError, TypeError, ValueError):
            continue
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: timeouts, connection errors, HTTP 408/409/429 and 5xx, a 200 that is not JSON."""
    import openai

    if isinstance(exc, NonJSONAnswer):
        return True
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def transient_retrying(max_retries: int, retry_backoff_s: float, max_backoff_s: float):
    """A tenacity.Retrying that retries `is_transient` errors up to `max_retries` times after the first try,
    waiting retry_backoff_s, doubling per retry up to max_backoff_s, or what a 429/503's Retry-After asks
    (capped at max_backoff_s) when that is longer. The chat and the embeddings clients share it."""
    import tenacity

    exponential = tenacity.wait_exponential(multiplier=retry_backoff_s, max=max_backoff_s)

    def wait(state: Any) -> float:
        asked = retry_after_seconds(getattr(getattr(state.outcome.exception(), "response", None), "headers", None))
        return exponential(state) if asked is None else min(max_backoff_s, max(asked, exponential(state)))

    return tenacity.Retrying(stop=tenacity.stop_after_attempt(max_retries + 1), wait=wait,
                             retry=tenacity.retry_if_exception(is_transient), reraise=True)


MODES = ("json", "json_schema", "tools", "md_json")  # response_format json_object; response_format json_schema;
#   a forced tool call; a ```json block asked for in the prompt (for servers that honour neither)


class OpenAICompatibleLLMResource(LLMResource):
    """Any OpenAI-compatible chat endpoint, with JSON output validated by instructor."""

    base_url: str = Field(description="e.g. http://localhost:8000/v1")
    model: str
    api_key: str = "EMPTY"  # pass dg.EnvVar("FLYWHEEL_LLM_API_KEY")
    max_concurrency: int = 16  # calls in flight: a remote call waits ~0.2-2 s on generation, not on us, so 16 threads
    #   keep 16x the calls of a sequential loop moving (bench/throughput.py: 200 ms a call) for little CPU; a 429's
    #   Retry-After slows every thread down, so an endpoint with a lower limit throttles us rather than failing
    max_retries: int = 5  # retries after the first attempt, on timeouts, connection errors, 429 and 5xx
    timeout_s: float = 60.0
    retry_backoff_s: float = 1.0  # the first wait; it doubles per retry, up to max_backoff_s
    max_backoff_s: float = 30.0  # the longest wait between two tries, a 429's Retry-After included
    parse_retries: int = 1  # instructor re-asks this many times after an answer that fails validation
    query_temperature: float = 0.7  # varied queries
    judge_temperature: float = 0.0  # repeatable grades
    mode: str = "json"  # instructor mode, one of MODES: what structured output the endpoint honours (CLI --llm-mode)

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

    def _secrets(self) -> tuple[str, ...]:
        return (self.api_key,)

    def get_client(self) -> Any:
        if self._client is None:
            import instructor
            import openai

            from resources.scrub import ScrubbingHttpClient

            Mode = instructor.Mode
            modes = dict(zip(MODES, (Mode.JSON, Mode.JSON_SCHEMA, Mode.TOOLS, Mode.MD_JSON)))
            if self.mode not in modes:
                raise ValueError(f"Unknown mode {self.mode!r}: use one of {', '.join(modes)} (--llm-mode, "
                                 "FLYWHEEL_LLM_MODE).")
            raw_client = openai.OpenAI(  # retries are ours (tenacity), so the client makes none of its own
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=0,
                # error bodies that echo the key are scrubbed; a 200 that is not JSON raises (transient)
                http_client=ScrubbingHttpClient(self._secrets(), event_hooks={"response": [require_json]}),
            )
            self._client = instructor.from_openai(raw_client, mode=modes[self.mode])
        return self._client

    def _complete(self, response_model: type[BaseModel], messages: list[dict], temperature: float) -> str:
        """The raw text of one structured completion, retried with backoff on transient errors."""
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
                    raise _transport_error(exc.__cause__) from None  # so the retry policy can see it
                raise

        return transient_retrying(self.max_retries, self.retry_backoff_s, self.max_backoff_s)(once)

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
            messages = prompts.build_chat_query_messages(req.text, req.style, count, self.max_passage_chars,
                                                         req.examples)
            return self._complete(WrittenQueries, messages, self.query_temperature)

        self._run_parallel(calls, work, emit, fail)

    def _run_judge_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        def work(call: _Call) -> str:
            req: JudgeRequest = call.payload
            messages = prompts.build_chat_judge_messages(req.query, req.passage, self.max_passage_chars)
            return self._complete(RelevanceGrade, messages, self.judge_temperature)

        self._run_parallel(calls, work, emit, fail)

    def _summary_prompt_version(self) -> str:
        return prompts.CHAT_SUMMARY_PROMPT_VERSION

    def _summary_signature(self) -> str:
        return f"t{self.judge_temperature}"

    def _parse_summary(self, raw: str) -> str | None:
        return prompts.parse_summary(raw, chat=True)

    def _run_summary_calls(self, calls: list[_Call], emit: Callable, fail: Callable) -> None:
        def work(call: _Call) -> str:
            messages = prompts.build_chat_summary_messages(call.payload[1], self.max_passage_chars)
            return self._complete(DocumentSummary, messages, self.judge_temperature)   # repeatable

        self._run_parallel(calls, work, emit, fail)

    def name_topics(self, groups: list[list[str]]) -> tuple[list[str | None], CallStats]:
        """One cached chat call per group of queries (keyed by the queries): a name, or None if unreadable/failed."""
        stats, version = CallStats(), prompts.CHAT_TOPIC_PROMPT_VERSION
        calls = [_Call(cache_key("topic", version, self.model, self._judge_signature(), *group), group)
                 for group in groups]

        def run(todo: list[_Call], emit: Callable, fail: Callable) -> None:
            def work(call: _Call) -> str:
                return self._complete(TopicName, prompts.build_chat_topic_messages(call.payload),
                                      self.judge_temperature)

            self._run_parallel(todo, work, emit, fail)

        names, _ = self._run_cached("topic", version, calls, run, stats, None,
                                    lambda call, raw: prompts.parse_topic_name(raw))
        return [names.get(call.key) for call in calls], stats


def _transport_error(exc: Exception) -> Exception:
    """The error to retry on: a NonJSONAnswer raised in the response hook reaches us wrapped by openai."""
    return exc.__cause__ if isinstance(exc.__cause__, NonJSONAnswer) else exc


def _completion_text(completion: Any) -> str:
    """The message content of a chat completion, or its first tool call's arguments."""
    if completion is None or not getattr(completion, "choices", None):
        return ""
    message = completion.choices[0].message
    if getattr(message, "tool_calls", None):
        return message.tool_calls[0].function.arguments or ""
    return message.content or ""
