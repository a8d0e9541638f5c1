from pipelines.run_stats import summarize_run


def test_summarize_run_sums_costs_over_assets_and_keeps_the_chunk_diff():
    stats = summarize_run(
        {"chunks": {"chunks_total": 100, "chunks_new": 1, "chunks_removed": 2, "n_chunks": 100},
         "synthetic_queries": {"llm_calls": 3, "llm_cache_hits": 97},
         "relevance_labels": {"llm_calls": 5, "llm_cache_hits": 395},
         "baseline_index": {"chunks_embedded": 1}, "finetuned_index": {"chunks_embedded": 1},
         "finetuned_biencoder": {"retrained": False, "retrain_reason": "skipped: only 3.0% ..."}},
        {"chunks": 1.5, "baseline_index": 2.25}, run_id="r")
    assert (stats["llm_calls"], stats["llm_cache_hits"], stats["chunks_embedded"]) == (8, 492, 2)
    assert (stats["chunks_total"], stats["chunks_new"], stats["chunks_removed"]) == (100, 1, 2)
    assert stats["llm_calls_by_asset"] == {"relevance_labels": 5, "synthetic_queries": 3}
    assert stats["retrained"] is False and stats["retrain_reason"].startswith("skipped")
    assert stats["seconds_by_asset"] == {"chunks": 1.5, "baseline_index": 2.25} and stats["seconds_total"] == 3.75


def test_the_readers_skip_counts_reach_the_run_stats():
    stats = summarize_run({"corpus_report": {"skipped_binary": 2, "skipped_empty": 0, "qrels_missing_document": 3,
                                             "human_queries_dropped": 1, "documents_read": 40},
                           "logged_queries": {"skipped_bad_json": 1, "rows_read": 9}}, {})
    assert stats["input_skipped"] == {"corpus_report/binary": 2, "corpus_report/human_queries_dropped": 1,
                                      "corpus_report/qrels_missing_document": 3, "logged_queries/bad_json": 1}
