"""MLflow: experiment tracking and the model registry, as a small typed resource around the mlflow client.

With a sqlite backend, mlflow puts artifacts of implicitly created experiments in ./mlruns of whatever
directory the process runs in, so experiments are always created here with an explicit artifact location.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import dagster as dg


class MLflowResource(dg.ConfigurableResource):
    tracking_uri: str                     # sqlite:///<home>/mlflow.db locally; http://mlflow:5000 on a cluster
    artifact_root: str = ""               # where new experiments keep artifacts; "" -> next to the sqlite file
    experiment_prefix: str = "flywheel"   # one experiment per corpus: "<prefix>/<corpus name>"

    def _setup(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow

    def _artifact_location(self, experiment: str) -> str | None:
        if self.artifact_root:
            return f"{self.artifact_root.rstrip('/')}/{experiment.replace('/', '_')}"
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri.removeprefix("sqlite:///"))
            return (db.parent / "mlartifacts" / experiment.replace("/", "_")).resolve().as_uri()
        return None

    def experiment_id(self, corpus_name: str) -> str:
        mlflow = self._setup()
        name = f"{self.experiment_prefix}/{corpus_name}"
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return mlflow.create_experiment(name, artifact_location=self._artifact_location(name))

    @contextmanager
    def start_run(self, corpus_name: str, run_name: str, tags: dict[str, str] | None = None):
        mlflow = self._setup()
        with mlflow.start_run(experiment_id=self.experiment_id(corpus_name), run_name=run_name, tags=tags or {}) as run:
            yield run

    def run_url(self, run) -> str:
        """A link for asset metadata: the MLflow UI's page of the run (the UI that `flywheel ui` starts)."""
        base = os.environ.get("FLYWHEEL_MLFLOW_UI", "http://127.0.0.1:5000")
        return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    def client(self):
        mlflow = self._setup()
        return mlflow.MlflowClient(self.tracking_uri)

    def log_to_run(self, run_id: str, metrics: dict[str, float], artifacts: list[str | tuple[str, str]] = (),
                   series: list[tuple[str, float, int]] = (), artifact_path: str | None = None) -> None:
        """Add metrics and files to an existing run (the evaluation adds its report to the training run).

        artifacts: paths, kept in `artifact_path` (default: the run's root), or (path, folder) pairs;
        series: (name, value, step) points, for a metric that is a curve (the learning curve's step is the
        number of training examples)."""
        mlflow = self._setup()
        with mlflow.start_run(run_id=run_id):
            if metrics:
                mlflow.log_metrics(metrics)
            for name, value, step in series:
                mlflow.log_metric(name, value, step=step)
            for item in artifacts:
                path, folder = (item, artifact_path) if isinstance(item, str) else item
                mlflow.log_artifact(path, artifact_path=folder)

    # The model registry: the alias "champion" names the version that serves; every gate decision is a tag.

    def alias_version(self, name: str, alias: str = "champion"):
        """The model version `alias` points to, or None when no version of `name` carries it yet."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(name, alias)
        except MlflowException:   # no such registered model, or no version with that alias
            return None

    def set_alias(self, name: str, version: str, alias: str = "champion") -> None:
        self.client().set_registered_model_alias(name, alias, str(version))

    def tag_version(self, name: str, version: str, tags: dict[str, object]) -> None:
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, str(value))

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(name, str(version)).tags)

    def download_version(self, name: str, version: str, dst: str) -> str:
        """The version's artifacts in `dst` (for a champion trained on another machine); returns the folder."""
        mlflow = self._setup()
        return mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=dst)
