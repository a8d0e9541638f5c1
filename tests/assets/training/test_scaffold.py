"""The training scaffolding both recipes share: budget, recorder, finish, tags."""
from types import SimpleNamespace

import pandas as pd

from assets.training.scaffold import finish, mlflow_metric_logger, pinned_requirements, recorder, run_tags, step_budget


def test_step_budget_epochs_max_steps_and_the_floor():
    assert step_budget(100, 32, 1.0, 0, 4) == step_budget(100, 32, 1.0, 0, 4)
    b = step_budget(100, 32, 1.0, 0, 4)
    assert (b.batch, b.total, b.eval_every) == (32, 3, 1)
    assert step_budget(5, 32, 2.0, 0, 4).batch == 5 and step_budget(5, 32, 2.0, 0, 4).total == 2
    assert step_budget(100, 16, 1.0, 0, 4, min_steps=300).total == 300      # the reranker's floor
    assert step_budget(100, 16, 1.0, 7, 4, min_steps=300).total == 7        # max_steps wins over everything


def test_recorder_keeps_every_log_with_its_step_and_passes_it_on():
    history, seen = [], []
    cb = recorder(history, lambda logs, step: seen.append((step, logs)))
    cb.on_log(None, SimpleNamespace(global_step=3), None, logs={"loss": 0.5})
    cb.on_log(None, SimpleNamespace(global_step=4), None, logs=None)
    assert history == [{"step": 3, "loss": 0.5}] and seen == [(3, {"loss": 0.5})]


def test_finish_validates_saves_and_leaves_no_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    saved, logged = [], []

    class Model:
        def save(self, path):
            saved.append(path)

    result = finish(Model(), lambda m: {"ndcg@10": 0.5}, lambda logs, step: logged.append((step, logs)),
                    step_budget(10, 2, 1.0, 0, 1), tmp_path, [{"step": 1}], {"ndcg@10": 0.4})
    assert not (tmp_path / "checkpoints").exists() and saved == [str(tmp_path / "model")]
    assert result.validation_final == {"ndcg@10": 0.5} and result.steps == 5
    assert logged == [(6, {"eval_final_ndcg@10": 0.5})]


def test_every_training_run_is_tagged_with_the_code_that_trained_it(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CODE_VERSION", "abc1234")
    chunks = pd.DataFrame({"chunk_id": ["c"]})
    chunks.attrs.update(corpus_name="docs", corpus_hash="h")
    tags = run_tags(SimpleNamespace(run_id="r1"), chunks, "base", "cpu", "cross-encoder", extra="x")
    assert tags == {"corpus": "docs", "corpus_hash": "h", "code_version": "abc1234", "base_model": "base",
                    "device": "cpu", "dagster_run_id": "r1", "model_kind": "cross-encoder", "extra": "x"}


def test_the_metric_logger_sends_numbers_only_with_mlflow_safe_keys():
    calls = []
    log = mlflow_metric_logger(SimpleNamespace(log_metrics=lambda m, step: calls.append((step, m))))
    log({"eval_ndcg@10": 0.5, "note": "text", "epoch": 1}, 2)
    log({"note": "only text"}, 3)
    assert calls == [(2, {"eval_ndcg_at_10": 0.5, "epoch": 1.0})]


def test_runs_left_running_by_a_killed_dagster_run_end_as_killed_and_leave_no_checkpoints(tmp_path):
    import mlflow

    from assets.training.scaffold import end_killed_runs

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("flywheel/docs", artifact_location=(tmp_path / "art").as_uri())
    runs = {name: client.create_run(exp, tags={"dagster_run_id": name}).info.run_id
            for name in ("killed", "still-going", "elsewhere", "finished")}
    client.set_terminated(runs["finished"], "FINISHED")
    models = tmp_path / "models"
    for name, run_id in runs.items():
        (models / "biencoder" / run_id / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (models / "crossencoder" / runs["killed"] / "model").mkdir(parents=True)   # a model saved before the kill
    status = {"killed": "FAILURE", "still-going": "STARTED", "finished": "SUCCESS"}.get   # "elsewhere": unknown
    assert end_killed_runs(client, status, models) == [runs["killed"]]
    assert client.get_run(runs["killed"]).info.status == "KILLED"
    assert {n: client.get_run(r).info.status for n, r in runs.items() if n != "killed"} == {
        "still-going": "RUNNING", "elsewhere": "RUNNING", "finished": "FINISHED"}
    assert not (models / "biencoder" / runs["killed"]).exists()                  # nothing saved: all of it
    assert (models / "crossencoder" / runs["killed"] / "model").exists()         # a saved model stays ...
    assert not (models / "crossencoder" / runs["killed"] / "checkpoints").exists()   # ... its scratch does not
    assert (models / "biencoder" / runs["still-going"] / "checkpoints").exists()
    assert end_killed_runs(client, status, models) == []                          # a second pass: nothing left


def test_untrainable_says_why_for_a_providers_embedder_and_nothing_for_a_local_model(tmp_path):
    from assets.training.scaffold import skipped_metadata, untrainable
    from resources.embedder import EmbedderResource
    from resources.embedder_openai import OpenAIEmbedderResource

    assert untrainable(EmbedderResource(), "the bi-encoder") is None
    provider = OpenAIEmbedderResource(base_url="http://127.0.0.1:9/v1", model="m", cache_path=str(tmp_path / "c"))
    out = untrainable(provider, "the reranker", "set base_model")
    assert out["enabled"] is False and out["model_path"] is None and out["base_model"] == "openai:m"
    assert out["skipped"].startswith("the reranker not trained: the embedder is a provider's model (m")
    assert out["skipped"].endswith("; set base_model") and out["retrained"] is False
    assert skipped_metadata(out) == {"skipped": out["skipped"], "retrained": False, "retrain_reason": out["skipped"],
                                     "base_model": "openai:m"}


def test_pinned_requirements_name_the_installed_versions_and_leave_an_absent_one_bare():
    from importlib.metadata import version

    assert pinned_requirements("torch", "pandas", "no-such-distribution-here") == [
        f"torch=={version('torch').split('+')[0]}", f"pandas=={version('pandas')}", "no-such-distribution-here"]
    assert "+" not in pinned_requirements("torch")[0]   # torch's +cpu label is not on PyPI
