"""Document summaries (the playbook's second representation): the prompt and parser (tier 1), the LLM call's
cache (a rerun pays nothing), and the summary table on the tiny corpus (tier 2): chunk vectors reused, a summary
hit counted for its document, off by default."""
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.corpus.readers import HumanQuerySet
from assets.evaluation import evaluate_query_set, make_encoder
from assets.evaluation.scoring import build_query_sets
from assets.indices import BASELINE_TABLE, build_index
from assets.indices.summaries import (SUMMARY_PREFIX, SummaryConfig, document_summaries, documents_to_summarise,
                                      summary_chunk_id, summary_index, summary_rows, summary_systems,
                                      with_summary_rows)
from resources import prompts
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from tests.conftest import fake_llm_class, tiny_documents


def test_the_summary_prompt_ends_open_and_the_parser_takes_one_usable_line():
    prompt = prompts.build_fewshot_summary_prompt("Boundary layers on a flat plate.\nMore text.", 2000)
    assert prompt.endswith("Passage: Boundary layers on a flat plate. More text.\nSummary:")   # one line
    assert prompt.count("Summary:") == 4                                          # three examples, then the open one
    assert prompts.parse_summary(" How boundary layers grow on plates.\nPassage: next") == \
        "How boundary layers grow on plates."
    assert prompts.parse_summary("Summary: heat transfer in hypersonic flow") == "heat transfer in hypersonic flow"
    assert prompts.parse_summary("too short") is None                              # < MIN_SUMMARY_WORDS
    assert prompts.parse_summary(prompts._FEWSHOT_SUMMARIES[0]) is None            # an example repeated
    assert prompts.parse_summary('{"summary": "the lift of thin wings at low speed"}', chat=True) == \
        "the lift of thin wings at low speed"
    assert prompts.parse_summary("not json at all, but long enough", chat=True) is None
    messages = prompts.build_chat_summary_messages("x" * 5000, 100)
    assert messages[0]["role"] == "system" and len(messages[1]["content"]) < 200   # the document is cut


def test_summaries_are_cached_by_text_so_a_rerun_calls_nothing_and_a_changed_document_is_asked_again(tmp_path):
    llm = fake_llm_class()(cache_path=str(tmp_path / "cache.sqlite"))
    docs = [("d1", "Pressure distributions over slender wings at supersonic speeds"),
            ("d2", "Heat transfer to a cylinder in hypersonic flow")]
    first, stats = llm.summarize(docs)
    assert [s.doc_id for s in first] == ["d1", "d2"] and stats.calls == 2 and not any(s.cached for s in first)
    assert first[0].text == "about pressure distributions over slender wings supersonic"   # first line, no label
    again, stats = llm.summarize(docs)
    assert stats.calls == 0 and stats.cache_hits == 2 and [s.text for s in again] == [s.text for s in first]
    changed, stats = llm.summarize([("d1", docs[0][1]), ("d2", "Skin friction in turbulent boundary layers")])
    assert stats.calls == 1 and stats.cache_hits == 1


def test_documents_to_summarise_are_the_chunked_long_enough_ones_in_id_order():
    documents = pd.DataFrame({"doc_id": ["b", "a", "c", "d"], "title": ["B", "", "C", "D"],
                              "text": ["long body " * 5, "long body " * 5, "short", "not chunked " * 5]})
    chunks = pd.DataFrame({"chunk_id": ["x", "y", "z"], "doc_id": ["a", "b", "c"], "text": ["", "", ""]})
    todo = documents_to_summarise(documents, chunks, min_chars=20)
    assert todo["doc_id"].tolist() == ["a", "b"] and todo["text"][1].startswith("B\nlong body")
    assert documents_to_summarise(documents, chunks, max_documents=1)["doc_id"].tolist() == ["a"]


def test_a_summary_rows_id_changes_with_the_summary():
    rows = summary_rows(pd.DataFrame({"doc_id": ["d1", "d2"], "summary": ["about wings", "about heat"]}))
    assert rows["chunk_id"].str.startswith(SUMMARY_PREFIX).all() and rows["doc_id"].tolist() == ["d1", "d2"]
    assert summary_chunk_id("d1", "about wings") != summary_chunk_id("d1", "about lift")


# ---- tier 2: the assets on the tiny corpus ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_path):
    docs = tiny_documents()
    documents = pd.DataFrame({"doc_id": [d["_id"] for d in docs], "title": [d["title"] for d in docs],
                              "text": [d["text"] for d in docs], "source": "tiny"})
    chunks = pd.DataFrame({"chunk_id": [f"c-{d['_id']}" for d in docs], "doc_id": [d["_id"] for d in docs],
                           "text": [d["text"] for d in docs]})
    lancedb = LanceDBResource(uri=str(tmp_path_factory.mktemp("summaries") / "db"))
    base = build_index(dg.build_asset_context(), chunks, EmbedderResource(model=tiny_model_path), lancedb,
                       BASELINE_TABLE, None).value
    return documents, chunks, base, lancedb, tiny_model_path


def test_off_by_default_the_assets_call_no_llm_and_add_no_row(world):
    documents, chunks, base, lancedb, model = world
    out = document_summaries(context=dg.build_asset_context(), documents=documents, chunks=chunks,
                             llm=fake_llm_class()(), config=SummaryConfig())
    assert out.value.empty and out.metadata["enabled"].value is False
    index = summary_index(context=dg.build_asset_context(), chunks=chunks, document_summaries=out.value,
                          baseline_index=base, embedder=EmbedderResource(model=model), lancedb=lancedb)
    assert index.value == {"enabled": False} and summary_systems(index.value, lancedb) == {}
    assert with_summary_rows(chunks, index.value) is chunks


def test_the_table_reuses_chunk_vectors_embeds_only_summaries_and_a_summary_hit_counts_for_its_document(world):
    documents, chunks, base, lancedb, model = world
    summaries = document_summaries(context=dg.build_asset_context(), documents=documents, chunks=chunks,
                                   llm=fake_llm_class()(), config=SummaryConfig(enabled=True)).value
    assert len(summaries) == len(documents) and summaries["summary"].str.startswith("about ").all()
    planted = summaries.copy()   # one document's summary holds words its chunk lacks: only the summary row finds it
    target = documents["doc_id"].iloc[3]
    planted.loc[planted["doc_id"] == target, "summary"] = "zorblax quintessent vexillum plumbago"
    info = summary_index(context=dg.build_asset_context(), chunks=chunks, document_summaries=planted,
                         baseline_index=base, embedder=EmbedderResource(model=model), lancedb=lancedb).value
    assert info["enabled"] and info["n_rows"] == len(chunks) + len(planted) and info["summaries_embedded"] == len(planted)
    ids, vectors = lancedb.open(info["table"]).vectors()
    base_ids, base_vectors = lancedb.open(BASELINE_TABLE).vectors()
    order = {c: i for i, c in enumerate(base_ids)}
    chunk_rows = [i for i, c in enumerate(ids) if not c.startswith(SUMMARY_PREFIX)]
    np.testing.assert_array_equal(vectors[chunk_rows], base_vectors[[order[ids[i]] for i in chunk_rows]])
    again = summary_index(context=dg.build_asset_context(), chunks=chunks, document_summaries=planted,
                          baseline_index=base, embedder=EmbedderResource(model=model), lancedb=lancedb).value
    assert again["summaries_embedded"] == 0                                         # stored: nothing embedded twice
    human = [HumanQuerySet("tiny/test", {"h1": "zorblax quintessent"}, {"h1": {target: 2}})]
    rows = with_summary_rows(chunks, info)
    sets = build_query_sets(pd.DataFrame(columns=["query_id", "split", "text", "positives"]), human, rows)
    table = lancedb.open(BASELINE_TABLE)
    systems = {"bm25": (table, "bm25", None), **summary_systems(info, lancedb)}
    _, pq = evaluate_query_set(sets["human/tiny/test"], systems, make_encoder(EmbedderResource(model=model), {}))
    ndcg = dict(zip(pq["retriever"], pq["ndcg@10"]))
    assert ndcg["bm25"] == 0.0 and ndcg["hybrid_summaries"] == 1.0   # found through its summary, counted for the doc
