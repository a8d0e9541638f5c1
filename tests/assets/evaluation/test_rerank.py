from dataclasses import dataclass

import pytest

from assets.evaluation import evaluate_query_set
from assets.evaluation.scoring import QuerySet
from assets.evaluation.rerank import LLMReranker, latency_summary, rerank, score_candidates


def test_rerank_reorders_only_the_top_k_and_puts_unscored_pairs_last():
    hits = [("a", 9.0), ("b", 8.0), ("c", 7.0), ("d", 6.0)]
    out = rerank(hits, {"a": 0.1, "b": None, "c": 0.9}, k=3)
    assert [c for c, _ in out] == ["c", "a", "b", "d"]
    assert [s for _, s in out] == sorted((s for _, s in out), reverse=True)   # MaxP keeps this order
    assert [c for c, _ in rerank(hits, {"a": 1.0, "b": 1.0}, k=2)] == ["a", "b", "c", "d"]   # ties: first stage


@dataclass
class CountingReranker:
    name: str = "count"
    calls: int = 0
    pairs: int = 0

    def score(self, query, passages):
        self.calls += 1
        self.pairs += len(passages)
        return [float(len(set(query.split()) & set(text.split()))) for _, text in passages], True


class FakeIndex:
    def __init__(self, order):
        self.order = order

    def search(self, retriever, text, vector, k):
        return [(c, 1.0 / (i + 1)) for i, c in enumerate(self.order[retriever])][:k]


def test_each_pair_is_scored_once_and_every_first_stage_gets_a_reranked_row():
    chunk_text = {"c1": "wing lift", "c2": "cats", "c3": "wing lift drag", "c4": "dogs"}
    index = FakeIndex({"bm25": ["c2", "c1", "c4", "c3"], "dense": ["c1", "c3", "c2", "c4"]})
    systems = {"bm25": (index, "bm25", None), "dense_base": (index, "dense", None)}
    reranker = CountingReranker()
    query_set = QuerySet("s", "synthetic", {"q": "wing lift drag"}, {"q": {"c3": 1}}, None)
    entry, pq = evaluate_query_set(query_set, systems, lambda texts, path: [None] * len(texts),
                                   [("rerank_x", reranker, ["bm25", "dense_base"])], chunk_text, rerank_depth=2)
    assert reranker.calls == 1 and reranker.pairs == 3        # union of {c2, c1} and {c1, c3}
    r = entry["retrievers"]
    assert r["bm25"]["mrr@10"] == pytest.approx(1 / 4)
    assert r["bm25+rerank_x"]["mrr@10"] == pytest.approx(1 / 4)   # c3 was not in bm25's top 2: reranking can't lift it
    assert r["dense_base+rerank_x"]["mrr@10"] == 1.0              # c3 moves from 2nd to 1st
    assert r["dense_base+rerank_x"]["rerank_timed_queries"] == 1
    assert set(pq["retriever"]) == {"bm25", "dense_base", "bm25+rerank_x", "dense_base+rerank_x"}


def test_latency_is_per_query_cost_of_k_pairs_and_empty_when_nothing_was_measured():
    out = latency_summary({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 10, "b": 10, "c": 10})
    assert out["rerank_ms_p50"] == 20.0 and out["rerank_ms_p95"] == pytest.approx(29.0)
    assert latency_summary({}, {"a": 10}) == {"rerank_ms_p50": None, "rerank_ms_p95": None, "rerank_timed_queries": 0}


def test_llm_reranker_uses_the_judge_score_and_counts_cached_calls_as_unmeasured(fake_llm):
    reranker = LLMReranker(fake_llm)
    scored = score_candidates(reranker, ["q"], ["wing lift"], {"q": ["c1", "c2"]}, {"c1": "wing lift", "c2": "cats"})
    assert scored.scores["q"]["c1"] > scored.scores["q"]["c2"]
    assert "q" in scored.ms_per_pair


def test_a_reranked_row_says_how_many_of_its_pairs_the_reranker_lost(faulty_endpoint, tmp_path):
    """The chat judge as the off-the-shelf reranker, with one passage whose every call fails: the pair is left
    unscored (first-stage order, below the scored ones), and each row that had it in its top k counts it."""
    from resources.llm import OpenAICompatibleLLMResource

    llm = OpenAICompatibleLLMResource(base_url=faulty_endpoint.url, model="m", cache_path=str(tmp_path / "c.sqlite"),
                                      timeout_s=0.5, max_retries=1, retry_backoff_s=0.01)
    chunk_text = {"c1": "wing lift", "c2": "cats faults=500*", "c3": "wing lift drag", "c4": "dogs"}
    index = FakeIndex({"bm25": ["c2", "c1", "c4", "c3"], "dense": ["c1", "c3", "c2", "c4"]})
    systems = {"bm25": (index, "bm25", None), "dense_base": (index, "dense", None)}
    query_set = QuerySet("s", "synthetic", {"q": "wing lift drag"}, {"q": {"c3": 1}}, None)
    reranker = LLMReranker(llm, name="chat")
    entry, _ = evaluate_query_set(query_set, systems, lambda texts, path: [None] * len(texts),
                                  [("rerank_offtheshelf", reranker, ["bm25", "dense_base"])], chunk_text, rerank_depth=2)
    r = entry["retrievers"]
    assert r["bm25+rerank_offtheshelf"]["rerank_failures"] == 1         # c2 is in bm25's top 2
    assert r["dense_base+rerank_offtheshelf"]["rerank_failures"] == 0   # not in dense's
    assert reranker.failures == 1 and "rerank_failures" not in r["bm25"]


def test_a_cross_encoder_row_has_no_rerank_failures():
    chunk_text = {"c1": "wing lift", "c2": "cats"}
    index = FakeIndex({"bm25": ["c2", "c1"]})
    query_set = QuerySet("s", "synthetic", {"q": "wing lift"}, {"q": {"c1": 1}}, None)
    entry, _ = evaluate_query_set(query_set, {"bm25": (index, "bm25", None)}, lambda t, p: [None] * len(t),
                                  [("rerank_x", CountingReranker(), ["bm25"])], chunk_text, rerank_depth=2)
    assert entry["retrievers"]["bm25+rerank_x"]["rerank_failures"] == 0
