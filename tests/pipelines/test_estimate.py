"""Cost before work (pipelines/estimate.py): the planner's counts, the estimate from stored costs, the costs a run
measures, and the CLI printing the table before the run starts (and the stage seconds after a failed one)."""
import json

import pytest

from pipelines.cli import parser
from pipelines.estimate import (DEFAULT_COSTS, CorpusSurvey, Knobs, StageWork, chunks_for_bytes, estimate,
                                format_estimate, knobs_from_args, measured_costs, plan_run, survey_corpus)

KNOBS = Knobs(queries_per_chunk=2, max_chunks=500, label_queries=300, candidates=3, judge_queries=60, epochs=1.0,
              max_steps=0, biencoder_batch=32, reranker_steps=0, reranker_min_steps=300, reranker_batch=16, curve=True,
              curve_sizes=(100, 300, 5000), curve_seeds=(0, 1), offtheshelf_reranker="upr", offtheshelf_first_stages=1,
              offtheshelf_query_kinds=("synthetic", "human"), rerank_depth=20)


def _by_stage(work):
    return {w.stage: w for w in work}


def test_the_plan_counts_each_stages_items_from_the_arguments():
    survey = CorpusSurvey(documents=800, chunks=1000, chunks_from="document sizes", human_queries=(225, 40))
    work = _by_stage(plan_run(KNOBS, survey, train_rows_per_query=0.7))
    assert work["chunks"].items == 800 and work["baseline_index"].items == work["finetuned_index"].items == 1000
    assert work["synthetic_queries"].items == work["synthetic_queries"].llm_calls == 500 * 2   # min(500, 1000) x 2
    assert work["relevance_labels"].llm_calls == 300 * (3 + 1)
    assert work["judge_agreement"].llm_calls == (60 + 40) * 13          # <= 60 queries a set, 13 pairs a query
    assert work["finetuned_biencoder"].items == 22                      # 700 triplet rows / batch 32, one epoch
    assert work["finetuned_crossencoder"].items == 300                  # 1,400 pairs / 16 = 88 < the 300-step floor
    assert work["learning_curve"].items == 2 * (4 + 10)                 # sizes 100, 300 (5000 > 700 rows) x 2 seeds
    assert work["evaluation_report"].llm_calls == (200 + 265) * 20      # (synthetic test + human) x depth x 1 stage


def test_the_plan_follows_the_knobs_that_change_it():
    survey = CorpusSurvey(documents=10, chunks=1000, chunks_from="document sizes")
    knobs = KNOBS.__class__(**{**KNOBS.__dict__, "max_chunks": 0, "label_queries": 0, "max_steps": 7,
                               "reranker_steps": 50, "curve": False, "offtheshelf_reranker": ""})
    work = _by_stage(plan_run(knobs, survey))
    assert work["synthetic_queries"].llm_calls == 2000 and work["relevance_labels"].llm_calls == 2000 * 4   # 0 = all
    assert (work["finetuned_biencoder"].items, work["finetuned_crossencoder"].items) == (7, 50)
    assert work["learning_curve"].items == 0 and work["learning_curve"].detail == "off"
    assert work["evaluation_report"].llm_calls == 0 and work["judge_agreement"].llm_calls == 0   # no human set
    only = KNOBS.__class__(**{**KNOBS.__dict__, "only": ("documents", "human_queries", "chunks")})
    assert [w.stage for w in plan_run(only, survey)] == ["chunks"]


def test_knobs_not_given_take_the_stage_config_defaults():
    from assets.queries import QueryGenConfig
    from assets.training.reranker import RerankerConfig

    knobs = knobs_from_args(parser().parse_args(["run"]))
    assert knobs.max_chunks == QueryGenConfig.model_fields["max_chunks"].default
    assert (knobs.reranker_steps, knobs.reranker_min_steps) == (0, RerankerConfig.model_fields["min_steps"].default)
    assert knobs.offtheshelf_reranker == "upr" and knobs.curve
    given = knobs_from_args(parser().parse_args(["run", "--max-chunks", "0", "--no-learning-curve", "--curve-sizes",
                                                 "50", "--offtheshelf-reranker", "", "--only", "chunks"]))
    assert (given.max_chunks, given.curve, given.curve_sizes, given.offtheshelf_reranker, given.only) == (
        0, False, (50,), "", ("chunks",))


def test_the_survey_counts_documents_and_estimates_chunks_from_their_sizes(tmp_path, tiny_beir):
    assert chunks_for_bytes(100) == 1 and chunks_for_bytes(int(4.3 * 256)) == 1
    assert chunks_for_bytes(int(4.3 * (256 + 192 * 2))) == 3
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("word " * 1000)      # 5,000 bytes ~ 1,163 tokens: 1 + ceil(907 / 192) = 6 windows
    (folder / "b.txt").write_text("short text")
    (folder / "c.png").write_bytes(b"\x89PNG" * 100)  # not a document
    survey = survey_corpus(folder, tmp_path / "home")
    assert (survey.documents, survey.chunks, survey.human_queries) == (2, 7, ())
    beir = survey_corpus(tiny_beir, tmp_path / "home")
    n_docs = sum(1 for line in (tiny_beir / "corpus.jsonl").read_text().splitlines() if line.strip())
    assert beir.documents == n_docs and beir.chunks >= n_docs and beir.human_queries == (6,)


def test_the_last_runs_chunks_per_document_beat_the_size_estimate(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.md").write_text("word " * 10)
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    (home / "state" / "stage_costs.json").write_text(json.dumps(
        {"corpus": {"path": str(folder.resolve()), "documents": 2, "chunks": 5}}))
    survey = survey_corpus(folder, home)
    assert (survey.chunks, survey.chunks_from) == (10, "the last run")   # 4 documents x 2.5 chunks each
    assert survey_corpus(folder, tmp_path / "other").chunks == 4         # no run there: 1 chunk a short document


def test_the_estimate_uses_stored_costs_then_defaults_and_cached_calls_are_free():
    work = [StageWork("synthetic_queries", 100, "", 100), StageWork("relevance_labels", 400, "", 400),
            StageWork("finetuned_biencoder", 10, ""), StageWork("learning_curve", 0, "off")]
    est = estimate(work, {"synthetic_queries": {"per_item": 2.0, "fixed": 5.0}}, {"query": 30, "judge": 1000},
                   costs_from="stored")
    rows = {r.stage: r for r in est.rows}
    assert rows["synthetic_queries"].cached == 30 and rows["synthetic_queries"].seconds == 5.0 + 70 * 2.0
    assert rows["relevance_labels"].cached == 400 and rows["relevance_labels"].seconds == 0   # all in the cache
    bi = DEFAULT_COSTS["finetuned_biencoder"]
    assert rows["finetuned_biencoder"].seconds == bi["fixed"] + 10 * bi["per_item"]      # no stored cost: default
    assert rows["learning_curve"].seconds == 0                                            # off: nothing, not its fixed
    assert est.seconds == pytest.approx(sum(r.seconds for r in est.rows) + DEFAULT_COSTS["other"]["fixed"])
    assert est.llm_calls == 500
    text = format_estimate(est, CorpusSurvey(1, 1, "document sizes"))
    assert "<= 100" in text and "holds 1,000 judge, 30 query answers" in text and "total" in text


def test_a_run_measures_seconds_an_item_and_keeps_what_it_did_not_do():
    materializations = {
        "documents": {"n_documents": 100, "corpus_path": "/data/c"}, "chunks": {"n_chunks": 250},
        "baseline_index": {"chunks_embedded": 250}, "synthetic_queries": {"llm_calls": 0, "n_queries": 200},
        "training_triplets": {"n_train": 150},
        "finetuned_biencoder": {"retrained": True, "steps": 10}, "learning_curve": {"steps": 4}}
    seconds = {"corpus": 1.0, "chunks": 3.0, "baseline_index": 5.0, "synthetic_queries": 2.0,
               "finetuned_biencoder": 130.0, "learning_curve": 50.0, "query_splits": 0.5, "some_check": 0.25}
    previous = {"stages": {"finetuned_crossencoder": {"per_item": 4.0, "fixed": 9.0}}, "run_id": "old"}
    costs = measured_costs(materializations, seconds, previous, run_id="r1")
    stages = costs["stages"]
    assert stages["chunks"]["per_item"] == pytest.approx(4.0 / 100) and stages["chunks"]["items"] == 100
    assert stages["baseline_index"]["per_item"] == pytest.approx(5.0 / 250)
    assert stages["finetuned_biencoder"] == {"per_item": 10.0, "fixed": 30.0, "items": 10, "seconds": 130.0}
    assert stages["learning_curve"]["per_item"] == pytest.approx((50.0 - 30.0) / 4)
    assert stages["synthetic_queries"]["fixed"] == 2.0   # every call cached: its overhead, the default a call kept
    assert stages["synthetic_queries"]["per_item"] == DEFAULT_COSTS["synthetic_queries"]["per_item"]
    assert stages["finetuned_crossencoder"] == {"per_item": 4.0, "fixed": 9.0}   # not run: the last measurement
    assert stages["other"]["fixed"] == 0.75 and stages["other"]["steps"] == 2
    assert costs["corpus"] == {"path": "/data/c", "documents": 100, "chunks": 250}
    assert costs["train_rows_per_query"] == 0.75 and costs["run_id"] == "r1"


def _cli(tmp_path, corpus, monkeypatch, *extra):
    from pipelines.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    return main(["run", "--corpus", str(corpus), "--home", str(tmp_path / "home"), *extra])


def test_the_cli_prints_the_plan_before_the_run_and_a_run_stores_its_costs(tmp_path, tiny_beir, capsys, monkeypatch):
    import pipelines.cli as cli

    printed_before = []
    real = cli.run_flywheel

    def recording(args):
        printed_before.append(capsys.readouterr().err)   # what had been printed when the run started
        return real(args)

    monkeypatch.setattr(cli, "run_flywheel", recording)
    code = _cli(tmp_path, tiny_beir, monkeypatch, "--only", "documents,human_queries,chunks,run_stats")
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    plan = printed_before[0]
    assert "about to do" in plan and "built-in defaults" in plan and "documents ->" in plan
    assert "synthetic_queries" not in plan                      # --only: the stages it leaves out are not planned
    costs = json.loads((tmp_path / "home" / "state" / "stage_costs.json").read_text())
    assert costs["stages"]["chunks"]["items"] == costs["corpus"]["documents"] > 0
    assert costs["corpus"]["path"] == str(tiny_beir.resolve())
    code = _cli(tmp_path, tiny_beir, monkeypatch, "--only", "documents,human_queries,chunks")
    second = printed_before[1]
    assert code == 0 and "this machine's last run in the home" in second
    assert f"-> ~{costs['corpus']['chunks']} chunks (from the last run)" in second


def test_a_failed_run_still_prints_the_seconds_of_each_stage(tmp_path, tiny_beir, capsys, monkeypatch):
    import assets.corpus

    def broken(*args, **kwargs):
        raise RuntimeError("chunker broke")

    monkeypatch.setattr(assets.corpus, "load_tokenizer", broken)   # inside the chunks step
    code = _cli(tmp_path, tiny_beir, monkeypatch, "--only", "documents,human_queries,chunks")
    err = capsys.readouterr().err
    assert code == 1
    seconds = err.split("stage seconds and peak RSS (MiB):\n", 1)[1]
    assert "  corpus " in seconds and "  chunks (failed) " in seconds and "flywheel run failed after" in err
    failed = next(line for line in seconds.splitlines() if line.startswith("  chunks (failed) "))
    assert len(failed.split()) == 4   # name, "(failed)", its seconds and its peak MiB
