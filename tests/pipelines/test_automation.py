"""The nightly schedule and the corpus sensor: configurable, loadable, and a file change requests a run."""
import os

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from pipelines.schedules import AutomationSettings
from pipelines.sensors import corpus_diff, corpus_snapshot


def test_schedule_time_and_timezone_come_from_the_environment(tmp_path):
    env = {"FLYWHEEL_NIGHTLY_CRON": "30 3 * * 1-5", "FLYWHEEL_TIMEZONE": "Europe/Berlin", "FLYWHEEL_CORPUS": "/data/docs"}
    defs = build_definitions(tmp_path, automation=AutomationSettings.from_env(env))
    schedule = defs.resolve_schedule_def("flywheel_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 3 * * 1-5", "Europe/Berlin")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=None)).run_requests[0]
    assert request.run_config["ops"]["corpus"]["config"]["path"] == "/data/docs"
    assert defs.resolve_sensor_def("corpus_sensor").job_name == "flywheel_job"


def test_defaults_are_0200_utc(tmp_path):
    schedule = build_definitions(tmp_path, automation=AutomationSettings()).resolve_schedule_def("flywheel_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_with_no_corpus_configured_the_nightly_schedule_skips_instead_of_training_on_the_sample(tmp_path):
    schedule = build_definitions(tmp_path, automation=AutomationSettings()).resolve_schedule_def("flywheel_job_schedule")
    tick = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=None))
    assert not tick.run_requests
    assert "FLYWHEEL_CORPUS is not set" in tick.skip_message and "bundled sample" in tick.skip_message


@pytest.mark.parametrize("env,message", [({"FLYWHEEL_TIMEZONE": "Mars/Olympus"}, "IANA timezone"),
                                         ({"FLYWHEEL_NIGHTLY_CRON": "every night"}, "5-field cron")])
def test_a_bad_schedule_setting_says_what_to_change(tmp_path, env, message):
    with pytest.raises(ValueError, match=message):
        build_definitions(tmp_path, automation=AutomationSettings.from_env(env))


def test_snapshot_and_diff(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("b")
    (tmp_path / ".hidden").write_text("x")
    old = corpus_snapshot(tmp_path)
    assert set(old) == {"a.txt", "sub/b.md"}
    (tmp_path / "a.txt").write_text("a changed")
    (tmp_path / "sub" / "b.md").unlink()
    (tmp_path / "c.txt").write_text("c")
    change = corpus_diff(old, corpus_snapshot(tmp_path))
    assert (change.added, change.changed, change.removed) == (["c.txt"], ["a.txt"], ["sub/b.md"])


def test_sensor_requests_a_run_after_a_file_change_and_not_before(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "one.txt").write_text("the first document")
    defs = build_definitions(tmp_path / "home", automation=AutomationSettings(corpus=str(corpus)))
    sensor = defs.resolve_sensor_def("corpus_sensor")
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        return sensor.evaluate_tick(ctx)

    first = tick(None)
    assert first.run_requests == [] and "first look" in first.skip_message
    unchanged = tick(first.cursor)
    assert unchanged.run_requests == [] and "no change" in unchanged.skip_message
    (corpus / "two.txt").write_text("a new document")
    changed = tick(first.cursor)
    [request] = changed.run_requests
    assert request.job_name in (None, "flywheel_job")
    assert request.tags["flywheel/files_added"] == "1" and request.tags["flywheel/files_changed"] == "0"
    assert request.run_config["ops"]["corpus"]["config"]["path"] == str(corpus)
    assert request.run_key == changed.cursor != first.cursor
    os.utime(corpus / "one.txt", ns=(1, 1))   # an edit, seen as a new modification time
    assert tick(changed.cursor).run_requests[0].tags["flywheel/files_changed"] == "1"


def test_sensor_without_a_corpus_skips_with_the_reason(tmp_path):
    defs = build_definitions(tmp_path, automation=AutomationSettings())
    result = defs.resolve_sensor_def("corpus_sensor").evaluate_tick(
        dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), definitions=defs))
    assert result.run_requests == [] and "FLYWHEEL_CORPUS" in result.skip_message


def test_a_new_day_of_the_feedback_log_requests_a_run_with_the_log_in_its_config(tmp_path):
    corpus, log = tmp_path / "corpus", tmp_path / "log"
    corpus.mkdir()
    log.mkdir()
    (corpus / "one.txt").write_text("the first document")
    (log / "2026-11-01.jsonl").write_text('{"query": "q", "doc_id": "one.txt", "signal": "cited"}\n')
    settings = AutomationSettings.from_env({"FLYWHEEL_CORPUS": str(corpus), "FLYWHEEL_FEEDBACK": str(log)})
    assert settings.run_config()["ops"]["feedback"]["config"]["path"] == str(log)
    defs = build_definitions(tmp_path / "home", automation=settings)
    sensor = defs.resolve_sensor_def("corpus_sensor")
    instance = dg.DagsterInstance.ephemeral()
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=None, definitions=defs))
    (log / "2026-11-02.jsonl").write_text('{"query": "r", "doc_id": "one.txt", "signal": "clicked"}\n')
    [request] = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor,
                                                             definitions=defs)).run_requests
    assert request.tags["flywheel/files_added"] == "1"
    assert request.run_config["ops"]["feedback"]["config"]["path"] == str(log)
