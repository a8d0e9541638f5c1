"""Tier 2: query_review and query_segments called directly, with the fake LLM, the tiny model and a real LanceDB
table in tmp_path."""
import json

import dagster as dg
import pandas as pd
import pytest

from assets.monitoring import NO_LOG_MESSAGE, ReviewConfig, SegmentConfig, query_review, query_segments
from assets.monitoring.review import QUEUE_COLUMNS
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.llm import CallStats
from resources.workspace import WorkspaceResource
from tests.conftest import TOPICS, fake_llm_class, tiny_documents
from tests.pipelines.test_incremental import CachingFakeLLM   # the word-overlap judge behind the real cache

LOG_COLUMNS = ["query_id", "text", "norm", "n_interactions", "n_sessions", "first_seen", "last_seen", "daily",
               "n_positive", "n_negative", "source"]
PAIR_COLUMNS = ["query_id", "doc_id", "chunk_id", "grade", "label", "weak", "n_interactions", "source"]


@pytest.fixture
def chunks() -> pd.DataFrame:
    docs = tiny_documents()
    return pd.DataFrame({"chunk_id": [f"{d['_id']}#0" for d in docs], "doc_id": [d["_id"] for d in docs],
                         "text": [d["text"] for d in docs]})


@pytest.fixture
def served(tmp_path, tiny_model_path, chunks) -> dict:
    """A serving table embedded with the tiny model, as the serving_index asset leaves it."""
    lancedb = LanceDBResource(uri=str(tmp_path / "lancedb"))
    vectors = EmbedderResource(model=tiny_model_path).encode(chunks["text"].tolist())
    lancedb.write_chunk_table("chunks_serving", chunks, vectors, model=tiny_model_path)
    return {"table": "chunks_serving", "lancedb": lancedb,
            "champion": {"model_path": tiny_model_path, "version": "1", "what": "version 1"}}


def logged() -> pd.DataFrame:
    rows = []
    for n, (topic, terms) in enumerate(TOPICS.items()):
        for i, term in enumerate(terms[:2]):
            rows.append((f"{term} in {topic} experiments", 1 + n + i, {f"2026-01-{1 + 7 * i:02d}": 1 + n + i}))
    rows.append(("report studies experiments", 9, {"2026-01-03": 9}))   # every passage has these words: relevant
    rows.append(("zebra migration patterns", 4, {"2026-01-10": 4}))     # no passage has any: irrelevant
    df = pd.DataFrame([{"query_id": f"log-{k}", "text": t, "norm": t.lower(), "n_interactions": n, "n_sessions": 1,
                        "first_seen": pd.NaT, "last_seen": pd.NaT, "daily": d, "n_positive": 0, "n_negative": 0,
                        "source": "log"} for k, (t, n, d) in enumerate(rows)], columns=LOG_COLUMNS)
    return df


def pairs() -> pd.DataFrame:
    return pd.DataFrame([{"query_id": "log-0", "doc_id": "wing-0", "chunk_id": None, "grade": 2, "label": "positive",
                          "weak": False, "n_interactions": 1, "source": "log"},
                         {"query_id": "log-0", "doc_id": "heat-0", "chunk_id": None, "grade": 0, "label": "negative",
                          "weak": False, "n_interactions": 1, "source": "log"}], columns=PAIR_COLUMNS)


def review(tmp_path, served, chunks, llm, log=None, crossencoder=None, embedder_model="/no/such/base/model", **cfg):
    """query_review on the tiny table. The embedder's own model does not exist: only the champion's may be used."""
    return query_review(context=dg.build_asset_context(), logged_queries=logged() if log is None else log,
                        feedback_pairs=pairs(), chunks=chunks, serving_index=served,
                        finetuned_crossencoder=crossencoder or {}, llm=llm,
                        embedder=EmbedderResource(model=embedder_model), lancedb=served["lancedb"],
                        workspace=WorkspaceResource(home=str(tmp_path / "home")),
                        config=ReviewConfig(**{"share": 1.0, "top_k": 3, **cfg}))


def test_the_review_queue_is_written_worst_first_with_every_column(tmp_path, served, chunks, fake_llm):
    out = review(tmp_path, served, chunks, fake_llm)
    queue = pd.read_parquet(tmp_path / "home" / "reports" / "review_queue.parquet")
    assert list(queue.columns) == QUEUE_COLUMNS and len(queue) == len(logged())
    assert queue["query_id"].tolist() == out.value["query_id"].tolist()
    precision = queue["precision"].tolist()
    assert precision == sorted(precision)                                 # worst judged precision first
    by_text = queue.set_index("text")
    assert by_text.loc["zebra migration patterns", "precision"] == 0.0
    assert by_text.loc["report studies experiments", "precision"] == 1.0
    assert queue["hits"].map(len).eq(3).all() and queue["top_cosine"].between(-1, 1).all()
    assert queue["top_rerank"].isna().all()                               # no fine-tuned cross-encoder
    assert by_text.loc["lift in wing experiments", "n_positive_docs"] == 1
    assert by_text.loc["lift in wing experiments", "recall"] in (0.0, 1.0)
    assert queue["recall"].notna().sum() == 1                             # only log-0 has labels
    md = out.metadata
    assert md["n_sampled"].value == len(logged()) and md["llm_calls"].value == 3 * len(logged())
    assert md["mean_precision"].value == pytest.approx(queue["precision"].mean(), abs=1e-4)   # rounded to 4
    assert md["mean_recall"].value == by_text.loc["lift in wing experiments", "recall"]
    assert md["worst"].value.splitlines()[2].split(" | ")[1] == queue["text"].iloc[0]
    assert md["docs_never_retrieved"].value == 36 - queue["hit_docs"].explode().nunique()


def test_the_reranker_score_is_filled_when_a_cross_encoder_exists(tmp_path, served, chunks, fake_llm, tiny_model_path):
    out = review(tmp_path, served, chunks, fake_llm, crossencoder={"model_path": tiny_model_path}, share=0.3)
    assert out.value["top_rerank"].notna().all() and 0 < len(out.value) < len(logged())
    assert out.metadata["reranker"].value == "finetuned cross-encoder"


def test_a_rerun_judges_the_same_sample_from_the_cache_and_the_history_grows(tmp_path, served, chunks):
    llm = CachingFakeLLM(cache_path=str(tmp_path / "llm.sqlite"))
    first = review(tmp_path, served, chunks, llm, share=0.5)
    again = review(tmp_path, served, chunks, llm, share=0.5)
    assert first.metadata["llm_calls"].value == 3 * len(first.value) > 0
    assert (again.metadata["llm_calls"].value, again.metadata["llm_cache_hits"].value) == (0, 3 * len(first.value))
    assert again.value["query_id"].tolist() == first.value["query_id"].tolist()
    lines = (tmp_path / "home" / "reports" / "review_history.jsonl").read_text().splitlines()
    assert [json.loads(line)["llm_calls"] for line in lines] == [3 * len(first.value), 0]
    assert again.metadata["history"].value.count("\n") == 3              # header, rule, two runs


def test_no_log_materializes_with_the_message(tmp_path, served, chunks, fake_llm):
    empty = pd.DataFrame(columns=LOG_COLUMNS)
    out = review(tmp_path, {**served, "table": "missing"}, chunks, fake_llm, log=empty)
    assert out.metadata["message"].value == NO_LOG_MESSAGE and out.metadata["n_sampled"].value == 0
    assert list(pd.read_parquet(tmp_path / "home" / "reports" / "review_queue.parquet").columns) == QUEUE_COLUMNS
    segs = segments(tmp_path, served, chunks, fake_llm, log=empty, reviewed=out.value)
    assert segs.metadata["message"].value == NO_LOG_MESSAGE
    assert json.loads((tmp_path / "home" / "reports" / "segments.json").read_text())["segments"] == []


def segments(tmp_path, served, chunks, llm, log=None, reviewed=None, **cfg):
    return query_segments(context=dg.build_asset_context(), logged_queries=logged() if log is None else log,
                          feedback_pairs=pairs(), chunks=chunks,
                          query_review=pd.DataFrame(columns=QUEUE_COLUMNS) if reviewed is None else reviewed,
                          serving_index=served, llm=llm, embedder=EmbedderResource(model="/no/such/base/model"),
                          lancedb=served["lancedb"], workspace=WorkspaceResource(home=str(tmp_path / "home")),
                          config=SegmentConfig(**cfg))


def test_segments_are_written_with_their_keys_and_a_plot(tmp_path, served, chunks, fake_llm):
    reviewed = review(tmp_path, served, chunks, fake_llm).value
    out = segments(tmp_path, served, chunks, fake_llm, reviewed=reviewed)
    saved = json.loads((tmp_path / "home" / "reports" / "segments.json").read_text())
    assert saved["segments"] == out.value["segments"] and saved["n_segments"] == len(saved["segments"]) >= 2
    for seg in saved["segments"]:
        assert {"name", "n_queries", "share", "examples", "precision", "trend"} <= set(seg)
        assert seg["precision"] is not None and 0 <= seg["precision"] <= 1      # every query was reviewed
        assert seg["trend"] is not None                                           # the log has dates
    assert sum(s["n_queries"] for s in saved["segments"]) == len(logged())
    assert sum(s["share"] for s in saved["segments"]) == pytest.approx(1.0, abs=1e-3)
    assert [s["recall"] is not None for s in saved["segments"]].count(True) == 1  # the one labelled query's
    png = tmp_path / "home" / "reports" / "plots" / "segments.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and out.metadata["plot"].value.startswith("![")
    assert out.metadata["n_segments"].value == saved["n_segments"] and out.metadata["named_by"].value.startswith("top")
    assert saved["segments"][0]["name"] in out.metadata["segments"].value
    assignments = pd.read_parquet(tmp_path / "home" / "reports" / "segment_queries.parquet")
    assert len(assignments) == len(logged()) and set(assignments["name"]) == {s["name"] for s in saved["segments"]}


def test_segments_without_a_review_or_dates_have_null_precision_and_trend(tmp_path, served, chunks):
    class NamingLLM(fake_llm_class()):
        def name_topics(self, groups):
            return [f"topic {len(g)}" for g in groups], CallStats(calls=len(groups))

    undated = logged().assign(daily=[{}] * len(logged()))
    out = segments(tmp_path, served, chunks, NamingLLM(), log=undated, n_segments=2)
    assert out.value["n_segments"] == 2 and out.metadata["llm_calls"].value == 2
    assert [s["name"].startswith("topic ") for s in out.value["segments"]] == [True, True]
    assert all(s["precision"] is None and s["trend"] is None for s in out.value["segments"])
    off = segments(tmp_path, served, chunks, NamingLLM(), log=undated, n_segments=2, name_with_llm=False)
    assert off.metadata["llm_calls"].value == 0 and not off.value["segments"][0]["name"].startswith("topic ")


def test_both_assets_materialize_together_from_upstream_values(tmp_path, served, chunks, fake_llm):
    """The wiring: parameter names, the review's output feeding the segments through the IO manager."""
    serving = {k: v for k, v in served.items() if k != "lancedb"}
    upstream = {"logged_queries": logged(), "feedback_pairs": pairs(), "chunks": chunks, "serving_index": serving,
                "finetuned_crossencoder": {"model_path": None}}

    def stand_in(name, value):
        @dg.asset(name=name)
        def _asset():
            return value
        return _asset

    home = tmp_path / "home"
    result = dg.materialize(
        [*(stand_in(k, v) for k, v in upstream.items()), query_review, query_segments],
        resources={"llm": fake_llm, "embedder": EmbedderResource(model="/no/such/base/model"),
                   "lancedb": served["lancedb"], "workspace": WorkspaceResource(home=str(home)),
                   "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "storage"))})
    assert result.success
    reviewed = result.output_for_node("query_review")
    assert len(reviewed) == len(review_sample_of_logged()) and reviewed["precision"].notna().all()
    segs = result.output_for_node("query_segments")["segments"]
    judged = sum(s["n_judged_queries"] for s in segs)
    assert judged == len(reviewed)                     # every reviewed query's precision reached its segment
    assert (home / "reports" / "review_queue.parquet").exists() and (home / "reports" / "segments.json").exists()


def review_sample_of_logged():
    from assets.monitoring.review import review_sample

    return review_sample(logged(), ReviewConfig().share, ReviewConfig().cap, ReviewConfig().seed)
