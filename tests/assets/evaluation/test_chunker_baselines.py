"""chunker_baselines: pure helpers on inline data, then the asset on the tiny BEIR corpus with the tiny model and an
embedder that counts what it embeds."""
import dagster as dg
import pandas as pd
import pytest

from assets.common import md_text
from assets.corpus.chunkers import Chunker, parse_chunker
from assets.corpus.chunking import load_tokenizer
from assets.corpus.readers import read_beir_queries, read_documents
from assets.evaluation import evaluate_query_set
from assets.evaluation.chunkers import (NO_HUMAN_QUERIES, OFF, ChunkerBaselinesConfig, add_shipped_comparisons,
                                        chunker_baselines, chunker_findings, chunkers_markdown, depth_for,
                                        human_query_sets, resolve_chunkers)
from assets.evaluation.metrics import METRIC_NAMES
from assets.evaluation.scoring import CHUNK_DEPTH
from assets.indices import BASELINE_TABLE, build_index
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.workspace import WorkspaceResource

SHIPPED = "tokens-24-4"                     # small enough to cut the tiny documents (~45 tokens) in two or three
OTHERS = ["tokens-16-4", "sentences-24", "sentences-32"]   # the two sentence cuts share 26 chunks the shipped lacks
EMBEDDED: list[str] = []                    # every text the counting embedder was asked to embed, in order


class CountingEmbedder(EmbedderResource):
    def encode(self, texts, path=None, **kwargs):
        EMBEDDED.extend(texts)
        return super().encode(texts, path, **kwargs)


def test_the_shipped_chunker_comes_first_once_and_an_empty_list_is_off():
    shipped = Chunker("tokens", 256, 32)
    assert resolve_chunkers([], shipped) == []
    assert [c.name for c in resolve_chunkers(["sentences-256"], shipped)] == ["tokens-256-32", "sentences-256"]
    names = ["tokens-128-16", "shipped", "tokens-256-32", "tokens-128-16"]
    assert [c.name for c in resolve_chunkers(names, shipped)] == ["tokens-256-32", "tokens-128-16"]
    with pytest.raises(ValueError, match="unknown chunker 'paragraphs'"):
        resolve_chunkers(["paragraphs"], shipped)


def test_depth_grows_with_chunks_per_document_and_never_falls_below_the_main_tables():
    shipped = pd.DataFrame({"doc_id": ["a", "a", "b", "b"]})
    assert depth_for(shipped, shipped) == CHUNK_DEPTH
    assert depth_for(pd.DataFrame({"doc_id": ["a"] * 3 + ["b"] * 3}), shipped) == CHUNK_DEPTH * 3 // 2
    assert depth_for(pd.DataFrame({"doc_id": ["a", "b"]}), shipped) == CHUNK_DEPTH


def test_comparisons_pair_each_chunker_with_the_shipped_one_per_set_and_retriever():
    qids = [f"q{i}" for i in range(6)]
    rows = [{"chunker": c, "query_set": "human/x", "retriever": "bm25", "qid": q, "ndcg@10": score}
            for c, score in (("ship", 0.0), ("better", 1.0), ("same", 0.0)) for q in qids]
    section = {c: {"human/x": {"bm25": {"ndcg@10": s}}} for c, s in (("ship", 0.0), ("better", 1.0), ("same", 0.0))}
    add_shipped_comparisons(section, pd.DataFrame(rows), "ship", resamples=1000, seed=0)
    assert "baseline" not in section["ship"]["human/x"]["bm25"]
    better = section["better"]["human/x"]["bm25"]
    assert better["baseline"] == "ship" and better["delta_ndcg@10"] == 1.0 and better["n_paired"] == 6
    assert better["p_value"] == pytest.approx(2 / 64)     # exact sign-flip test: all 6 differences +1
    same = section["same"]["human/x"]["bm25"]
    assert same["delta_ndcg@10"] == 0.0 and same["p_value"] == 1
    [finding] = chunker_findings(section, "ship")
    assert finding.startswith("human/x, bm25: better is better than ship (Δ nDCG@10 +1.000")


def make_world(home, tiny_beir, tiny_model_path):
    """The tiny corpus cut by SHIPPED, its human queries, and a home whose only table is the baseline one."""
    documents, _ = read_documents(tiny_beir)
    chunks, _ = parse_chunker(SHIPPED).chunk(documents, load_tokenizer(tiny_model_path))
    chunks.attrs["chunker"] = SHIPPED
    r = {"embedder": CountingEmbedder(model=tiny_model_path), "lancedb": LanceDBResource(uri=str(home / "lancedb")),
         "workspace": WorkspaceResource(home=str(home))}
    index = build_index(dg.build_asset_context(), chunks, r["embedder"], r["lancedb"], BASELINE_TABLE, None).value
    return home, documents, chunks, read_beir_queries(tiny_beir), index, r


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_beir, tiny_model_path):
    return make_world(tmp_path_factory.mktemp("chunkers"), tiny_beir, tiny_model_path)


def materialize(world, human=True, **config):
    _, documents, chunks, human_queries, index, r = world
    EMBEDDED.clear()
    return chunker_baselines(context=dg.build_asset_context(), documents=documents, chunks=chunks,
                             human_queries=human_queries if human else [], baseline_index=index,
                             config=ChunkerBaselinesConfig(**config), **r)


def test_the_section_has_every_chunker_set_and_retriever_each_against_the_shipped_chunker(world):
    home, documents, chunks, human_queries, index, r = world
    out = materialize(world, chunkers=["shipped", *OTHERS])
    value = out.value
    [set_name] = [f"human/{s.name}" for s in human_queries]
    assert value["shipped"] == SHIPPED and value["note"] == ""
    assert list(value["chunkers"]) == [SHIPPED, *OTHERS]
    for name, sets in value["chunkers"].items():
        assert list(sets) == [set_name] and list(sets[set_name]) == ["bm25", "dense_base", "hybrid_base"]
        for row, m in sets[set_name].items():
            assert set(METRIC_NAMES) <= set(m) and all(0.0 <= m[k] <= 1.0 for k in METRIC_NAMES)
            if name == SHIPPED:
                assert "baseline" not in m
                continue
            shipped_ndcg = value["chunkers"][SHIPPED][set_name][row]["ndcg@10"]
            assert m["baseline"] == SHIPPED and m["n_paired"] == 6
            assert m["ci95"][0] <= m["delta_ndcg@10"] <= m["ci95"][1]
            assert m["delta_ndcg@10"] == pytest.approx(m["ndcg@10"] - shipped_ndcg, abs=1e-5)
    # the shipped chunker's rows ARE the main table's rows: same table, same queries, same document-level judging
    main, _ = evaluate_query_set(human_query_sets(human_queries, chunks)[set_name],
                                 {"bm25": (r["lancedb"].open(BASELINE_TABLE), "bm25", None),
                                  "dense_base": (r["lancedb"].open(BASELINE_TABLE), "dense", None),
                                  "hybrid_base": (r["lancedb"].open(BASELINE_TABLE), "hybrid", None)},
                                 lambda texts, key: r["embedder"].encode(texts, key))
    for row, m in value["chunkers"][SHIPPED][set_name].items():
        assert {k: m[k] for k in METRIC_NAMES} == {k: main["retrievers"][row][k] for k in METRIC_NAMES}
    assert value["chunkers"][SHIPPED][set_name]["bm25"]["recall@10"] > 0.5   # keyword queries: far from random
    stats = value["stats"]
    assert stats[SHIPPED]["n_chunks"] == len(chunks) and stats[SHIPPED]["table"] == BASELINE_TABLE
    assert stats["tokens-16-4"]["n_chunks"] > len(chunks) and stats["tokens-16-4"]["table"] == "chunker_tokens_16_4"
    per_query = pd.read_parquet(home / "reports" / "chunkers_per_query.parquet")
    assert len(per_query) == 4 * 3 * 6 and set(per_query["chunker"]) == {SHIPPED, *OTHERS}
    md = out.metadata["table"].value
    assert f"| {md_text(set_name)} | sentences-24 | {stats['sentences-24']['n_chunks']} |" in md and "baseline |" in md
    shipped_bm25 = value["chunkers"][SHIPPED][set_name]["bm25"]["ndcg@10"]
    assert out.metadata[f"{SHIPPED}/{set_name}/bm25/ndcg@10"].value == shipped_bm25


def test_vectors_come_from_the_baseline_table_then_from_each_chunkers_table(tmp_path, tiny_beir, tiny_model_path):
    world = make_world(tmp_path, tiny_beir, tiny_model_path)
    home, documents, chunks, human_queries, index, r = world
    queries = {t for s in human_queries for t in s.queries.values()}
    shipped_ids = set(chunks["chunk_id"])
    cuts = {n: parse_chunker(n).chunk(documents, load_tokenizer(r["embedder"].model))[0] for n in OTHERS}
    first = materialize(world, chunkers=["shipped", *OTHERS])
    embedded_chunks = [t for t in EMBEDDED if t not in queries]
    new_ids = set().union(*(set(c["chunk_id"]) for c in cuts.values())) - shipped_ids
    assert sum(len(set(c["chunk_id"]) - shipped_ids) for c in cuts.values()) > len(new_ids)   # shared: tested here
    # each chunk not in the baseline table embedded exactly once, even one two chunkers cut alike; no shipped one
    assert len(embedded_chunks) == len(new_ids) > 0
    assert not {t for t in embedded_chunks} & set(chunks["text"])
    stats = first.value["stats"]
    assert stats[SHIPPED]["chunks_embedded"] == 0 and stats[SHIPPED]["chunks_reused"] == len(chunks)
    assert sum(s["chunks_embedded"] for s in stats.values()) == len(new_ids) == first.metadata["chunks_embedded"].value
    again = materialize(world, chunkers=["shipped", *OTHERS])
    assert sorted(EMBEDDED) == sorted(t for s in human_queries for t in s.queries.values())   # the queries only
    assert all(s["chunks_embedded"] == 0 for s in again.value["stats"].values())
    assert again.value["chunkers"] == first.value["chunkers"]


def test_no_human_queries_or_no_chunkers_give_an_empty_section_with_a_note_and_cost_nothing(world):
    for out, note in ((materialize(world, human=False), NO_HUMAN_QUERIES), (materialize(world, chunkers=[]), OFF)):
        assert out.value == {"chunkers": {}, "shipped": SHIPPED, "note": note, "stats": {}}
        assert out.metadata["chunks_embedded"].value == 0 and EMBEDDED == []
        assert chunkers_markdown(out.value) == f"No chunker comparison: {note}."
