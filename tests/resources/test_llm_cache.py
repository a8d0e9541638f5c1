"""The sqlite response cache, alone and as the LLM resources use it (with a counting fake backend)."""

import sqlite3
import threading

import pytest
from pydantic import PrivateAttr

from resources import prompts
from resources.llm import CallStats, JudgeRequest, LLMResource, QueryRequest, ql_grades
from resources.llm_cache import LLMCache, cache_key, text_hash


class CountingLLMResource(LLMResource):
    """A fake backend: writes "<style> query <i> about <chunk>", scores every pair -1.5; counts its calls."""

    model_name: str = "fake-model"
    crash_after: int = -1  # raise after this many calls of a run (-1: never)
    raw_override: str | None = None  # return this raw text instead (e.g. unparseable)

    _seen: list = PrivateAttr(default_factory=list)

    def model_id(self) -> str:
        return self.model_name

    def _query_prompt_version(self) -> str:
        return prompts.FEWSHOT_QUERY_PROMPT_VERSION  # read at call time, so a test can bump it

    def _judge_prompt_version(self) -> str:
        return prompts.QL_JUDGE_PROMPT_VERSION

    def _judge_name(self) -> str:
        return "fake"

    def _run_query_calls(self, calls, emit, fail):
        for i, call in enumerate(calls):
            if i == self.crash_after:
                raise RuntimeError("backend died mid-batch")
            req, index, _ = call.payload
            self._seen.append(call.key)
            raw = f"Query: {req.style} query {index} about {req.chunk_id}\nmore"
            emit(call, self.raw_override if self.raw_override is not None else raw)

    def _run_judge_calls(self, calls, emit, fail):
        for call in calls:
            self._seen.append(call.key)
            emit(call, "-1.5")

    def _parse_judge(self, raw):
        return float(raw), None

    def _grades(self, requests, scores):
        return ql_grades(requests, scores, [0.5, 1.0], [-3.0, -2.0, -1.0])


def _requests(k: int = 3) -> list[QueryRequest]:
    return [QueryRequest(f"c{i}", f"passage number {i} about wings and flow", "question", n=2) for i in range(k)]


# ------------------------------------------------------------------------------------------ the cache


def test_put_then_get_many_returns_only_present_keys(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    cache.put("k1", "one", kind="query", model="m", prompt_version="v")
    cache.put("k2", "two", kind="judge", model="m", prompt_version="v")
    assert cache.get_many(["k1", "k2", "k3"]) == {"k1": "one", "k2": "two"}
    cache.put("k1", "uno", kind="query", model="m", prompt_version="v")  # overwrite
    assert cache.get("k1") == "uno" and cache.get("nope") is None
    assert len(cache) == 2


def test_rows_hold_the_documented_columns(tmp_path):
    path = tmp_path / "c.sqlite"
    LLMCache(path).put("k", "raw text", kind="judge", model="gemma", prompt_version="ql-v1")
    columns = "key, kind, model, prompt_version, response, created_at, attempts"
    row = sqlite3.connect(path).execute(f"SELECT {columns} FROM llm_responses").fetchone()
    assert row[:5] == ("k", "judge", "gemma", "ql-v1", "raw text") and row[5] > 1.6e9 and row[6] == 1


def test_get_many_handles_more_keys_than_sqlite_binds(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    for i in range(1200):
        cache.put(f"k{i}", str(i), kind="query", model="m", prompt_version="v")
    found = cache.get_many([f"k{i}" for i in range(1300)])
    assert len(found) == 1200 and found["k1199"] == "1199"


def test_responses_survive_reopening(tmp_path):
    LLMCache(tmp_path / "c.sqlite").put("k", "kept", kind="query", model="m", prompt_version="v")
    assert LLMCache(tmp_path / "c.sqlite").get("k") == "kept"


def test_empty_path_caches_nothing():
    cache = LLMCache("")
    cache.put("k", "v", kind="query", model="m", prompt_version="v")
    assert not cache.enabled and cache.get_many(["k"]) == {} and len(cache) == 0


def test_concurrent_puts_from_threads_all_land(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")

    def writer(t: int) -> None:
        for i in range(50):
            cache.put(f"{t}-{i}", "x", kind="query", model="m", prompt_version="v")
            cache.get_many([f"{t}-{i}"])

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) == 400


def test_cache_key_depends_on_every_part_and_cannot_be_shifted():
    base = cache_key("query", "v1", "m", "chunk", "hash", "question", "0+1")
    assert base == cache_key("query", "v1", "m", "chunk", "hash", "question", "0+1")
    variants = [
        cache_key("judge", "v1", "m", "chunk", "hash", "question", "0+1"),
        cache_key("query", "v2", "m", "chunk", "hash", "question", "0+1"),
        cache_key("query", "v1", "m2", "chunk", "hash", "question", "0+1"),
        cache_key("query", "v1", "m", "chunk2", "hash", "question", "0+1"),
        cache_key("query", "v1", "m", "chunk", "hash", "claim", "0+1"),
        cache_key("query", "v1", "m", "chunk", "hash", "question", "1+1"),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
    assert cache_key("k", "v", "m", "a b", "c") != cache_key("k", "v", "m", "a", "b c")
    assert text_hash("a") != text_hash("b") and len(text_hash("a")) == 64


# ------------------------------------------------------------------------------ the cache in a resource


def test_second_run_is_served_from_the_cache(tmp_path):
    llm = CountingLLMResource(cache_path=str(tmp_path / "c.sqlite"))
    first, s1 = llm.write_queries(_requests())
    assert (s1.calls, s1.cache_hits) == (6, 0)
    assert [q.text for q in first[:2]] == ["question query 0 about c0", "question query 1 about c0"]
    assert not any(q.cached for q in first)

    again = CountingLLMResource(cache_path=str(tmp_path / "c.sqlite"))  # a new run: fresh resource
    second, s2 = again.write_queries(_requests())
    assert (s2.calls, s2.cache_hits) == (0, 6)
    assert again._seen == []
    assert [q.text for q in second] == [q.text for q in first]
    assert all(q.cached for q in second)


def test_a_new_prompt_version_misses_the_cache(tmp_path, monkeypatch):
    CountingLLMResource(cache_path=str(tmp_path / "c.sqlite")).write_queries(_requests())
    monkeypatch.setattr(prompts, "FEWSHOT_QUERY_PROMPT_VERSION", "fewshot-query-vNEXT")
    queries, stats = CountingLLMResource(cache_path=str(tmp_path / "c.sqlite")).write_queries(_requests())
    assert (stats.calls, stats.cache_hits) == (6, 0)
    assert {q.prompt_version for q in queries} == {"fewshot-query-vNEXT"}


def test_another_model_misses_the_cache(tmp_path):
    CountingLLMResource(cache_path=str(tmp_path / "c.sqlite")).write_queries(_requests())
    other = CountingLLMResource(cache_path=str(tmp_path / "c.sqlite"), model_name="other-model")
    queries, stats = other.write_queries(_requests())
    assert (stats.calls, stats.cache_hits) == (6, 0)
    assert {q.model for q in queries} == {"other-model"}


def test_a_changed_passage_or_a_larger_n_only_pays_for_the_new_calls(tmp_path):
    path = str(tmp_path / "c.sqlite")
    CountingLLMResource(cache_path=path).write_queries(_requests())
    changed = [QueryRequest("c0", "a rewritten passage about wings", "question", n=3)] + _requests()[1:]
    _, stats = CountingLLMResource(cache_path=path).write_queries(changed)
    assert (stats.calls, stats.cache_hits) == (3, 4)  # c0's text changed: 3 new; c1, c2 cached


def test_a_crash_mid_batch_keeps_what_was_done(tmp_path):
    path = str(tmp_path / "c.sqlite")
    crashing = CountingLLMResource(cache_path=path, crash_after=4)
    with pytest.raises(RuntimeError, match="mid-batch"):
        crashing.write_queries(_requests())
    assert len(LLMCache(path)) == 4  # committed: visible through another connection

    rerun = CountingLLMResource(cache_path=path)
    queries, stats = rerun.write_queries(_requests())
    assert (stats.calls, stats.cache_hits) == (2, 4)
    assert len(queries) == 6


def test_raw_responses_are_stored_before_parsing_and_an_unparseable_one_is_asked_again(tmp_path):
    path = str(tmp_path / "c.sqlite")
    queries, stats = CountingLLMResource(cache_path=path, raw_override="   \n").write_queries(_requests(1))
    assert queries == [] and stats.parse_failures == 2
    stored = sqlite3.connect(path).execute("SELECT response, attempts FROM llm_responses").fetchall()
    assert stored == [("   \n", 1), ("   \n", 1)]  # the unparseable raw answers were kept, as one attempt each
    rerun = CountingLLMResource(cache_path=path)  # the endpoint answers well now
    queries, again = rerun.write_queries(_requests(1))
    assert (again.calls, again.cache_hits, again.parse_retries, again.parse_failures) == (2, 0, 2, 0)
    assert len(queries) == 2  # not stuck on the bad answers until the cache is deleted
    _, third = CountingLLMResource(cache_path=path, raw_override="never used").write_queries(_requests(1))
    assert (third.calls, third.cache_hits, third.parse_retries) == (0, 2, 0)


def test_an_unparseable_answer_is_asked_again_at_most_parse_attempts_times(tmp_path):
    path = str(tmp_path / "c.sqlite")
    seen = []
    for _ in range(4):
        llm = CountingLLMResource(cache_path=path, raw_override="", parse_attempts=3)
        _, stats = llm.write_queries(_requests(1))
        seen.append((stats.calls, stats.cache_hits, stats.parse_retries, stats.parse_failures))
    assert seen == [(2, 0, 0, 2), (2, 0, 2, 2), (2, 0, 2, 2), (0, 2, 0, 2)]  # 3 answers paid for, then final
    assert sqlite3.connect(path).execute("SELECT DISTINCT attempts FROM llm_responses").fetchall() == [(3,)]


def test_an_older_cache_without_attempts_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE llm_responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL, "
                 "prompt_version TEXT NOT NULL, response TEXT NOT NULL, created_at REAL NOT NULL)")
    conn.execute("INSERT INTO llm_responses VALUES ('k', 'judge', 'm', 'v', 'raw', 1.0)")
    conn.commit()
    conn.close()
    cache = LLMCache(path)
    assert cache.get_entries(["k", "missing"]) == {"k": ("raw", 1)}
    cache.put("k", "new", kind="judge", model="m", prompt_version="v", attempts=2)
    assert LLMCache(path).get_entries(["k"]) == {"k": ("new", 2)} and LLMCache(path).get("k") == "new"


def test_judge_scores_are_cached_too(tmp_path):
    path = str(tmp_path / "c.sqlite")
    reqs = [JudgeRequest("what about wings", f"c{i}", f"passage {i}") for i in range(4)]
    first, s1 = CountingLLMResource(cache_path=path).judge(reqs)
    second, s2 = CountingLLMResource(cache_path=path).judge(reqs)
    assert (s1.calls, s2.calls, s2.cache_hits) == (4, 0, 4)
    assert [j.score for j in second] == [j.score for j in first] == [-1.5] * 4
    assert all(j.cached for j in second) and not any(j.cached for j in first)


def test_progress_counts_cache_hits_and_new_calls(tmp_path):
    path = str(tmp_path / "c.sqlite")
    CountingLLMResource(cache_path=path).write_queries(_requests(1))
    seen = []
    CountingLLMResource(cache_path=path).write_queries(_requests(2), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 4), (3, 4), (4, 4)]


def test_the_abstract_base_says_it_is_abstract():
    with pytest.raises(NotImplementedError):
        LLMResource(cache_path="").write_queries(_requests(1))


def test_call_stats_keep_a_few_failure_examples():
    stats = CallStats()
    for i in range(9):
        stats.add_failure(TimeoutError(f"slow {i}"))
    assert stats.failures == 9 and stats.failure_examples[0] == "TimeoutError: slow 0"
    assert len(stats.failure_examples) == 5


def test_a_batch_that_mostly_failed_stops_its_stage_with_what_to_do():
    from resources.llm import TooManyLLMFailures, check_failure_share

    stats = CallStats(requested=10, calls=10, failures=4, parse_failures=2)
    stats.add_failure(TimeoutError("slow"))
    assert stats.lost == 7 and stats.failure_share == 0.7
    with pytest.raises(TooManyLLMFailures) as err:
        check_failure_share(stats, "relevance_labels", 0.5)
    message = str(err.value)
    assert message.startswith("relevance_labels: 7 of 10 LLM calls gave nothing usable (5 failed after retries, "
                              "2 unreadable answers), 70% > max_failure_share 50%")
    assert "The 3 usable answers are in the LLM cache: rerun" in message and "TimeoutError: slow" in message
    assert "--llm-max-failure-share" in message
    check_failure_share(stats, "relevance_labels", 0.7)                          # at the limit: goes on
    check_failure_share(CallStats(requested=4, cache_hits=4), "s", 0.0)          # nothing lost
    check_failure_share(CallStats(), "s", 0.0)                                   # nothing asked
