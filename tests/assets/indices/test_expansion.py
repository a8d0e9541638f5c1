"""doc2query expansion: which queries expand a chunk (tier 1), and the expanded table on the tiny corpus (tier 2):
no test or human query is in it, a planted test query finds nothing, the vectors are the base table's."""
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.corpus.readers import HumanQuerySet
from assets.evaluation import evaluate_query_set, make_encoder
from assets.evaluation.scoring import synthetic_query_set
from assets.indices import BASELINE_TABLE, build_index
from assets.indices.expansion import (SEPARATOR, ExpansionConfig, appended_queries, drop_lowest, expanded_chunks,
                                      expanded_index, expansion_queries, expansion_systems, leaked_test_queries,
                                      no_test_query_in_expansion)
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from tests.conftest import tiny_documents

LABELS = ["query_id", "chunk_id", "grade", "score", "judge", "is_source"]


def _queries(rows):
    return pd.DataFrame(rows, columns=["query_id", "chunk_id", "doc_id", "style", "text"])


def _splits(rows):
    return pd.DataFrame([{"query_id": q, "doc_id": d, "split": s, "style": "keywords", "text": t, "positives": [c],
                          "labelled": False} for q, c, d, s, t in rows],
                        columns=["query_id", "doc_id", "split", "style", "text", "positives", "labelled"])


def test_only_train_and_validation_queries_the_judge_kept_expand_their_source_chunk():
    sq = _queries([("q1", "c1", "d1", "keywords", "lift wing"), ("q2", "c2", "d2", "keywords", "heat flux"),
                   ("q3", "c3", "d3", "keywords", "shock wave"), ("q4", "c1", "d1", "keywords", "Lift  wing?"),
                   ("q5", "c4", "d4", "keywords", "nozzle throat"), ("q6", "c5", "d5", "keywords", "drag plate"),
                   ("q7", "c6", "d6", "keywords", "vortex shedding")])
    splits = _splits([("q1", "c1", "d1", "train", "lift wing"), ("q2", "c2", "d2", "validation", "heat flux"),
                      ("q3", "c3", "d3", "test", "shock wave"), ("q4", "c1", "d1", "train", "Lift  wing?"),
                      ("q5", "c4", "d4", "train", "nozzle throat"), ("q7", "c6", "d6", "train", "vortex shedding")])
    labels = pd.DataFrame([("q5", "c4", 1, 0.2, "j", True), ("q2", "c2", 3, 0.9, "j", True),
                           ("q2", "c9", 0, 0.1, "j", False)], columns=LABELS)   # the judge denied q5's source
    kept, stats = expansion_queries(sq, splits, labels, forbidden_texts={"vortex shedding"})
    assert kept[["query_id", "chunk_id", "split"]].values.tolist() == [["q1", "c1", "train"], ["q2", "c2", "validation"]]
    assert stats == {"queries_written": 7, "not_in_splits": 1, "test_split": 1, "judge_denied": 1,
                     "same_text_as_test": 1, "duplicate": 1}   # q6 not in splits, q3 test, q5 denied, q7, q4 = q1
    kept_low, _ = expansion_queries(sq, splits, labels, set(), relevant_grade=1)
    assert "q5" in set(kept_low["query_id"])    # grade 1 is relevant at threshold 1


def test_drop_lowest_removes_the_lowest_share_and_refuses_a_fraction_that_drops_all():
    kept = pd.DataFrame({"query_id": ["a", "b", "c", "d", "e"], "chunk_id": list("vwxyz"), "split": "train",
                         "text": list("ABCDE")})
    out, lowest = drop_lowest(kept, np.array([0.9, 0.1, 0.5, 0.1, 0.7]), 0.5)   # floor(2.5) = 2 dropped: b, d
    assert out["query_id"].tolist() == ["a", "c", "e"] and lowest == 0.5
    same, none = drop_lowest(kept, np.zeros(5), 0.1)                           # floor(0.5) = 0: nothing
    assert same is kept and none is None
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        drop_lowest(kept, np.zeros(5), 1.0)


def test_expanded_chunks_append_queries_and_appended_queries_reads_them_back():
    chunks = pd.DataFrame({"chunk_id": ["c1", "c2"], "doc_id": ["d1", "d2"], "text": ["about wings", "about heat"]})
    kept = pd.DataFrame({"query_id": ["q1", "q2"], "chunk_id": ["c1", "c1"], "split": "train",
                         "text": ["lift wing", "stall angle"]})
    out, n = expanded_chunks(chunks, kept)
    assert n == 1 and out["text"].tolist() == [f"about wings{SEPARATOR}lift wing{SEPARATOR}stall angle", "about heat"]
    assert chunks["text"].tolist() == ["about wings", "about heat"]          # the input is untouched
    assert appended_queries(out["text"][0], "about wings") == ["lift wing", "stall angle"]
    fields = dict(zip(out["chunk_id"], out["text"]))
    text = dict(zip(chunks["chunk_id"], chunks["text"]))
    assert leaked_test_queries(fields, text, {"stall angle"}) == ["stall angle"]
    assert leaked_test_queries(fields, text, {"about heat", "about wings"}) == []   # a chunk's own text is no query


# ---- tier 2: the asset on the tiny corpus ---------------------------------------------------------------------

ENCODED: list[str] = []   # a module list: Dagster hands the asset a copy of the resource it is given


class RecordingEmbedder(EmbedderResource):
    """The tiny model, remembering every text it was asked to encode."""

    def encode(self, texts, path=None, **kw):
        ENCODED.extend(texts)
        return super().encode(texts, path, **kw)


PLANTED_TEST, PLANTED_TRAIN = "zorblax quintessent", "vexillum plumbago"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_path):
    docs = tiny_documents()
    chunks = pd.DataFrame({"chunk_id": [f"c-{d['_id']}" for d in docs], "doc_id": [d["_id"] for d in docs],
                           "text": [d["text"] for d in docs]})
    lancedb = LanceDBResource(uri=str(tmp_path_factory.mktemp("expansion") / "db"))
    embedder = EmbedderResource(model=tiny_model_path)
    base = build_index(dg.build_asset_context(), chunks, embedder, lancedb, BASELINE_TABLE, None).value
    split = {d["_id"]: ("test", "validation", "train", "train", "train")[i % 5] for i, d in enumerate(docs)}
    rows = []
    for i, d in enumerate(docs):   # each chunk a keyword query from its title, the first test and train ones planted
        text = d["title"].lower().replace("on ", "", 1) + " measurements"
        if i == 0:
            text = PLANTED_TEST
        if i == 2:
            text = PLANTED_TRAIN
        rows.append((f"q{i}", f"c-{d['_id']}", d["_id"], split[d["_id"]], text))
    sq = _queries([(q, c, d, "keywords", t) for q, c, d, _, t in rows])
    splits = _splits([(q, c, d, s, t) for q, c, d, s, t in rows])
    labels = pd.DataFrame([("q3", "c-" + docs[3]["_id"], 0, 0.0, "j", True)], columns=LABELS)   # q3: denied
    human = [HumanQuerySet("tiny/test", {"h1": "camber measurements"}, {"h1": {docs[4]["_id"]: 2}})]
    return chunks, sq, splits, labels, human, base, lancedb, tiny_model_path


def materialize(world, embedder=None, **config):
    chunks, sq, splits, labels, human, base, lancedb, model = world
    return expanded_index(context=dg.build_asset_context(), chunks=chunks, synthetic_queries=sq,
                          relevance_labels=labels, query_splits=splits, human_queries=human, baseline_index=base,
                          embedder=embedder or RecordingEmbedder(model=model), lancedb=lancedb,
                          config=ExpansionConfig(**config))


def test_no_test_or_human_query_is_in_the_table_and_a_planted_test_query_finds_nothing(world):
    chunks, sq, splits, labels, human, base, lancedb, _ = world
    out = materialize(world)
    info = out.value
    n_test = int((splits["split"] == "test").sum())
    assert info["filtered"]["test_split"] == n_test and info["filtered"]["judge_denied"] == 1
    assert info["filtered"]["same_text_as_test"] == 1                       # "camber measurements": a human query
    assert info["queries_used"] == len(sq) - n_test - 2 == info["chunks_expanded"]
    table = lancedb.open(info["table"])
    fields = dict(zip(*(table.table.to_arrow().column(c).to_pylist() for c in ("chunk_id", "text"))))
    own = dict(zip(chunks["chunk_id"], chunks["text"]))
    appended = " ".join(SEPARATOR.join(appended_queries(fields[c], own[c])) for c in fields).lower()
    held_out = [*splits.loc[splits["split"] == "test", "text"], *human[0].queries.values()]
    assert held_out and not [t for t in held_out if t.lower() in appended]   # not findable in any expanded field
    assert PLANTED_TRAIN in appended                                        # the same test could see one
    assert table.bm25(PLANTED_TEST, 5) == []                                 # no perfect match: no match at all
    assert [c for c, _ in table.bm25(PLANTED_TRAIN, 1)] == [sq.loc[2, "chunk_id"]]   # a train one: found first
    assert lancedb.open(BASELINE_TABLE).bm25(PLANTED_TRAIN, 5) == []          # ...thanks to the expansion alone
    denied = sq.loc[3]
    assert denied["text"] not in fields[denied["chunk_id"]]                 # the judge's denial is honoured
    check = no_test_query_in_expansion(info, chunks, splits, human, lancedb)
    assert check.passed and check.metadata["test_queries"].value == n_test + 1


def test_the_check_fails_on_a_table_that_holds_a_test_query(world, tmp_path):
    chunks, sq, splits, labels, human, base, lancedb, _ = world
    leaky = LanceDBResource(uri=str(tmp_path / "leaky"))
    bad = chunks.copy()
    bad.loc[5, "text"] = bad.loc[5, "text"] + SEPARATOR + PLANTED_TEST
    leaky.write_chunk_table("chunks_expanded", bad, np.zeros((len(bad), 4), "float32"))
    check = no_test_query_in_expansion({"enabled": True, "table": "chunks_expanded"}, chunks, splits, human, leaky)
    assert not check.passed and check.metadata["examples"].value == [PLANTED_TEST]


def test_the_vectors_are_the_base_tables_and_no_chunk_is_embedded(world):
    chunks, *_, base, lancedb, model = world
    embedder = RecordingEmbedder(model=model)
    ENCODED.clear()
    out = materialize(world, embedder=embedder)
    assert ENCODED == [] and out.metadata["chunks_embedded"].value == 0
    ids, expanded = lancedb.open(out.value["table"]).vectors()
    base_ids, base_vectors = lancedb.open(BASELINE_TABLE).vectors()
    order = {c: i for i, c in enumerate(base_ids)}
    np.testing.assert_array_equal(expanded, base_vectors[[order[c] for c in ids]])
    low = materialize(world, embedder=embedder, drop_lowest_fraction=0.5)   # doc2query--: only queries embedded
    assert ENCODED and set(ENCODED) <= set(world[1]["text"]) - set(chunks["text"])
    assert low.value["filtered"]["lowest_scoring"] == out.value["queries_used"] // 2
    assert low.value["queries_used"] == out.value["queries_used"] - out.value["queries_used"] // 2
    assert low.value["min_score_kept"] is not None


def test_the_rows_search_the_expanded_table_and_are_the_base_rows_when_nothing_is_appended(world, tmp_path):
    chunks, sq, splits, labels, human, base, lancedb, model = world
    embedder = EmbedderResource(model=model)
    table = lancedb.open(BASELINE_TABLE)
    qs = synthetic_query_set(splits.assign(text=[f"{t} experiments" for t in splits["text"]]), "train")
    only_test = splits.assign(split="test")        # every query held out: the expansion appends none
    empty = expanded_index(context=dg.build_asset_context(), chunks=chunks, synthetic_queries=sq,
                           relevance_labels=labels, query_splits=only_test, human_queries=human, baseline_index=base,
                           embedder=embedder, lancedb=lancedb, config=ExpansionConfig()).value
    assert empty["queries_used"] == 0 and empty["chunks_expanded"] == 0
    systems = {"bm25": (table, "bm25", None), "hybrid_base": (table, "hybrid", None),
               **expansion_systems(empty, lancedb)}
    _, pq = evaluate_query_set(qs, systems, make_encoder(embedder, {}))
    wide = pq.pivot(index="qid", columns="retriever", values="ndcg@10")
    assert wide["bm25"].nunique() > 1
    pd.testing.assert_series_equal(wide["bm25_expanded"], wide["bm25"], check_names=False)
    pd.testing.assert_series_equal(wide["hybrid_expanded"], wide["hybrid_base"], check_names=False)
    full = materialize(world).value                 # the train queries appended: their own chunks now match them
    _, pq = evaluate_query_set(qs, {"bm25": (table, "bm25", None), **expansion_systems(full, lancedb)},
                               make_encoder(embedder, {}))
    wide = pq.pivot(index="qid", columns="retriever", values="ndcg@10")
    assert wide["bm25_expanded"].mean() > wide["bm25"].mean()
    off = materialize(world, enabled=False)
    assert off.value == {"enabled": False} and expansion_systems(off.value, lancedb) == {}
