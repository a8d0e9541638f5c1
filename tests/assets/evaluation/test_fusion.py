"""Learned fusion: the fusion functions and the grid search (tier 1), and fusion_weights on the tiny corpus (tier 2):
it reads the validation split only, and at RRF 0.5 the hybrid_learned row is hybrid_base query by query."""
import dagster as dg
import pandas as pd
import pytest

from assets.evaluation import evaluate_query_set, make_encoder
from assets.evaluation.fusion import (FusedIndex, FusionConfig, choose_fusion, convex_fuse, fuse, fusion_markdown,
                                      fusion_weights, learned_fusion_systems, min_max, weighted_rrf)
from assets.evaluation.scoring import QuerySet, synthetic_query_set
from assets.indices import BASELINE_TABLE, build_index
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource, rrf_fuse
from tests.conftest import TOPICS, tiny_documents


def other(terms: list[str], i: int) -> str:
    """The term document i says its own term depends on (conftest: the next term of its topic)."""
    topic = i // 6
    return terms[topic * 6 + (i % 6 + 1) % 6]


def test_weighted_rrf_at_half_is_plain_rrf_and_at_the_ends_one_list():
    lexical, semantic = ["a", "b", "c", "d"], ["d", "c", "e", "a"]
    plain = rrf_fuse([lexical, semantic])
    half = weighted_rrf(lexical, semantic, 0.5)
    assert [c for c, _ in half] == [c for c, _ in plain]
    assert [s for _, s in half] == pytest.approx([s / 2 for _, s in plain])
    assert [c for c, _ in weighted_rrf(lexical, semantic, 0.0)][:4] == lexical
    assert [c for c, _ in weighted_rrf(lexical, semantic, 1.0)][:4] == semantic
    assert [c for c, _ in weighted_rrf(lexical, semantic, 0.5, limit=2)] == [c for c, _ in plain[:2]]


def test_convex_fusion_normalises_each_list_and_a_missing_chunk_scores_zero_there():
    assert min_max([("a", 3.0), ("b", 1.0), ("c", 2.0)]) == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert min_max([("a", 7.0), ("b", 7.0)]) == {"a": 1.0, "b": 1.0} and min_max([]) == {}
    bm25 = [("a", 12.0), ("b", 6.0), ("c", 2.0)]         # raw BM25 scale: normalised to 1, 0.4, 0
    dense = [("c", 0.9), ("d", 0.5), ("a", 0.1)]         # cosines: 1, 0.5, 0
    fused = dict(convex_fuse(bm25, dense, 0.3))
    assert fused == pytest.approx({"a": 0.7, "b": 0.28, "c": 0.3, "d": 0.15})
    assert [c for c, _ in convex_fuse(bm25, dense, 0.3)] == ["a", "c", "b", "d"]
    assert [c for c, _ in convex_fuse(bm25, dense, 0.8, limit=2)] == ["c", "d"]   # 0.8, 0.4 (a: 0.2)
    with pytest.raises(ValueError, match="use one of rrf, convex"):
        fuse("max", 0.5, bm25, dense)


def _set(n=6):
    return QuerySet("synthetic/validation", "synthetic", {f"q{i}": "t" for i in range(n)},
                    {f"q{i}": {f"right{i}": 1} for i in range(n)}, None)


def test_the_grid_picks_what_validation_rewards_and_says_when_it_is_at_the_edge():
    qs = _set()
    wrong = [[(f"x{j}", 10.0 - j) for j in range(12)] for _ in qs.qids]
    right = [[(f"right{i}", 0.9), *((f"x{j}", 0.5 - j / 100) for j in range(11))] for i in range(len(qs.qids))]
    dense_wins = choose_fusion(qs, wrong, right, ["rrf", "convex"], [0.0, 0.5, 1.0])
    assert dense_wins["weight_dense"] == 1.0 and dense_wins["at_grid_edge"]
    assert "one retriever alone" in dense_wins["note"] and dense_wins["n_queries"] == 6
    assert len(dense_wins["grid"]) == 6 and dense_wins["default_ndcg@10"] < dense_wins["validation_ndcg@10"] == 1.0
    inner = choose_fusion(qs, wrong, right, ["convex"], [0.2, 0.4])
    assert inner["weight_dense"] == 0.4 and "may lie outside" in inner["note"]
    # convex at 0.6: right{i} 0.6 * 1 = 0.6 beats x0's 0.4 * 1 + 0.6 * 0.2 = 0.52; 1.0 ties it, 0.6 is nearer 0.5
    middle = choose_fusion(qs, wrong, right, ["convex"], [0.0, 0.6, 1.0])
    assert middle["weight_dense"] == 0.6 and not middle["at_grid_edge"]
    flat = choose_fusion(qs, right, right, ["convex", "rrf"], [0.0, 0.3, 0.5, 1.0])   # every point ties at 1.0
    assert (flat["method"], flat["weight_dense"]) == ("rrf", 0.5) and not flat["at_grid_edge"] and flat["note"] == ""
    assert "fixed RRF" in fusion_markdown(flat) and fusion_markdown({}) == ""
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        choose_fusion(qs, wrong, right, ["rrf"], [0.5, 1.5])
    with pytest.raises(ValueError, match="unknown fusion method 'sum'"):
        choose_fusion(qs, wrong, right, ["sum"], [0.5])


# ---- tier 2 --------------------------------------------------------------------------------------------------

ENCODED: list[str] = []   # a module list: Dagster hands the asset a copy of the resource


class RecordingEmbedder(EmbedderResource):
    def encode(self, texts, path=None, **kw):
        ENCODED.extend(texts)
        return super().encode(texts, path, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_path):
    docs = tiny_documents()
    chunks = pd.DataFrame({"chunk_id": [f"c-{d['_id']}" for d in docs], "doc_id": [d["_id"] for d in docs],
                           "text": [d["text"] for d in docs]})
    lancedb = LanceDBResource(uri=str(tmp_path_factory.mktemp("fusion") / "db"))
    base = build_index(dg.build_asset_context(), chunks, EmbedderResource(model=tiny_model_path), lancedb,
                       BASELINE_TABLE, None).value
    # "what depends on <the next term>": two documents name that term, one is right; the retrievers disagree
    terms = [t for ts in TOPICS.values() for t in ts]
    splits = pd.DataFrame([{"query_id": f"q{i}", "doc_id": d["_id"], "split": ("test", "validation", "train")[i % 3],
                            "style": "question", "text": f"what depends on {other(terms, i)} experiments",
                            "positives": [f"c-{d['_id']}"], "labelled": False} for i, d in enumerate(docs)])
    return splits, base, lancedb, tiny_model_path


def run(world, splits=None, **config):
    s, base, lancedb, model = world
    return fusion_weights(context=dg.build_asset_context(), query_splits=s if splits is None else splits,
                          baseline_index=base, embedder=RecordingEmbedder(model=model), lancedb=lancedb,
                          config=FusionConfig(**config))


def test_fusion_weights_read_the_validation_split_and_nothing_else(world):
    splits, *_ = world
    ENCODED.clear()
    out = run(world)
    validation = splits[splits["split"] == "validation"]
    assert sorted(ENCODED) == sorted(validation["text"])                        # no test query is even embedded
    assert out.value["tuned_on"] == "synthetic/validation" and out.value["n_queries"] == len(validation)
    assert len(out.value["grid"]) == 22 and out.metadata["method"].value == out.value["method"]
    scrambled = splits.copy()                                                   # the test rows changed: the same pick
    test = scrambled["split"] == "test"
    scrambled.loc[test, "text"] = "nothing relevant at all"
    scrambled.loc[test, "positives"] = [["c-wing-0"]] * int(test.sum())
    assert run(world, scrambled).value == out.value
    moved = splits.copy()                                                       # the validation rows changed: it moves
    val = moved["split"] == "validation"
    moved.loc[val, "positives"] = [[moved.loc[val, "positives"].iloc[0][0]]] * int(val.sum())
    assert run(world, moved).value["grid"] != out.value["grid"]


def test_hybrid_learned_at_plain_rrf_is_hybrid_base_and_other_weights_change_it(world):
    splits, base_info, lancedb, model = world
    base = lancedb.open(base_info["table"])
    embedder = EmbedderResource(model=model)
    qs = synthetic_query_set(splits, "train")
    rows = {"hybrid_base": (base, "hybrid", None), "dense_base": (base, "dense", None), "bm25": (base, "bm25", None)}
    same = learned_fusion_systems({"method": "rrf", "weight_dense": 0.5}, base)
    bm25_only = {"hybrid_bm25": (FusedIndex(base, "convex", 0.0), "hybrid", None)}
    _, pq = evaluate_query_set(qs, rows | same | bm25_only, make_encoder(embedder, {}))
    wide = pq.pivot(index="qid", columns="retriever", values="ndcg@10")
    assert wide["hybrid_base"].nunique() > 1
    pd.testing.assert_series_equal(wide["hybrid_learned"], wide["hybrid_base"], check_names=False)
    pd.testing.assert_series_equal(wide["hybrid_bm25"], wide["bm25"], check_names=False)   # w = 0: BM25's order
    assert learned_fusion_systems({}, base) == {}
    assert FusedIndex(base, "rrf", 0.5).search("bm25", "lift", None, 3) == base.bm25("lift", 3)
