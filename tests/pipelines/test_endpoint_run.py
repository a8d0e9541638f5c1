"""Tier 3 against an endpoint: the whole graph on the tiny corpus with the OpenAI-compatible LLM resource, talking
to the fault-injecting endpoint (tests/fake_endpoint.py). Each prompt draws a fault schedule from its hash:
most answer at once; others first get a 429, a 500, a 503, a hang past the timeout, a dropped connection, two
HTML pages, schema-violating JSON once (instructor's re-ask mends it) or twice (it does not: the answer is
cached as unusable, and a later call of the same key asks again), or a 429 then an HTML page; one in 40 fails
for good. The run must complete, count what it lost, never pay for a prompt's good answer twice, and on a
rerun get every answer it lacked except the ones that are down for good."""
import hashlib
import re

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from resources.embedder import EmbedderResource
from resources.llm import OpenAICompatibleLLMResource
from tests.fake_endpoint import FaultyChatEndpoint
from tests.pipelines.test_definitions import TINY_RUN_CONFIG

DOWN = ["500"] * 20  # more than any retry budget: the call fails, is counted and skipped
SCHEMA_TWICE = ["schema", "schema"]  # beats instructor's one re-ask: an unusable answer, asked again next time
SCHEDULES = [["429"], ["500"], ["503"], ["hang"], ["drop"], ["html", "html"], ["schema"], SCHEMA_TWICE,
             ["429", "html"]] + [[]] * 7
LLM_ASSETS = ("synthetic_queries", "relevance_labels", "judge_agreement", "evaluation_report")  # every LLM caller


def _hash(prompt: str) -> int:
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16)


def fault_plan(prompt: str) -> list[str]:
    return DOWN if _hash(prompt) % 40 == 0 else SCHEDULES[_hash(prompt) % len(SCHEDULES)]


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3]


def content_queries(passage: str, n: int) -> list[str]:
    words = list(dict.fromkeys(_words(passage))) or ["nothing"]
    return [f"how does {' '.join(words[i % len(words):][:3])} behave" for i in range(n)]


def overlap_grade(query: str, passage: str) -> int:
    q, p = set(_words(query)), set(_words(passage))
    share = len(q & p) / max(1, len(q))
    return 3 if share >= 0.75 else 2 if share >= 0.5 else int(share > 0)


@pytest.fixture(scope="module")
def endpoint_run(tmp_path_factory, tiny_beir, tiny_model_path):
    endpoint = FaultyChatEndpoint(plan=fault_plan, queries=content_queries, grade=overlap_grade, hang_s=0.6,
                                  retry_after=0)
    home = tmp_path_factory.mktemp("endpoint_home")
    llm = OpenAICompatibleLLMResource(base_url=endpoint.url, model="fake-chat", api_key="sk-test",
                                      cache_path=str(home / "llm_cache.sqlite"),
                                      timeout_s=0.3,         # the hang (0.6 s) outlasts it
                                      max_retries=2,         # enough for the worst transient schedule (429, html)
                                      retry_backoff_s=0.01, max_backoff_s=0.05)   # seconds, not minutes, of waiting
    defs = build_definitions(home, llm=llm, embedder=EmbedderResource(model=tiny_model_path))
    config = {"ops": {**TINY_RUN_CONFIG["ops"], "corpus": {"config": {"path": str(tiny_beir)}}}}
    result = defs.resolve_job_def("flywheel_job").execute_in_process(run_config=config,
                                                                     instance=dg.DagsterInstance.ephemeral())
    yield endpoint, defs, config, result
    endpoint.close()


def _metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_whole_run_through_a_faulty_endpoint_completes_and_pays_each_answer_once(endpoint_run):
    endpoint, _, _, result = endpoint_run
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    for fault in ("429", "500", "503", "hang", "drop", "html", "schema"):
        assert endpoint.served[fault] > 0, fault            # every fault was met, so the run proves something
    assert endpoint.paid_twice() == []                      # no prompt was given a good answer twice
    for prompt in endpoint.requests:
        plan = fault_plan(prompt)
        if plan is DOWN:
            assert endpoint.accepted[prompt] == 0
        elif plan is not SCHEMA_TWICE:                      # transient faults, an HTML page included, are outlived
            assert endpoint.accepted[prompt] == 1, (plan, prompt[:80])

    queries, labels = _metadata(result, "synthetic_queries"), _metadata(result, "relevance_labels")
    assert queries["n_queries"] > 0 and labels["n_labels"] > 0
    assert queries["llm_failures"] + labels["llm_failures"] > 0   # the prompts that are down: counted, skipped,
    assert labels["llm_failure_share"] <= 0.5                    # and too few to stop a stage
    assert queries["llm_parse_failures"] + labels["llm_parse_failures"] > 0   # the twice-broken answers
    assert result.output_for_node("evaluation_report")["reranker_verdict"]["reason"]
    agreement = result.output_for_node("judge_agreement")
    assert agreement and all("pairs_dropped" in r for r in agreement.values())


def test_a_rerun_pays_only_for_what_it_lacks_and_gets_it(endpoint_run):
    """Every LLM stage again: good answers come from the cache; the calls that failed and the answers that
    did not parse are asked again, and now every prompt of the first run that is not down has exactly one
    good answer."""
    endpoint, defs, config, _ = endpoint_run
    before = dict(endpoint.requests)
    lacking = {p for p in endpoint.requests if fault_plan(p) is SCHEMA_TWICE and not endpoint.accepted[p]}
    assert lacking                                          # some broken answers were left for the rerun
    again = defs.resolve_job_def("flywheel_job").execute_in_process(
        run_config={"ops": {k: v for k, v in config["ops"].items() if k in LLM_ASSETS}},
        instance=dg.DagsterInstance.ephemeral(), asset_selection=[dg.AssetKey(a) for a in LLM_ASSETS])
    assert again.success
    asked_again = {p for p, n in before.items() if endpoint.requests[p] > n}
    assert lacking <= asked_again and all(fault_plan(p) is DOWN for p in asked_again - lacking)
    assert any(fault_plan(p) is DOWN for p in asked_again)   # failures are not cached: asked again too
    assert all(endpoint.accepted[p] == (0 if fault_plan(p) is DOWN else 1) for p in before)
    assert endpoint.paid_twice() == []       # nor for the pairs first met now (the recovered queries' judgments)
    meta = [_metadata(again, a) for a in ("synthetic_queries", "relevance_labels")]
    assert sum(m["llm_parse_retries"] for m in meta) > 0 and all(m["llm_cache_hits"] > 0 for m in meta)
