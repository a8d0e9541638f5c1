import pandas as pd
import pytest

from assets.labels import LabelConfig, labels_frame, plan_judgements
from resources.llm import Judgment

QUERIES = pd.DataFrame({"query_id": ["q1", "q2"], "chunk_id": ["c1", "c2"], "doc_id": ["d1", "d2"],
                        "style": "question", "text": ["what is lift", "what is drag"]})
TEXT = {f"c{i}": f"text {i}" for i in range(6)}


def test_plan_judges_the_source_first_then_other_candidates():
    reqs = plan_judgements(QUERIES, {"q1": ["c3", "c1", "c4", "c5"], "q2": []}, TEXT, LabelConfig(candidates_per_query=2))
    assert [(r.query, r.chunk_id) for r in reqs] == [("what is lift", "c1"), ("what is lift", "c3"),
                                                    ("what is lift", "c4"), ("what is drag", "c2")]
    assert all(r.source_chunk_id == {"what is lift": "c1", "what is drag": "c2"}[r.query] for r in reqs)


def test_labels_frame_maps_judgments_back_to_query_ids():
    js = [(Judgment("what is lift", "c1", 3, -1.0, "j", False), "c1"),
          (Judgment("what is lift", "c3", 0, -4.0, "j", True), "c1"),
          (Judgment("unknown query", "c3", 2, -1.0, "j", False), "c9")]
    df = labels_frame(js, QUERIES)
    assert list(df["query_id"]) == ["q1", "q1"]
    assert list(df["is_source"]) == [True, False] and list(df["grade"]) == [3, 0]


class _Index:
    def hybrid(self, text, vector, k):
        return [("c1", 1.0), ("c2", 0.9), ("c3", 0.8)][:k]


class _Lance:
    def open(self, table):
        return _Index()


class _Embedder:
    def encode(self, texts, model_path=None):
        return [None] * len(texts)


def _endpoint_llm(endpoint, tmp_path, **kw):
    from resources.llm import OpenAICompatibleLLMResource

    return OpenAICompatibleLLMResource(**{**dict(base_url=endpoint.url, model="m", cache_path=str(tmp_path / "c.sqlite"),
                                                 timeout_s=0.5, max_retries=1, retry_backoff_s=0.01), **kw})


def _labels(llm, chunks, max_queries=0):
    import dagster as dg

    from assets.labels import relevance_labels

    return relevance_labels(context=dg.build_asset_context(), synthetic_queries=QUERIES.iloc[:1], chunks=chunks,
                            baseline_index={"table": "t"}, llm=llm, embedder=_Embedder(), lancedb=_Lance(),
                            config=LabelConfig(candidates_per_query=2, max_queries=max_queries))


def test_labels_stop_when_most_judge_calls_fail_and_a_rerun_resumes(faulty_endpoint, tmp_path):
    """Two of the three pairs' calls fail for good: the stage stops (it used to return one label and let the
    training go on); once the endpoint recovers, the rerun pays for those two only."""
    from resources.llm import TooManyLLMFailures

    chunks = pd.DataFrame({"chunk_id": ["c1", "c2", "c3"], "doc_id": ["d1", "d2", "d3"],
                           "text": ["lift of a wing", "drag faults=500*", "stall faults=503*"]})
    with pytest.raises(TooManyLLMFailures, match=r"relevance_labels: 2 of 3 LLM calls gave nothing usable"):
        _labels(_endpoint_llm(faulty_endpoint, tmp_path), chunks)
    faulty_endpoint.plan = lambda prompt: []                     # the endpoint is healthy again
    out = _labels(_endpoint_llm(faulty_endpoint, tmp_path), chunks)
    assert len(out.value) == 3 and (out.metadata["llm_calls"].value, out.metadata["llm_cache_hits"].value) == (2, 1)
    assert not faulty_endpoint.paid_twice()


def test_labels_go_on_with_a_minority_of_failures_and_count_them(faulty_endpoint, tmp_path):
    chunks = pd.DataFrame({"chunk_id": ["c1", "c2", "c3"], "doc_id": ["d1", "d2", "d3"],
                           "text": ["lift of a wing", "drag faults=500*", "stall"]})
    out = _labels(_endpoint_llm(faulty_endpoint, tmp_path), chunks)
    assert len(out.value) == 2 and out.metadata["llm_failures"].value == 1
    assert out.metadata["llm_failure_share"].value == pytest.approx(1 / 3, abs=1e-3)


def test_judge_agreement_reports_the_pairs_it_dropped(faulty_endpoint, tmp_path):
    import dagster as dg

    from assets.corpus.readers import HumanQuerySet
    from assets.labels import judge_agreement
    from assets.labels.judge_agreement import JudgeAgreementConfig

    class Workspace:
        reports_dir = tmp_path

    chunks = pd.DataFrame({"chunk_id": ["c1", "c2", "c3"], "doc_id": ["d1", "d2", "d3"],
                           "text": ["lift of a wing", "drag faults=500*", "stall of a wing"]})
    humans = [HumanQuerySet("set/test", {"h1": "what is lift"}, {"h1": {"d1": 1}})]
    out = judge_agreement(context=dg.build_asset_context(), human_queries=humans, chunks=chunks,
                          baseline_index={"table": "t"}, llm=_endpoint_llm(faulty_endpoint, tmp_path),
                          embedder=_Embedder(), lancedb=_Lance(), workspace=Workspace(),
                          config=JudgeAgreementConfig(depth=3))
    result = out.value["set/test"]
    assert (result["pairs"], result["pairs_dropped"], result["judge_failures"]) == (2, 1, 1)
    assert out.metadata["judge_pairs_dropped"].value == 1
    assert "pairs_dropped" in out.metadata["agreement"].value
