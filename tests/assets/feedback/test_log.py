"""Tier 1: the feedback log reader, its bad-row reasons, the signal weights and the leakage drop."""
import json

import pandas as pd
import pytest

from assets.feedback.log import SignalWeights, aggregate_file, combine, combine_daily, label_of, log_files, pair_grade
from assets.feedback.resolve import PassageMatcher, feedback_frames, judged_rows, logged_query_id
from assets.corpus.readers import HumanQuerySet

DOCS = pd.DataFrame({"doc_id": ["d1", "d2", "d3"], "title": ["", "", ""],
                     "text": ["lift on a wing at high angle of attack", "heat flux through a wall",
                              "shock waves in supersonic nozzles and their reflection from walls"]})
CHUNKS = pd.DataFrame({"chunk_id": ["c1", "c2", "c3"], "doc_id": ["d1", "d2", "d3"], "text": DOCS["text"]})


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def frames(tmp_path, rows, test_queries=(), weights=SignalWeights()):
    agg, daily, report = aggregate_file(write_jsonl(tmp_path / "log.jsonl", rows))
    pairs, queries, counts = feedback_frames(agg, daily, DOCS, CHUNKS, set(test_queries), weights)
    return pairs, queries, counts, report


def grade_of(pairs, doc):
    return pairs.set_index("doc_id").loc[doc, "grade"]


def test_every_bad_row_kind_is_counted_and_none_is_fatal(tmp_path):
    rows = [
        {"query": "wing lift", "doc_id": "d1", "signal": "cited"},             # good
        "{not json",                                                           # bad_json
        "[1, 2]",                                                              # not_an_object
        {"query": "  ", "doc_id": "d1", "signal": "cited"},                    # empty_query
        {"query": "wing lift", "signal": "cited"},                             # no_target
        {"query": "wing lift", "doc_id": "d1", "signal": "liked"},             # unknown_signal
        {"query": "wing lift", "doc_id": "d1", "signal": "judged"},            # bad_grade (judged needs a grade)
        {"query": "wing lift", "doc_id": "d1", "signal": "judged", "grade": 7},  # bad_grade
        {"query": "wing lift", "doc_id": "d1", "signal": "shown", "rank": -2},   # bad_rank
        {"query": "heat", "doc_id": "d2", "signal": "clicked", "timestamp": "yesterday"},  # bad_timestamp, kept
        {"query": "wing lift", "doc_id": "nope", "signal": "cited"},           # unknown_document
        {"query": "wing lift", "chunk_id": "nope", "signal": "cited"},         # unknown_chunk
        {"query": "wing lift", "passage": "nothing like any chunk at all", "signal": "cited"},  # passage_not_found
        "x" * 1_100_000,                                                       # too_large
    ]
    pairs, queries, counts, report = frames(tmp_path, rows)
    skipped = {**report.skipped, **counts}
    for reason in ("bad_json", "not_an_object", "empty_query", "no_target", "unknown_signal", "bad_rank",
                   "bad_timestamp", "unknown_document", "unknown_chunk", "passage_not_found", "too_large"):
        assert skipped[reason] == 1, reason
    assert skipped["bad_grade"] == 2
    assert report.rows == 5      # the good row, the bad-timestamp row kept, and the three with unknown targets
    assert sorted(pairs["doc_id"]) == ["d1", "d2"]
    assert set(queries["text"]) == {"wing lift", "heat"}


def test_signal_weights_map_as_documented(tmp_path):
    rows = [
        {"query": "q", "doc_id": "d1", "signal": "cited"},
        {"query": "q", "doc_id": "d1", "signal": "thumbs_down"},     # a citation beats a thumbs down
        {"query": "q", "doc_id": "d2", "signal": "clicked"},
        {"query": "q", "doc_id": "d2", "signal": "thumbs_down"},     # ... a thumbs down beats a click
        {"query": "r", "doc_id": "d2", "signal": "thumbs_up"},
        {"query": "r", "doc_id": "d3", "signal": "judged", "grade": 1},
        {"query": "r", "doc_id": "d3", "signal": "cited"},            # an explicit grade beats every signal
        {"query": "s", "doc_id": "d1", "signal": "clicked"},
    ]
    pairs, _, _, _ = frames(tmp_path, rows)
    by = {(r.query_id, r.doc_id): (r.grade, r.label) for r in pairs.itertuples()}
    q, r, s = (logged_query_id(x) for x in "qrs")
    assert by[(q, "d1")] == (3, "positive")
    assert by[(q, "d2")] == (0, "negative")
    assert by[(r, "d2")] == (2, "positive")
    assert by[(r, "d3")] == (1, "neutral")
    assert by[(s, "d1")] == (2, "positive")
    heavier = frames(tmp_path, rows, weights=SignalWeights(clicked=1))[0]
    assert heavier.set_index(["query_id", "doc_id"]).loc[(s, "d1"), "label"] == "neutral"


def test_shown_is_a_weak_negative_only_when_skipped_above_a_click(tmp_path):
    rows = [
        {"query": "q", "doc_id": "d1", "signal": "shown", "rank": 1, "session_id": "a"},    # skipped above the click
        {"query": "q", "doc_id": "d2", "signal": "clicked", "rank": 2, "session_id": "a"},
        {"query": "q", "doc_id": "d3", "signal": "shown", "rank": 3, "session_id": "a"},    # below: no evidence
        {"query": "r", "doc_id": "d1", "signal": "shown", "rank": 1, "session_id": "b"},    # no click at all
    ]
    pairs, queries, counts, _ = frames(tmp_path, rows)
    q = pairs[pairs["query_id"] == logged_query_id("q")].set_index("doc_id")
    assert q.loc["d1", "label"] == "negative" and bool(q.loc["d1", "weak"])
    assert q.loc["d2", "label"] == "positive" and not bool(q.loc["d2", "weak"])
    assert "d3" not in q.index
    assert logged_query_id("r") not in set(pairs["query_id"])
    assert logged_query_id("r") in set(queries["query_id"])      # still traffic, for review and segments
    assert counts["shown_only"] == 2
    never = frames(tmp_path, rows, weights=SignalWeights(skip_above_negatives=False))[0]
    assert "negative" not in set(never["label"])


def test_a_logged_test_query_is_dropped_and_counted(tmp_path):
    rows = [{"query": "What is the LIFT of a wing?", "doc_id": "d1", "signal": "cited"},
            {"query": "heat flux", "doc_id": "d2", "signal": "cited"}]
    pairs, queries, counts, _ = frames(tmp_path, rows, test_queries={"what is the lift of a wing"})
    assert counts["test_queries_dropped"] == 1 and counts["test_query"] == 1
    assert list(queries["text"]) == ["heat flux"]
    assert list(pairs["doc_id"]) == ["d2"]


def test_passages_match_chunks_exactly_or_by_most_shingles():
    m = PassageMatcher(CHUNKS)
    assert m.match("LIFT on a wing at high   angle of attack") == "c1"
    assert m.match("shock waves in supersonic nozzles and their reflection") == "c3"   # a part of c3
    assert m.match("a passage about something else entirely and at length") is None


def test_daily_counts_and_sessions_feed_the_logged_queries(tmp_path):
    rows = [{"query": "q", "doc_id": "d1", "signal": "clicked", "session_id": "a", "timestamp": "2026-11-01T10:00:00Z"},
            {"query": "q", "doc_id": "d2", "signal": "shown", "session_id": "b", "timestamp": "2026-11-03T10:00:00Z"},
            {"query": "Q?", "doc_id": "d2", "signal": "shown", "session_id": "b", "timestamp": 1793707200}]
    _, queries, _, _ = frames(tmp_path, rows)
    row = queries.set_index("text").loc["q"]
    assert row["n_interactions"] == 3 and row["n_sessions"] == 2
    assert row["daily"] == {"2026-11-01": 1, "2026-11-03": 2}
    assert str(row["first_seen"].date()) == "2026-11-01" and str(row["last_seen"].date()) == "2026-11-03"


def test_a_folder_of_daily_files_combines_and_parquet_reads(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    write_jsonl(folder / "2026-11-01.jsonl", [{"query": "q", "doc_id": "d1", "signal": "clicked"}])
    pd.DataFrame([{"query": "q", "doc_id": "d1", "signal": "cited", "rank": 1}]).to_parquet(folder / "2026-11-02.parquet")
    (folder / "notes.txt").write_text("not a log")
    files = log_files(folder)
    assert [f.name for f in files] == ["2026-11-01.jsonl", "2026-11-02.parquet"]
    parts = [aggregate_file(f) for f in files]
    agg = combine([p[0] for p in parts])
    assert len(agg) == 1 and agg.iloc[0]["clicked"] == 1 and agg.iloc[0]["cited"] == 1
    pairs, _, _ = feedback_frames(agg, combine_daily([p[1] for p in parts]), DOCS, CHUNKS, set(), SignalWeights())
    assert list(pairs["grade"]) == [3]
    with pytest.raises(ValueError, match="does not exist"):
        log_files(tmp_path / "missing")


def test_an_empty_log_gives_empty_frames_with_their_columns():
    pairs, queries, counts = feedback_frames(combine([]), combine_daily([]), DOCS, CHUNKS, set(), SignalWeights())
    assert pairs.empty and queries.empty
    assert {"query_id", "doc_id", "chunk_id", "grade", "label", "weak"} <= set(pairs.columns)
    assert {"query_id", "text", "daily", "n_positive"} <= set(queries.columns)


def test_beir_train_qrels_are_judged_positives():
    judged = judged_rows([HumanQuerySet("tiny/train", {"1": "wing lift"}, {"1": {"d1": 1, "d3": 4}})],
                         lambda s: "qrels/train")
    pairs, queries, _ = feedback_frames(judged, combine_daily([]), DOCS, CHUNKS, set(), SignalWeights())
    assert dict(zip(pairs["doc_id"], pairs["grade"])) == {"d1": 2, "d3": 3}
    assert set(pairs["label"]) == {"positive"} and list(queries["source"]) == ["qrels/train"]


def test_a_large_log_is_read_into_pair_aggregates(tmp_path):
    """Bounded memory: the aggregate holds one row per (query, target), not per interaction."""
    path = tmp_path / "big.jsonl"
    line = json.dumps({"query": "q{}", "doc_id": "d1", "signal": "shown", "rank": 2, "session_id": "s"})
    with path.open("w") as f:
        for i in range(200_000):
            f.write(line.replace("q{}", f"q{i % 50}") + "\n")
    agg, daily, report = aggregate_file(path)
    assert report.rows == 200_000 and len(agg) == 50 and int(agg["n_interactions"].sum()) == 200_000


def test_labels():
    assert [label_of(g, 2) for g in (0, 1, 2, 3)] == ["negative", "neutral", "positive", "positive"]
    row = {"max_grade": -1, "cited": 0, "thumbs_down": 1, "thumbs_up": 2, "clicked": 0, "skipped_above": 0}
    assert pair_grade(row, SignalWeights()) == (2, False)   # more thumbs up than down


def test_yesterdays_files_are_read_from_the_cache_tonight(tmp_path):
    from assets.feedback import read_log

    folder, cache = tmp_path / "log", tmp_path / "cache"
    folder.mkdir()
    write_jsonl(folder / "2026-11-01.jsonl", [{"query": "q", "doc_id": "d1", "signal": "clicked"}, "{bad"])
    agg1, _, report1, files1 = read_log(str(folder), cache)
    assert files1 == {"files_read": 1, "files_cached": 0} and report1.skipped["bad_json"] == 1
    write_jsonl(folder / "2026-11-02.jsonl", [{"query": "q", "doc_id": "d1", "signal": "cited"}])
    agg2, _, report2, files2 = read_log(str(folder), cache)
    assert files2 == {"files_read": 1, "files_cached": 1}
    assert report2.rows == 2 and report2.skipped["bad_json"] == 1          # the cached file's counts come back too
    assert agg2.iloc[0]["clicked"] == 1 and agg2.iloc[0]["cited"] == 1
    write_jsonl(folder / "2026-11-01.jsonl", [{"query": "q", "doc_id": "d2", "signal": "clicked"}])   # edited
    assert read_log(str(folder), cache)[3] == {"files_read": 1, "files_cached": 1}
