from pipelines.cli import build_run_config, parser
from pipelines.profiles import PROFILES, apply_profile


def _config(*argv):
    return build_run_config(apply_profile(parser().parse_args(["run", *argv])))["ops"]


def test_the_demo_profile_reaches_the_stages_and_a_knob_on_the_command_line_wins():
    ops = _config("--profile", "demo", "--reranker-steps", "7")
    assert ops["synthetic_queries"]["config"]["max_chunks"] == PROFILES["demo"]["max_chunks"]
    assert ops["relevance_labels"]["config"]["max_queries"] == PROFILES["demo"]["label_queries"]
    assert ops["finetuned_crossencoder"]["config"] == {"max_steps": 7, "evals_per_run": 1}
    assert ops["finetuned_biencoder"]["config"]["evals_per_run"] == 1
    assert ops["finetuned_biencoder"]["config"]["validation_corpus"] == 200
    assert ops["learning_curve"]["config"]["sizes"] == [16, 32] and ops["learning_curve"]["config"]["seeds"] == [0]
    assert ops["evaluation_report"]["config"]["rerank_depth"] == 10


def test_the_full_profile_leaves_every_default_to_the_stages():
    ops = _config()
    assert "synthetic_queries" not in ops and "finetuned_crossencoder" not in ops and "learning_curve" not in ops


def test_every_profile_knob_is_a_run_argument():
    known = vars(parser().parse_args(["run"]))
    for name, knobs in PROFILES.items():
        assert set(knobs) <= set(known), name
