"""`flywheel ui` starts the Dagster UI and the MLflow UI on localhost, serving this project's asset graph."""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read().decode()


def _wait(url: str, deadline: float, body: dict | None = None) -> tuple[int, str]:
    while True:
        try:
            return _get(url, body)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_flywheel_ui_serves_the_asset_graph_and_mlflow(tmp_path):
    dagster_port, mlflow_port = _free_port(), _free_port()
    flywheel = Path(sys.executable).parent / "flywheel"
    proc = subprocess.Popen([str(flywheel), "ui", "--home", str(tmp_path), "--dagster-port", str(dagster_port),
                             "--mlflow-port", str(mlflow_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.time() + 120
        status, body = _wait(f"http://127.0.0.1:{dagster_port}/graphql", deadline,
                             {"query": "{ assetNodes { assetKey { path } groupName } }"})
        groups = {n["assetKey"]["path"][0]: n["groupName"] for n in json.loads(body)["data"]["assetNodes"]}
        assert groups["synthetic_queries"] == "queries" and groups["evaluation_report"] == "evaluation"
        status, body = _wait(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search", deadline,
                             {"max_results": 5})
        assert status == 200 and "experiments" in json.loads(body)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
