"""The weekly review job and schedule, against Definitions built from the monitoring assets and stand-ins for
their upstream assets (the feedback asset is not on this branch yet)."""
import dagster as dg
import pytest

from assets import monitoring
from pipelines.schedules import AutomationSettings, query_review_job, query_review_schedule
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.workspace import WorkspaceResource
from tests.conftest import fake_llm_class

UPSTREAM = ["logged_queries", "feedback_pairs", "chunks", "serving_index", "finetuned_crossencoder"]


def review_definitions(tmp_path, settings: AutomationSettings) -> dg.Definitions:
    job = query_review_job()
    return dg.Definitions(
        assets=[*dg.load_assets_from_modules([monitoring]), *(dg.AssetSpec(key) for key in UPSTREAM)],
        jobs=[job], schedules=[query_review_schedule(job, settings)],
        resources={"llm": fake_llm_class()(), "embedder": EmbedderResource(),
                   "lancedb": LanceDBResource(uri=str(tmp_path / "db")),
                   "workspace": WorkspaceResource(home=str(tmp_path))})


def test_the_weekly_job_selects_the_review_and_the_segments_only(tmp_path):
    defs = review_definitions(tmp_path, AutomationSettings())
    job = defs.resolve_job_def("query_review_job")
    assert {key.path[-1] for key in job.asset_layer.executable_asset_keys} == {"query_review", "query_segments"}
    parents = defs.resolve_asset_graph().get(dg.AssetKey("query_segments")).parent_keys
    assert dg.AssetKey("query_review") in parents                          # the review's precision feeds segments
    assert {dg.AssetKey(k) for k in ("logged_queries", "feedback_pairs", "serving_index")} <= parents


def test_the_schedule_defaults_to_monday_0600_utc_and_is_stopped(tmp_path):
    schedule = review_definitions(tmp_path, AutomationSettings()).resolve_schedule_def("query_review_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * 1", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED and schedule.job_name == "query_review_job"
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=None)).run_requests[0]
    assert request.tags["flywheel/trigger"] == "schedule"


def test_the_review_cron_comes_from_the_environment(tmp_path):
    env = {"FLYWHEEL_REVIEW_CRON": "30 7 * * 5", "FLYWHEEL_TIMEZONE": "Europe/Berlin"}
    schedule = review_definitions(tmp_path, AutomationSettings.from_env(env)).resolve_schedule_def(
        "query_review_job_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 7 * * 5", "Europe/Berlin")
    assert AutomationSettings.from_env(env).cron == "0 2 * * *"   # the nightly one is left alone


def test_a_bad_review_cron_says_what_to_change():
    with pytest.raises(ValueError, match="FLYWHEEL_REVIEW_CRON='weekly' is not a 5-field cron string"):
        query_review_schedule(query_review_job(), AutomationSettings.from_env({"FLYWHEEL_REVIEW_CRON": "weekly"}))


def test_upstream_keys_can_join_the_job(tmp_path):
    job = query_review_job(upstream=("logged_queries",))
    assert job.selection.resolve(review_definitions(tmp_path, AutomationSettings()).resolve_asset_graph()) == {
        dg.AssetKey("query_review"), dg.AssetKey("query_segments"), dg.AssetKey("logged_queries")}
