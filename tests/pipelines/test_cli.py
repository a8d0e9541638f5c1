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
