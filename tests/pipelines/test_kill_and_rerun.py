"""Tier 3, real processes: `kill -9` of `flywheel run` during query writing and during training, then the same
command again. The rerun completes, pays the endpoint for no answer it already had (beyond the few calls in
flight at the kill), ends the MLflow run the kill left RUNNING as KILLED, and leaves no checkpoint behind."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_endpoint import FaultyChatEndpoint

pytestmark = pytest.mark.slow
IN_FLIGHT = 4   # OpenAICompatibleLLMResource.max_concurrency: answers that may be sent as the process dies


def _running_training(home: Path) -> bool:
    db = home / "mlflow.db"
    if not db.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return bool(con.execute("select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                                    "where r.status = 'RUNNING' and t.key = 'model_kind' "
                                    "and t.value = 'bi-encoder'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _wait_then_kill(proc: subprocess.Popen, ready, what: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout_s} s")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_during_query_writing_and_during_training_then_the_same_command_completes(tmp_path, tiny_beir,
                                                                                         tiny_model_path):
    endpoint = FaultyChatEndpoint(plan=lambda prompt: ["slow"], retry_after=0)   # 0.15 s an answer: time to kill
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--corpus", str(tiny_beir), "--home", str(home),
           "--base-model", tiny_model_path, "--llm-backend", "openai", "--llm-base-url", endpoint.url,
           "--llm-model", "fake-chat", "--queries-per-chunk", "2", "--label-queries", "20", "--candidates", "2",
           "--max-steps", "400", "--reranker-steps", "2", "--no-learning-curve", "--no-adapter", "--judge-queries", "3",
           "--offtheshelf-reranker", "", "--rerank-depth", "3"]
    env = {**os.environ, "FLYWHEEL_LLM_API_KEY": "sk-test", "DAGSTER_HOME": str(home / "dagster"),
           "OMP_NUM_THREADS": "1"}
    start = lambda: subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[2],  # noqa: E731
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # 1. killed while it writes queries: some answers are cached, the rest not yet asked
        _wait_then_kill(start(), lambda: sum(endpoint.accepted.values()) >= 10, "10 answered query calls")
        paid_before_kill = dict(endpoint.accepted)
        # 2. the same command, killed in the middle of training the bi-encoder (400 steps of a tiny model)
        _wait_then_kill(start(), lambda: _running_training(home), "a bi-encoder training run in MLflow")
        twice = endpoint.paid_twice()
        assert len(twice) <= 2 * IN_FLIGHT, twice      # only calls in flight at a kill can be paid twice
        assert all(endpoint.accepted[p] == 1 for p in paid_before_kill if p not in twice)
        assert any((home / "models").rglob("checkpoints")) or _running_training(home)   # what a kill leaves
        # 3. the same command again: it completes, and pays for nothing it already has
        before = dict(endpoint.accepted)
        done = start()
        out, err = done.communicate(timeout=900)
        assert done.returncode == 0, err[-3000:]
        assert all(endpoint.accepted[p] == n for p, n in before.items()), "a cached answer was paid for again"
    finally:
        endpoint.close()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    kinds = {(r.data.tags.get("model_kind"), r.info.status) for r in runs}
    assert ("bi-encoder", "KILLED") in kinds and ("bi-encoder", "FINISHED") in kinds
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert not list((home / "models").rglob("checkpoints"))
    assert "ended 1 MLflow run(s) left RUNNING" in err
