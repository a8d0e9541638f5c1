import pandas as pd
import pytest

from assets.queries import QueryGenConfig, plan_requests, queries_frame
from resources.llm import GeneratedQuery

NO_LOG = {"logged_queries": pd.DataFrame(columns=["query_id", "text", "norm"]),
          "feedback_pairs": pd.DataFrame(columns=["query_id", "doc_id", "chunk_id", "grade", "label"]),
          "human_queries": []}
CHUNKS = pd.DataFrame({"chunk_id": [f"c{i}" for i in range(30)], "doc_id": [f"d{i}" for i in range(30)],
                       "text": [f"passage number {i} about flow and lift over wings" for i in range(30)]})


def test_plan_spreads_styles_and_respects_counts():
    reqs = plan_requests(CHUNKS, QueryGenConfig(queries_per_chunk=2))
    assert sum(r.n for r in reqs) == 60
    per_chunk = {}
    for r in reqs:
        per_chunk.setdefault(r.chunk_id, []).append(r.style)
    assert all(len(set(v)) == len(v) == 2 for v in per_chunk.values())      # two different styles per chunk
    styles = [r.style for r in plan_requests(CHUNKS, QueryGenConfig())]
    assert set(styles) == {"question", "keywords", "claim"}
    assert plan_requests(CHUNKS, QueryGenConfig()) == plan_requests(CHUNKS, QueryGenConfig())


def test_plan_samples_chunks_and_rejects_unknown_styles():
    assert len({r.chunk_id for r in plan_requests(CHUNKS, QueryGenConfig(max_chunks=7))}) == 7
    with pytest.raises(ValueError, match="unknown query styles"):
        plan_requests(CHUNKS, QueryGenConfig(styles=["poem"]))


def test_frame_gives_stable_ids_and_maps_documents():
    g = lambda c, s, t: GeneratedQuery(c, s, t, "m", "v1", False)  # noqa: E731
    generated = [g("c1", "question", "what lifts wings?"), g("c1", "question", "what lifts wings?"),
                 g("c2", "keywords", "flow lift")]
    df = queries_frame(generated, CHUNKS)
    assert sorted(df["text"]) == ["flow lift", "what lifts wings?"]
    assert df["query_id"].is_unique and set(df["doc_id"]) == {"d1", "d2"}
    assert list(queries_frame(generated, CHUNKS)["query_id"]) == list(df["query_id"])


def test_asset_with_a_fake_llm_reports_counts(fake_llm):
    import dagster as dg

    from assets.queries import synthetic_queries

    out = synthetic_queries(context=dg.build_asset_context(), chunks=CHUNKS, **NO_LOG, llm=fake_llm,
                            config=QueryGenConfig(queries_per_chunk=2, max_chunks=10))
    df, meta = out.value, out.metadata
    assert len(df) > 0 and set(df["chunk_id"]) <= set(CHUNKS["chunk_id"])
    assert meta["requests"].value == 20 and meta["llm_calls"].value == 20
    assert "| style | text | chunk_id |" in meta["preview"].value


def test_asset_fails_clearly_when_nothing_usable_comes_back(fake_llm):
    import dagster as dg
    import pytest

    from assets.queries import synthetic_queries

    class Silent(type(fake_llm)):
        def write_queries(self, requests, progress=None):
            from resources.llm import CallStats

            return [], CallStats(calls=len(requests), filtered=len(requests), filter_reasons={"empty": len(requests)})

    with pytest.raises(ValueError, match="wrote no usable query"):
        synthetic_queries(context=dg.build_asset_context(), chunks=CHUNKS, **NO_LOG, llm=Silent(), config=QueryGenConfig())


def _logged():
    from assets.feedback.resolve import logged_query_id

    texts = ["lift of swept wings", "what is a heat flux gauge", "shock reflection nozzle", "a test query"]
    queries = pd.DataFrame({"query_id": [logged_query_id(t) for t in texts], "text": texts, "norm": texts})
    pairs = pd.DataFrame({"query_id": queries["query_id"], "doc_id": ["d1", "d2", "d3", "d4"],
                          "chunk_id": ["c1", None, "c3", "c4"], "grade": [3, 2, 3, 3], "label": ["positive"] * 4})
    return queries, pairs


def test_logged_examples_never_show_a_test_query_and_are_stable():
    from assets.queries import logged_examples

    queries, pairs = _logged()
    examples = logged_examples(queries, pairs, CHUNKS, 10, exclude={"a test query"})
    assert sorted(q for _, q in examples) == ["lift of swept wings", "shock reflection nozzle",
                                              "what is a heat flux gauge"]
    passage = dict((q, p) for p, q in examples)
    assert passage["what is a heat flux gauge"] == CHUNKS.set_index("doc_id").loc["d2", "text"]   # doc -> its chunk
    assert logged_examples(queries, pairs, CHUNKS, 2, exclude=set()) == logged_examples(queries, pairs, CHUNKS, 2, set())
    assert logged_examples(queries.iloc[:0], pairs, CHUNKS, 4, set()) == ()


def test_logged_examples_replace_the_generic_ones_in_the_users_style():
    from resources import prompts

    examples = (("Flow over a swept wing stalls at the tip first.", "swept wing tip stall"),)
    reqs = plan_requests(CHUNKS, QueryGenConfig(), examples)
    assert {r.style for r in reqs} == {"user"} and all(r.examples == examples for r in reqs)
    prompt = prompts.build_fewshot_query_prompt("some passage", "user", examples=examples)
    assert "Query: swept wing tip stall" in prompt and "Hanseatic" not in prompt
    assert prompt.endswith("Passage: some passage\nQuery:")
    assert prompts.examples_version(examples) != prompts.examples_version(examples + (("p", "q"),))
    kept, why = prompts.filter_queries(["swept wing tip stall", "tip vortex of a delta wing"], "delta wing vortex",
                                       "user", examples)
    assert kept == ["tip vortex of a delta wing"] and why["fewshot_echo"] == 1
    with pytest.raises(ValueError, match="needs logged examples"):
        prompts.build_fewshot_query_prompt("p", "user")


def test_the_examples_hash_is_part_of_the_cache_key_and_the_prompt_version(fake_llm, tmp_path):
    from resources import llm_local
    from resources.llm import QueryRequest

    llm = llm_local.LocalGGUFLLMResource(cache_path=str(tmp_path / "c.sqlite"))
    plain = QueryRequest("c1", "text", "question")
    with_ex = QueryRequest("c1", "text", "user", examples=(("p", "q"),))
    [a] = llm._query_calls(plain, "v1", "m")
    [b] = llm._query_calls(with_ex, "v1", "m")
    assert a.key != b.key


def test_asset_stops_when_most_calls_fail_and_keeps_what_was_paid_for(faulty_endpoint, tmp_path):
    import dagster as dg

    from assets.queries import synthetic_queries
    from resources.llm import OpenAICompatibleLLMResource, TooManyLLMFailures

    chunks = pd.DataFrame({"chunk_id": ["c1", "c2", "c3"], "doc_id": ["d1", "d2", "d3"],
                           "text": ["The wing passage.", "The drag passage faults=drop*.", "The x faults=hang*."]})
    llm = OpenAICompatibleLLMResource(base_url=faulty_endpoint.url, model="m", cache_path=str(tmp_path / "c.sqlite"),
                                      timeout_s=0.3, max_retries=1, retry_backoff_s=0.01)
    run = lambda: synthetic_queries(context=dg.build_asset_context(), chunks=chunks, **NO_LOG, llm=llm,  # noqa: E731
                                    config=QueryGenConfig(styles=["question"]))
    with pytest.raises(TooManyLLMFailures, match=r"synthetic_queries: 2 of 3 LLM calls gave nothing usable \(2 failed"):
        run()
    faulty_endpoint.plan = lambda prompt: []
    out = run()
    assert len(out.value) == 3 and out.metadata["llm_cache_hits"].value == 1 and not faulty_endpoint.paid_twice()
