"""MLflow: experiment tracking and the model registry, as a small typed resource around the mlflow client.

With a sqlite backend, mlflow puts artifacts of implicitly created experiments in ./mlruns of whatever
directory the process runs in, so experiments are always created here with an explicit artifact location.

The registry decides what serves, so it is read strictly: only "no such registered model" (the error code
RESOURCE_DOES_NOT_EXIST, HTTP 404, from the sqlite and the REST stores alike) or a model without the alias means
"no champion yet". Any other error (a 5xx, a permission error, a refused connection, an invalid name) is tried
again a few times and then raises RegistryUnavailable, so the gate fails before it changes anything, instead
of gating the candidate against the base model as if no version had ever been promoted.

Registered model names are global on an MLflow server while experiments are per corpus, so the names carry
the project too: "<prefix>-<project>-<kind>" (registered_model_name), the project being the corpus name
unless `registry_project` says otherwise. Corpus A's champion and corpus B's are then separate models.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg


class RegistryUnavailable(dg.Failure):
    """The registry could not answer a read that decides what serves; nothing was changed."""


def means_absent(error: BaseException) -> bool:
    """Whether a registry error says the registered model (or run) does not exist: the one error that is an answer.

    A missing alias is not read from an error: both stores raise INVALID_PARAMETER_VALUE for it, which is also
    their answer to an invalid name, so an alias is looked up in the registered model's own alias map instead."""
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def registry_part(text: str) -> str:
    """`text` as a piece of a registered model name: letters, digits, '.', '_' and '-' (MLflow forbids '/' and
    ':', and '@' or a quote would break `models:/<name>@champion` and search filters). Text that had to change
    gets a short hash of the original, so "my corpus" and "my-corpus" stay two names."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    if safe == text:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{safe}-{digest}" if safe else digest


def registered_model_name(prefix: str, project: str, kind: str) -> str:
    """The registered model of one kind ("biencoder", "crossencoder", ...) for one project: every reader and
    writer of the registry gets its name from here (MLflowResource.model_name)."""
    return f"{registry_part(prefix)}-{registry_part(project)}-{kind}"


LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"   # what `flywheel ui` serves for a home's sqlite tracking store


def mlflow_ui_url(tracking_uri: str, configured: str = "") -> str:
    """Where the MLflow UI of `tracking_uri` is: the configured URL; else an http(s) tracking server itself
    (which serves the UI), credentials left out; else, for a local sqlite store, `flywheel ui`'s server;
    else "" (a database URI names no UI: a link to localhost would point at nothing)."""
    if configured:
        return configured.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return without_credentials(tracking_uri).rstrip("/")
    if tracking_uri.startswith("sqlite:///"):
        return LOCAL_MLFLOW_UI
    return ""


def without_credentials(uri: str) -> str:
    """The tracking URI fit for an error message: user and password (postgresql://user:pw@host/db) left out."""
    return re.sub(r"//[^/@]*@", "//", uri)


def retried(read, what: str, attempts: int, backoff_s: float, where: str, sleep=time.sleep):
    """read(), tried `attempts` times with backoff_s, 2 * backoff_s, ... between; RegistryUnavailable naming the
    last error when every attempt failed. `what` says what was asked ("which version of X carries @champion")."""
    for attempt in range(1, attempts + 1):
        try:
            return read()
        except Exception as error:   # a 5xx, a permission error, a dropped connection: each may pass, or not
            if attempt == attempts:
                code = getattr(error, "error_code", None)
                raise RegistryUnavailable(
                    description=f"the MLflow registry at {where} could not say {what} after {attempts} attempts: "
                                f"{type(error).__name__}{f' {code}' if code else ''}: {error}. Nothing was changed "
                                "(the alias and the serving table are as they were); fix the registry or its "
                                "credentials (FLYWHEEL_MLFLOW_TRACKING_URI) and run again",
                    metadata={"registry_error": f"{type(error).__name__}: {error}"[:2000], "attempts": attempts},
                ) from error
            sleep(backoff_s * 2 ** (attempt - 1))


class MLflowResource(dg.ConfigurableResource):
    tracking_uri: str                     # sqlite:///<home>/mlflow.db locally; http://mlflow:5000 on a cluster
    artifact_root: str = ""               # where new experiments keep artifacts; "" -> next to the sqlite file
    experiment_prefix: str = "flywheel"   # one experiment per corpus: "<prefix>/<corpus name>"
    registry_project: str = ""            # registered models "<prefix>-<project>-<kind>"; "" -> the corpus name,
    #   so each corpus has its own champion. Set it to keep one champion across a renamed corpus folder
    ui_url: str = ""                      # the MLflow UI the metadata links point at; "" -> the tracking server
    #   itself for an http(s) URI, `flywheel ui`'s local server for the home's sqlite, else no link
    registry_attempts: int = 3            # a registry read that decides what serves is tried this many times,
    registry_backoff_s: float = 2.0       # waiting 2 s then 4 s: ~6 s before the gate fails. On an http URI the
    #   mlflow client itself retries 429/5xx first (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default: minutes)

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
        """A link for asset metadata: the run's page in the MLflow UI (mlflow_ui_url), or "" when no UI is known."""
        base = mlflow_ui_url(self.tracking_uri, self.ui_url or os.environ.get("FLYWHEEL_MLFLOW_UI", ""))
        return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" if base else ""

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

    def model_name(self, corpus_name: str, kind: str) -> str:
        """The registered model of `kind` for this corpus (or for registry_project when it is set)."""
        return registered_model_name(self.experiment_prefix, self.registry_project or corpus_name, kind)

    def alias_version(self, name: str, alias: str = "champion"):
        """The model version `alias` points to, or None when `name` is not registered yet or no version carries
        the alias; RegistryUnavailable when the registry cannot tell (see the module docstring)."""
        def read():
            client = self.client()
            try:
                model = client.get_registered_model(name)
            except Exception as error:
                if means_absent(error):
                    return None
                raise
            if alias not in model.aliases:
                return None
            return client.get_model_version(name, model.aliases[alias])

        return retried(read, f"which version of '{name}' carries the alias '{alias}'", self.registry_attempts,
                       self.registry_backoff_s, without_credentials(self.tracking_uri))

    def set_alias(self, name: str, version: str, alias: str = "champion") -> None:
        self.client().set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str = "champion") -> None:
        """Take `alias` off whichever version of `name` carries it (the version itself stays registered)."""
        self.client().delete_registered_model_alias(name, alias)

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
