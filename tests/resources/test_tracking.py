"""Tier 1-2: the MLflow resource's registry on a real sqlite store, a real unreachable server, and a store that
fails the way a server in trouble does (a 503, a 403): only a missing model or alias is "no champion"; and the
registered model names, one set per corpus."""
import mlflow
import pytest
from mlflow.exceptions import MlflowException, RestException

from resources.tracking import (MLflowResource, RegistryUnavailable, means_absent, registered_model_name,
                                without_credentials)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A sqlite registry with `has-champion` (version 1 aliased) and `no-alias` (a version, no alias); read only."""
    tmp_path = tmp_path_factory.mktemp("registry")
    tracking = MLflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", registry_backoff_s=0.0)
    client = tracking.client()
    for name in ("has-champion", "no-alias"):
        client.create_registered_model(name)
        client.create_model_version(name, source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias("has-champion", "champion", "1")
    return tracking


def failing(monkeypatch, error: Exception) -> list:
    """Every registry read of an alias raises `error` (whichever call the resource makes); the calls, counted."""
    calls = []

    def fail(self, *args, **kwargs):
        calls.append(args)
        raise error

    for method in ("get_registered_model", "get_model_version_by_alias"):
        monkeypatch.setattr(mlflow.MlflowClient, method, fail)
    return calls


def test_a_missing_model_or_alias_is_no_champion_and_an_aliased_version_is_found(registry):
    assert registry.alias_version("never-registered") is None
    assert registry.alias_version("no-alias") is None
    assert registry.alias_version("has-champion", "other-alias") is None
    found = registry.alias_version("has-champion")
    assert found.name == "has-champion" and str(found.version) == "1"


@pytest.mark.parametrize("error", [
    RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the database is restarting"}),   # a 503
    RestException({"error_code": "PERMISSION_DENIED", "message": "user ci may not read has-champion"}),    # a 403
    RestException({"error_code": "INTERNAL_ERROR", "message": "Response: 502 Bad Gateway"}),
], ids=["503", "403", "502"])
def test_a_registry_error_is_retried_then_fails_loudly_never_reads_as_no_champion(registry, monkeypatch, error):
    calls = failing(monkeypatch, error)
    with pytest.raises(RegistryUnavailable) as raised:
        registry.alias_version("has-champion")
    assert len(calls) == registry.registry_attempts == 3
    words = raised.value.description
    assert f"could not say which version of 'has-champion' carries the alias 'champion' after 3 attempts" in words
    assert error.error_code in words and "Nothing was changed" in words
    assert raised.value.__cause__ is error


def test_a_registry_that_recovers_within_the_attempts_answers(registry, monkeypatch):
    real = mlflow.MlflowClient.get_registered_model
    calls = []

    def flaky(self, name):
        calls.append(name)
        if len(calls) == 1:
            raise RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"})
        return real(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_registered_model", flaky)
    assert str(registry.alias_version("has-champion").version) == "1" and len(calls) == 2


def test_an_unreachable_server_fails_loudly(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")   # mlflow's own retries would take minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = MLflowResource(tracking_uri="http://127.0.0.1:9", registry_attempts=2, registry_backoff_s=0.0)   # discard port
    with pytest.raises(RegistryUnavailable, match="registry at http://127.0.0.1:9 could not say .* after 2 attempts"):
        down.alias_version("flywheel-tiny-biencoder")


def test_an_invalid_name_is_an_error_not_an_empty_registry(registry):
    # the sqlite store answers INVALID_PARAMETER_VALUE here, the same code as for a missing alias
    with pytest.raises(RegistryUnavailable, match="INVALID_PARAMETER_VALUE"):
        registry.alias_version("team/biencoder")


def test_only_a_missing_resource_means_absent_and_credentials_stay_out_of_messages():
    assert means_absent(MlflowException("Registered Model with name=x not found", error_code=_code("RESOURCE_DOES_NOT_EXIST")))
    assert not means_absent(MlflowException("alias not found", error_code=_code("INVALID_PARAMETER_VALUE")))
    assert not means_absent(RestException({"error_code": "ENDPOINT_NOT_FOUND", "message": "404 from a proxy"}))
    assert not means_absent(ConnectionError("refused"))
    assert without_credentials("postgresql://flywheel:s3cret@db:5432/mlflow") == "postgresql://db:5432/mlflow"
    assert without_credentials("http://mlflow:5000") == "http://mlflow:5000"


def _code(name: str) -> int:
    from mlflow.protos.databricks_pb2 import ErrorCode

    return ErrorCode.Value(name)


def test_each_corpus_names_its_own_registered_models_and_the_project_can_name_them_instead():
    assert registered_model_name("flywheel", "cranfield", "biencoder") == "flywheel-cranfield-biencoder"
    tracking = MLflowResource(tracking_uri="sqlite:///unused.db")
    assert tracking.model_name("scifact", "crossencoder") == "flywheel-scifact-crossencoder"
    assert tracking.model_name("scifact", "biencoder") != tracking.model_name("nfcorpus", "biencoder")
    named = MLflowResource(tracking_uri="sqlite:///unused.db", registry_project="support-kb")
    assert named.model_name("docs_v1", "biencoder") == named.model_name("docs_v2", "biencoder") == "flywheel-support-kb-biencoder"


def test_a_corpus_name_mlflow_cannot_take_becomes_a_valid_name_and_stays_distinct(registry):
    spaced, dashed = (registered_model_name("flywheel", p, "biencoder") for p in ("my corpus", "my-corpus"))
    assert dashed == "flywheel-my-corpus-biencoder" and spaced.startswith("flywheel-my-corpus-") and spaced != dashed
    odd = registered_model_name("team/flywheel", "a:b@c 'd'/..", "biencoder")
    assert not set(odd) - set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert registered_model_name("flywheel", "语料", "biencoder").startswith("flywheel-")   # nothing left but the hash
    client = registry.client()
    client.create_registered_model(odd)   # the sqlite store takes it, and a search by name finds it
    client.create_model_version(odd, source="file:///tmp/model")
    assert [v.name for v in client.search_model_versions(f"name='{odd}'")] == [odd]


def test_run_links_point_at_the_ui_of_the_tracking_store_not_at_localhost(monkeypatch):
    from types import SimpleNamespace

    from resources.tracking import MLflowResource, mlflow_ui_url

    monkeypatch.delenv("FLYWHEEL_MLFLOW_UI", raising=False)
    run = SimpleNamespace(info=SimpleNamespace(experiment_id="3", run_id="abc"))
    assert MLflowResource(tracking_uri="http://mlflow:5000").run_url(run) == "http://mlflow:5000/#/experiments/3/runs/abc"
    assert MLflowResource(tracking_uri="postgresql://u:pw@db/x").run_url(run) == ""       # no UI known: no link
    assert MLflowResource(tracking_uri="postgresql://db/x", ui_url="https://ml.corp/").run_url(run) == \
        "https://ml.corp/#/experiments/3/runs/abc"
    assert mlflow_ui_url("sqlite:////home/me/mlflow.db") == "http://127.0.0.1:5000"      # what `flywheel ui` serves
    assert mlflow_ui_url("https://u:pw@ml.corp") == "https://ml.corp"
