"""The weekly review job and schedule, in the project's one Definitions."""
import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from pipelines.schedules import AutomationSettings, query_review_job, query_review_schedule


def test_the_weekly_job_rereads_the_log_then_reviews_and_segments(tmp_path):
    defs = build_definitions(tmp_path, automation=AutomationSettings())
    job = defs.resolve_job_def("query_review_job")
    assert {key.path[-1] for key in job.asset_layer.executable_asset_keys} == {
        "query_review", "query_segments", "feedback_pairs", "logged_queries"}
    parents = defs.resolve_asset_graph().get(dg.AssetKey("query_segments")).parent_keys
    assert dg.AssetKey("query_review") in parents                          # the review's precision feeds segments
    assert {dg.AssetKey(k) for k in ("logged_queries", "feedback_pairs", "serving_index")} <= parents


def test_the_schedule_defaults_to_monday_0600_utc_and_is_stopped(tmp_path):
    schedule = build_definitions(tmp_path, automation=AutomationSettings()).resolve_schedule_def(
        "query_review_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * 1", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED and schedule.job_name == "query_review_job"
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=None)).run_requests[0]
    assert request.tags["flywheel/trigger"] == "schedule" and request.run_config == {}


def test_the_review_cron_and_the_log_come_from_the_environment(tmp_path):
    env = {"FLYWHEEL_REVIEW_CRON": "30 7 * * 5", "FLYWHEEL_TIMEZONE": "Europe/Berlin",
           "FLYWHEEL_FEEDBACK": str(tmp_path / "log"), "FLYWHEEL_CORPUS": str(tmp_path / "docs")}
    schedule = build_definitions(tmp_path, automation=AutomationSettings.from_env(env)).resolve_schedule_def(
        "query_review_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 7 * * 5", "Europe/Berlin")
    assert AutomationSettings.from_env(env).cron == "0 2 * * *"   # the nightly one is left alone
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=None)).run_requests[0]
    assert request.run_config == {"ops": {"feedback": {"config": {"path": str(tmp_path / "log")}}}}   # no corpus op


def test_a_bad_review_cron_says_what_to_change():
    with pytest.raises(ValueError, match="FLYWHEEL_REVIEW_CRON='weekly' is not a 5-field cron string"):
        query_review_schedule(query_review_job(), AutomationSettings.from_env({"FLYWHEEL_REVIEW_CRON": "weekly"}))
