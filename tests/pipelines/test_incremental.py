"""Tier 3: three runs of the whole graph on one home. The second pays for nothing; the third pays only for
what changed (one document added, one deleted), and every index finds the new one and forgets the gone one.

The LLM here is a fake *backend* behind the real LLMResource machinery (sqlite cache, cache keys, CallStats),
so the counts in run_stats.json are the ones a real backend would produce."""
import json
import re

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.llm import LLMResource

CONFIG = {"ops": {
    "synthetic_queries": {"config": {"queries_per_chunk": 1}},
    "relevance_labels": {"config": {"max_queries": 0, "candidates_per_query": 2}},
    "finetuned_biencoder": {"config": {"max_steps": 1, "batch_size": 8, "evals_per_run": 1,
                                       "min_change_to_retrain": 0.1}},
    "finetuned_crossencoder": {"config": {"max_steps": 2, "batch_size": 8, "min_change_to_retrain": 0.1}},
}}
NEW_DOC = "Ablation of a heat shield in hypersonic reentry: charring, pyrolysis gas and recession of the surface."


class CachingFakeLLM(LLMResource):
    """Deterministic backend (queries from the passage's words, overlap as the judge's score); the base
    class does the caching and counting."""

    def model_id(self) -> str:
        return "fake-cached"

    def _query_prompt_version(self) -> str:
        return "fake-q1"

    def _judge_prompt_version(self) -> str:
        return "fake-j1"

    def _judge_name(self) -> str:
        return "fake-judge"

    def _run_query_calls(self, calls, emit, fail) -> None:
        for call in calls:
            req, first, _ = call.payload
            words = [w for w in re.findall(r"[a-z]+", req.text.lower()) if len(w) > 3]
            emit(call, "how does " + " ".join(words[first::3][:3] or ["nothing"]) + " matter")

    def _run_judge_calls(self, calls, emit, fail) -> None:
        for call in calls:
            q = set(re.findall(r"[a-z]+", call.payload.query.lower()))
            p = set(re.findall(r"[a-z]+", call.payload.passage.lower()))
            emit(call, str(len(q & p) / max(1, len(q))))

    def _parse_judge(self, raw: str):
        return float(raw), None

    def _grades(self, requests, scores):
        return [None if s is None else 3 if r.chunk_id == r.source_chunk_id else 2 * int(s >= 0.75)
                for r, s in zip(requests, scores)]


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, tiny_model_path):
    from tests.conftest import tiny_documents

    corpus = tmp_path_factory.mktemp("corpus")
    for d in tiny_documents():
        (corpus / f"{d['_id']}.txt").write_text(f"{d['title']}\n\n{d['text']}")
    home = tmp_path_factory.mktemp("home")
    config = {"ops": {**CONFIG["ops"], "corpus": {"config": {"path": str(corpus)}}}}

    def run():
        defs = build_definitions(home, llm=CachingFakeLLM(cache_path=str(home / "llm_cache.sqlite")),
                                 embedder=EmbedderResource(model=tiny_model_path))
        result = defs.resolve_job_def("flywheel_job").execute_in_process(run_config=config,
                                                                         instance=dg.DagsterInstance.ephemeral())
        assert result.success
        return json.loads((home / "reports" / "run_stats.json").read_text()), result

    first, _ = run()
    second, _ = run()
    (corpus / "heat-0.txt").unlink()
    (corpus / "reentry.txt").write_text(NEW_DOC)
    third, result = run()
    return home, (first, second, third), result


def test_first_run_pays_for_everything_and_says_so(three_runs):
    _, (first, _, _), _ = three_runs
    assert first["llm_calls"] > 0    # its only cache hits: UPR reranking pairs the judge already labelled
    assert first["llm_cache_hits"] == first["llm_cache_hits_by_asset"].get("evaluation_report", 0)
    assert first["chunks_new"] == first["chunks_total"] == 36 and first["chunks_removed"] == 0
    assert first["chunks_embedded"] == 2 * first["chunks_total"]           # base and fine-tuned tables
    assert first["retrained"] is True
    assert {"synthetic_queries", "relevance_labels", "evaluation_report"} <= {   # evaluation_report: UPR reranking
        a for a, n in first["llm_calls_by_asset"].items() if n > 0}           # (no human sets here: no judge_agreement)
    assert {"corpus", "chunks", "synthetic_queries", "baseline_index", "finetuned_biencoder"} <= set(first["seconds_by_asset"])


def test_second_run_on_the_same_corpus_makes_no_llm_call_and_embeds_nothing(three_runs):
    _, (first, second, _), _ = three_runs
    assert second["llm_calls"] == 0 and second["llm_cache_hits"] == first["llm_calls"] + first["llm_cache_hits"]
    assert second["chunks_embedded"] == 0 and second["chunks_new"] == 0 and second["chunks_removed"] == 0
    assert second["retrained"] is False and second["retrain_reason"].startswith("skipped: only 0.0% of chunks")


def test_third_run_pays_only_for_the_change(three_runs):
    _, (first, _, third), result = three_runs
    assert third["chunks_new"] == 1 and third["chunks_removed"] == 1 and third["chunks_total"] == 36
    assert third["chunks_embedded"] == 2                                   # the new chunk, in each table
    assert third["retrained"] is False                                     # 2/36 changed < 10%
    assert 0 < third["llm_calls_by_asset"]["synthetic_queries"] <= 1
    assert 0 < third["llm_calls"] < 0.2 * first["llm_calls"]
    meta = {e.materialization.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert meta["run_stats"]["llm_calls"].value == third["llm_calls"]
    assert meta["run_stats"]["chunks_embedded"].value == 2
    reranker = result.output_for_node("finetuned_crossencoder")
    assert reranker["retrained"] is False and reranker["retrain_reason"].startswith("skipped: only")
    assert meta["finetuned_crossencoder"]["retrained"].value is False


@pytest.mark.parametrize("table", ["chunks_base", "chunks_finetuned", "chunks_serving"])
def test_the_new_document_is_found_and_the_deleted_one_is_gone_in_every_index(three_runs, table, tiny_model_path):
    home, _, result = three_runs
    index = LanceDBResource(uri=str(home / "lancedb")).open(table)
    model = {"chunks_base": None, "chunks_finetuned": result.output_for_node("finetuned_biencoder")["model_path"],
             "chunks_serving": result.output_for_node("serving_index")["champion"]["model_path"]}[table]
    embedder = EmbedderResource(model=tiny_model_path)
    vec = embedder.encode([NEW_DOC], model)[0]
    doc_of = dict(zip(*[index.table.to_arrow().column(c).to_pylist() for c in ("chunk_id", "doc_id")]))
    assert "heat-0.txt" not in set(doc_of.values()) and "heat-1.txt" in set(doc_of.values())
    for hits in (index.bm25("heat shield ablation reentry", 3), index.dense(vec, 1),
                 index.hybrid("heat shield ablation reentry", vec, 3)):
        assert doc_of[hits[0][0]] == "reentry.txt"
