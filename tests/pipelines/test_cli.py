from pipelines.cli import build_run_config, parser


def test_only_given_knobs_reach_the_run_config():
    args = parser().parse_args(["run", "--corpus", "/data/x", "--label-queries", "50", "--max-steps", "3"])
    cfg = build_run_config(args)["ops"]
    assert cfg["corpus"]["config"] == {"path": "/data/x"}
    assert cfg["relevance_labels"]["config"] == {"max_queries": 50}
    assert cfg["finetuned_biencoder"]["config"] == {"max_steps": 3}
    assert "synthetic_queries" not in cfg


def test_defaults_leave_every_stage_default_alone():
    cfg = build_run_config(parser().parse_args(["run"]))
    assert cfg["ops"] == {} and cfg["loggers"]["console"]["config"]["log_level"] == "INFO"


def test_openai_backend_needs_url_and_model(tmp_path):
    import pytest

    from pipelines.cli import make_llm

    with pytest.raises(SystemExit, match="--llm-base-url"):
        make_llm(parser().parse_args(["run", "--llm-backend", "openai"]), tmp_path)
    llm = make_llm(parser().parse_args(["run", "--llm-backend", "openai", "--llm-base-url", "http://127.0.0.1:9/v1",
                                        "--llm-model", "m"]), tmp_path)
    assert llm.model_id() and llm.cache_path.endswith("llm_cache.sqlite")


def test_a_dead_cli_run_gives_back_its_pool_slot(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import dagster as dg

    from pipelines.cli import release_abandoned_runs

    shutil.copy(Path(__file__).resolve().parents[2] / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = dg.DagsterInstance.get()

    @dg.op
    def noop():
        return 1

    @dg.job
    def j():
        noop()

    dead = instance.create_run_for_job(j, tags={"flywheel/launched_by": "cli", "flywheel/pid": "999999999"})
    alive = instance.create_run_for_job(j, tags={"flywheel/launched_by": "cli", "flywheel/pid": str(__import__("os").getpid())})
    for run in (dead, alive):
        instance.handle_run_event(run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name="j"))
    storage = instance.event_log_storage
    storage.set_concurrency_slots("llm", 1)
    assert storage.claim_concurrency_slot("llm", dead.run_id, "noop").is_claimed
    assert release_abandoned_runs(instance) == [dead.run_id]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    assert storage.claim_concurrency_slot("llm", alive.run_id, "noop").is_claimed   # the slot is free again


def test_rerank_and_distill_knobs_and_only_keeps_config_of_selected_assets():
    args = parser().parse_args(["run", "--distill", "--max-steps", "4", "--rerank-depth", "10",
                                "--offtheshelf-first-stages", "bm25, hybrid_base", "--reranker-steps", "7"])
    ops = build_run_config(args)["ops"]
    assert ops["distilled_biencoder"]["config"] == {"enabled": True, "max_steps": 4}
    assert ops["finetuned_crossencoder"]["config"] == {"max_steps": 7}
    assert ops["evaluation_report"]["config"] == {"rerank_depth": 10, "offtheshelf_first_stages": ["bm25", "hybrid_base"]}
    only = build_run_config(parser().parse_args(["run", "--max-steps", "4", "--rerank-depth", "10",
                                                 "--only", "evaluation_report"]))["ops"]
    assert set(only) == {"evaluation_report"}      # config of unselected assets would be rejected by Dagster
    assert "distilled_biencoder" not in build_run_config(parser().parse_args(["run"]))["ops"]


def test_adapter_knobs_turn_it_off_or_choose_its_kind():
    assert build_run_config(parser().parse_args(["run", "--no-adapter"]))["ops"]["query_adapter"]["config"] == {
        "enabled": False}
    assert build_run_config(parser().parse_args(["run", "--adapter-kind", "mlp"]))["ops"]["query_adapter"]["config"] == {
        "kind": "mlp"}
    assert "query_adapter" not in build_run_config(parser().parse_args(["run"]))["ops"]   # on, linear: its defaults


def test_learning_curve_knobs_reach_its_config_with_the_shipped_recipe():
    import pytest

    args = parser().parse_args(["run", "--curve-sizes", "100, 250,1000", "--curve-seeds", "0,1,2",
                                "--learning-rate", "2e-5"])
    assert build_run_config(args)["ops"]["learning_curve"]["config"] == {
        "sizes": [100, 250, 1000], "seeds": [0, 1, 2], "learning_rate": 2e-5}
    off = build_run_config(parser().parse_args(["run", "--no-learning-curve"]))["ops"]["learning_curve"]["config"]
    assert off == {"enabled": False}
    with pytest.raises(SystemExit, match="comma list of whole numbers"):
        build_run_config(parser().parse_args(["run", "--curve-sizes", "100,all"]))


def test_run_with_only_some_assets_reports_what_it_materialized(tmp_path, tiny_beir, capsys, monkeypatch):
    """`--only` that leaves the evaluation out succeeds and says what ran, not an older (or missing) report."""
    from pipelines.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    code = main(["run", "--corpus", str(tiny_beir), "--home", str(tmp_path / "home"),
                 "--only", "documents,human_queries,chunks"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "materialized: chunks, corpus" in out and "report:" not in out and "run stats:" not in out


def test_feedback_fewshot_and_curve_knobs_reach_their_stages(tmp_path):
    from pipelines.cli import build_run_config, parser

    log = tmp_path / "log"
    args = parser().parse_args(["run", "--feedback", str(log), "--fewshot", "logged", "--curve-logged-sizes", "10,20",
                                "--judge-queries", "5"])
    ops = build_run_config(args)["ops"]
    assert ops["feedback"]["config"] == {"path": str(log.resolve())}
    assert ops["synthetic_queries"]["config"]["fewshot"] == "logged"
    assert ops["learning_curve"]["config"]["logged_sizes"] == [10, 20]
    assert ops["judge_agreement"]["config"] == {"max_queries": 5}
    assert "feedback" not in build_run_config(parser().parse_args(["run"]))["ops"]   # FLYWHEEL_FEEDBACK decides
    only = build_run_config(parser().parse_args(["run", "--feedback", str(log), "--only", "logged_queries"]))["ops"]
    assert set(only) == {"feedback"}


def test_a_corpus_that_does_not_exist_or_reads_nothing_is_refused_in_one_line_with_no_home(tmp_path, capsys):
    from pipelines.cli import main

    for corpus in (tmp_path / "no-such-folder", tmp_path / "blank"):
        if corpus.name == "blank":
            corpus.mkdir()
            (corpus / "a.md").write_text("\n")
        code = main(["run", "--corpus", str(corpus), "--home", str(tmp_path / "home")])
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1 and err.startswith(f"flywheel: corpus {corpus}") and "Traceback" not in err
        assert not (tmp_path / "home").exists()


def test_chunker_baselines_knob_names_the_chunkers_or_turns_them_off():
    def config(*argv):
        return build_run_config(parser().parse_args(["run", *argv]))["ops"].get("chunker_baselines")

    assert config() is None                                   # the asset's own default list
    assert config("--chunker-baselines", "tokens-512-64, sentences-256")["config"] == {
        "chunkers": ["tokens-512-64", "sentences-256"]}
    assert config("--chunker-baselines", "")["config"] == {"chunkers": []}
