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


def test_openai_backend_needs_url_and_model_and_passes_url_and_key_as_env_vars(tmp_path, monkeypatch):
    import dagster as dg
    import pytest

    from pipelines.cli import make_llm

    for var in ("FLYWHEEL_LLM_BASE_URL", "FLYWHEEL_LLM_MODEL", "FLYWHEEL_LLM_API_KEY"):
        monkeypatch.setenv(var, "")   # make_llm sets them for its run; setenv (not delenv) restores them after
    with pytest.raises(SystemExit, match="--llm-base-url"):
        make_llm(parser().parse_args(["run", "--llm-backend", "openai"]), tmp_path)
    llm = make_llm(parser().parse_args(["run", "--llm-backend", "openai", "--llm-base-url", "http://127.0.0.1:9/v1",
                                        "--llm-model", "m"]), tmp_path)
    assert llm.cache_path.endswith("llm_cache.sqlite")
    assert isinstance(llm.api_key, dg.EnvVar) and isinstance(llm.base_url, dg.EnvVar)   # names, not values
    assert __import__("os").environ["FLYWHEEL_LLM_BASE_URL"] == "http://127.0.0.1:9/v1"


def test_embed_backend_openai_needs_url_and_model_passes_them_as_env_vars_and_excludes_base_model(tmp_path,
                                                                                                  monkeypatch):
    import dagster as dg
    import pytest

    from pipelines.cli import make_embedder
    from resources.embedder import EmbedderResource
    from resources.embedder_openai import OpenAIEmbedderResource

    for var in ("FLYWHEEL_EMBED_BASE_URL", "FLYWHEEL_EMBED_MODEL", "FLYWHEEL_EMBED_API_KEY"):
        monkeypatch.setenv(var, "")   # make_embedder sets them for its run; setenv (not delenv) restores them after
    local = make_embedder(parser().parse_args(["run", "--base-model", "org/name"]), tmp_path)
    assert type(local) is EmbedderResource and local.model == "org/name"
    with pytest.raises(SystemExit, match="--embed-base-url"):
        make_embedder(parser().parse_args(["run", "--embed-backend", "openai", "--embed-model", "m"]), tmp_path)
    provider = ["run", "--embed-backend", "openai", "--embed-base-url", "http://127.0.0.1:9/v1", "--embed-model", "m"]
    with pytest.raises(SystemExit, match="give one of the two"):
        make_embedder(parser().parse_args([*provider, "--base-model", "org/name"]), tmp_path)
    embedder = make_embedder(parser().parse_args(provider), tmp_path)
    assert isinstance(embedder, OpenAIEmbedderResource)
    assert all(isinstance(v, dg.EnvVar) for v in (embedder.base_url, embedder.model, embedder.api_key))
    assert embedder.cache_path == str(tmp_path / "embedding_cache.sqlite")
    assert __import__("os").environ["FLYWHEEL_EMBED_BASE_URL"] == "http://127.0.0.1:9/v1"
    assert __import__("os").environ["FLYWHEEL_EMBED_API_KEY"] == "EMPTY"   # a keyless local server


def test_the_instructor_mode_comes_from_llm_mode_or_the_environment(tmp_path, monkeypatch):
    import pytest

    from pipelines.cli import make_llm

    endpoint = ["run", "--llm-backend", "openai", "--llm-base-url", "http://127.0.0.1:9/v1", "--llm-model", "m"]
    for var in ("FLYWHEEL_LLM_BASE_URL", "FLYWHEEL_LLM_MODEL", "FLYWHEEL_LLM_MODE"):
        monkeypatch.setenv(var, "")   # restored after the test
    monkeypatch.delenv("FLYWHEEL_LLM_MODE")
    assert make_llm(parser().parse_args(endpoint), tmp_path).mode == "json"
    assert make_llm(parser().parse_args([*endpoint, "--llm-mode", "tools"]), tmp_path).mode == "tools"
    monkeypatch.setenv("FLYWHEEL_LLM_MODE", "md_json")
    assert make_llm(parser().parse_args(endpoint), tmp_path).mode == "md_json"
    assert make_llm(parser().parse_args([*endpoint, "--llm-mode", "json_schema"]), tmp_path).mode == "json_schema"
    with pytest.raises(SystemExit):
        parser().parse_args([*endpoint, "--llm-mode", "xml"])
    from pipelines.cli import LLM_MODES
    from resources.llm_openai import MODES

    assert LLM_MODES == MODES


def test_the_failure_share_that_stops_an_llm_stage_is_a_cli_option(tmp_path, monkeypatch):
    from pipelines.cli import make_llm

    for var in ("FLYWHEEL_LLM_BASE_URL", "FLYWHEEL_LLM_MODEL"):
        monkeypatch.setenv(var, "")   # make_llm sets them for its run; setenv (not delenv) restores them after
    assert make_llm(parser().parse_args(["run"]), tmp_path).max_failure_share == 0.5
    local = make_llm(parser().parse_args(["run", "--llm-max-failure-share", "0.2"]), tmp_path)
    remote = make_llm(parser().parse_args(["run", "--llm-backend", "openai", "--llm-base-url", "http://127.0.0.1:9/v1",
                                           "--llm-model", "m", "--llm-max-failure-share", "0.9"]), tmp_path)
    assert (local.max_failure_share, remote.max_failure_share) == (0.2, 0.9)


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


def test_expansion_knobs_turn_it_off_or_set_the_share_dropped():
    ops = build_run_config(parser().parse_args(["run", "--no-expansion"]))["ops"]
    assert ops["expanded_index"]["config"] == {"enabled": False}
    ops = build_run_config(parser().parse_args(["run", "--expansion-drop-lowest", "0.3"]))["ops"]
    assert ops["expanded_index"]["config"] == {"drop_lowest_fraction": 0.3}
    assert "expanded_index" not in build_run_config(parser().parse_args(["run"]))["ops"]   # on, no share: its defaults


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
    started = []
    monkeypatch.setattr("resources.llm_local.start_conversion", lambda *a, **k: started.append(a))
    code = main(["run", "--corpus", str(tiny_beir), "--home", str(tmp_path / "home"),
                 "--only", "documents,human_queries,chunks"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "materialized: chunks, corpus" in out and "report:" not in out and "run stats:" not in out
    assert started == []   # no stage of it loads the LLM: its GGUF is not converted in the background


def test_only_a_selection_with_an_llm_stage_converts_the_gguf_in_advance(tmp_path):
    import dagster as dg

    from pipelines.cli import needs_llm
    from pipelines.definitions import build_definitions

    defs = build_definitions(tmp_path)
    assert not needs_llm(defs, [dg.AssetKey("chunks"), dg.AssetKey("baseline_index")])
    assert needs_llm(defs, [dg.AssetKey("chunks"), dg.AssetKey("synthetic_queries")])
    assert needs_llm(defs, [dg.AssetKey("relevance_labels")])


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


PLANTED_KEY = "sk-PLANTED-0123456789abcdef"


def _readable_bytes(path):
    """A file's bytes and, for a sqlite database, every zlib-compressed blob in it decompressed: Dagster keeps
    its job snapshots (with the resources' config values) that way, where a plain byte search cannot see."""
    import sqlite3
    import zlib

    data = path.read_bytes()
    yield data
    if data.startswith(b"SQLite format 3\0"):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for (table,) in con.execute("select name from sqlite_master where type = 'table'").fetchall():
                for row in con.execute(f'select * from "{table}"'):
                    for value in row:
                        if isinstance(value, bytes):
                            try:
                                yield zlib.decompress(value)
                            except zlib.error:
                                pass
        finally:
            con.close()


def test_the_endpoint_key_is_in_no_file_of_the_home(tmp_path, tiny_beir, tiny_model_path, monkeypatch, capsys,
                                                     caplog):
    """A whole CLI run against an endpoint whose failures echo the Authorization header (as some gateways do):
    the key is read from FLYWHEEL_LLM_API_KEY at run time and scrubbed from the error text, so no byte of it
    lands in the home: not in Dagster's sqlite storage (run config, job snapshot, event log, metadata), not in
    MLflow's db or artifacts, not in the LLM cache, the reports or the step outputs."""
    import hashlib

    from pipelines.cli import main
    from tests.fake_endpoint import FaultyChatEndpoint

    def every_third_prompt_echoes_the_key(prompt: str) -> list[str]:
        return ["echo401"] if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 3 == 0 else []

    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.setenv("FLYWHEEL_LLM_API_KEY", PLANTED_KEY)
    for var in ("FLYWHEEL_LLM_BASE_URL", "FLYWHEEL_LLM_MODEL"):   # the CLI sets them for its run; restored after
        monkeypatch.setenv(var, "")
    server = FaultyChatEndpoint(plan=every_third_prompt_echoes_the_key)
    try:
        code = main(["run", "--corpus", str(tiny_beir), "--home", str(home), "--base-model", tiny_model_path,
                     "--llm-backend", "openai", "--llm-base-url", server.url, "--llm-model", "fake-chat",
                     "--max-steps", "1", "--reranker-steps", "1", "--no-learning-curve", "--label-queries", "12",
                     "--candidates", "2", "--rerank-depth", "3"])
    finally:
        server.close()
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    failed = [h for h in server.headers if h["authorization"] == f"Bearer {PLANTED_KEY}"]
    assert len(failed) == len(server.headers) and server.served["echo401"] >= 3   # sent, and echoed back
    files = [p for p in home.rglob("*") if p.is_file()]
    assert {"dagster", "mlflow.db", "mlartifacts", "llm_cache.sqlite", "reports"} <= {p.relative_to(home).parts[0]
                                                                              for p in files}
    assert any(p.suffix == ".db" and "dagster" in p.parts for p in files)   # Dagster's sqlite storage
    leaks = [str(p.relative_to(home)) for p in files if any(PLANTED_KEY.encode() in b for b in _readable_bytes(p))]
    assert leaks == []
    url = server.url.encode()   # the URL, which may carry credentials of its own, is not in the job snapshot either
    assert [p for p in files if "dagster" in p.parts and any(url in b for b in _readable_bytes(p))] == []
    assert any(b"invalid credentials: Bearer ***" in p.read_bytes() for p in files)   # the failures were recorded
    assert PLANTED_KEY not in captured.out + captured.err + caplog.text   # nor in the logs (ours, instructor's)


def test_flywheel_ui_serves_the_tracking_store_the_runs_use(tmp_path):
    from pipelines.cli import mlflow_ui_plan

    assert mlflow_ui_plan({}, tmp_path, 5001) == (f"sqlite:///{tmp_path / 'mlflow.db'}", "http://127.0.0.1:5001")
    assert mlflow_ui_plan({"FLYWHEEL_MLFLOW_TRACKING_URI": "postgresql://u:pw@db/mlflow"}, tmp_path, 5000) == (
        "postgresql://u:pw@db/mlflow", "http://127.0.0.1:5000")
    assert mlflow_ui_plan({"FLYWHEEL_MLFLOW_TRACKING_URI": "https://u:pw@mlflow.corp/"}, tmp_path, 5000) == (
        None, "https://mlflow.corp")                                   # its own UI; no local one, no password
    assert mlflow_ui_plan({"FLYWHEEL_MLFLOW_TRACKING_URI": "http://mlflow:5000",
                           "FLYWHEEL_MLFLOW_UI": "https://mlflow.example.com"}, tmp_path, 5000)[1] == \
        "https://mlflow.example.com"
