import pandas as pd
import pytest

from assets.queries import QueryGenConfig, plan_requests, queries_frame
from resources.llm import GeneratedQuery

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

    out = synthetic_queries(context=dg.build_asset_context(), chunks=CHUNKS, llm=fake_llm,
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
        synthetic_queries(context=dg.build_asset_context(), chunks=CHUNKS, llm=Silent(), config=QueryGenConfig())
