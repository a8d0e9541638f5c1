"""The nightly retrain (`flywheel_job_schedule`) and the weekly review (`query_review_job_schedule`), their times
and timezone taken from the environment.

    FLYWHEEL_NIGHTLY_CRON   cron string, default "0 2 * * *" (02:00 every day)
    FLYWHEEL_REVIEW_CRON    cron string of the review queue and query segments, default "0 6 * * 1" (Monday 06:00)
    FLYWHEEL_TIMEZONE       IANA name, default "UTC" (e.g. "Europe/Berlin": 02:00 Berlin time, DST included)
    FLYWHEEL_CORPUS         the corpus the scheduled run (and the corpus sensor) reads; unset = the nightly
                            schedule skips every tick (it never trains on the bundled sample)
    FLYWHEEL_FEEDBACK       the feedback log (file or folder) the scheduled run reads and the sensor watches

A nightly run is cheap when little changed: every stage is incremental by content (cached LLM calls, reused
vectors), and training is skipped below `min_change_to_retrain` (assets/training/retrain.py). The schedule is
STOPPED by default: turn it on in the UI (Automation) or with `dagster schedule start flywheel_job_schedule`.
So is the weekly review: `query_review_job` re-materializes only `query_review` and `query_segments`, reading
their inputs (the feedback log's frames, the serving index) from the last run that made them.
"""
import os
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg


@dataclass(frozen=True)
class AutomationSettings:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    review_cron: str = "0 6 * * 1"       # the weekly review queue: Monday 06:00, after the night's run
    corpus: str = ""                     # "" = the corpus stage's default (the bundled sample)
    feedback: str = ""                   # "" = no log (the feedback stage also reads FLYWHEEL_FEEDBACK at run time)
    sensor_interval_s: int = 300         # how often the corpus sensor looks at the folder
    run_tags: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, env=None) -> "AutomationSettings":
        env = os.environ if env is None else env
        return cls(cron=env.get("FLYWHEEL_NIGHTLY_CRON", cls.cron), timezone=env.get("FLYWHEEL_TIMEZONE", cls.timezone),
                   review_cron=env.get("FLYWHEEL_REVIEW_CRON", cls.review_cron),
                   corpus=env.get("FLYWHEEL_CORPUS", ""), feedback=env.get("FLYWHEEL_FEEDBACK", ""),
                   sensor_interval_s=int(env.get("FLYWHEEL_SENSOR_INTERVAL_S", cls.sensor_interval_s)))

    def run_config(self) -> dict:
        ops = {}
        if self.corpus:
            ops["corpus"] = {"config": {"path": self.corpus}}
        if self.feedback:
            ops["feedback"] = {"config": {"path": self.feedback}}
        return {"ops": ops} if ops else {}


def _check(timezone: str, cron: str, cron_env: str, example: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"FLYWHEEL_TIMEZONE={timezone!r} is not an IANA timezone name; use e.g. 'UTC' "
                         "or 'Europe/Berlin'") from exc
    if len(cron.split()) != 5:
        raise ValueError(f"{cron_env}={cron!r} is not a 5-field cron string; e.g. '{example}'")


def _stopped_schedule(name: str, job, cron: str, settings: AutomationSettings, what: str,
                      run_config: dict | None = None) -> dg.ScheduleDefinition:
    """Every flywheel schedule: in the settings' timezone, tagged as a schedule's run, STOPPED until turned on."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone=settings.timezone,
        run_config=run_config or {},
        tags={"flywheel/trigger": "schedule", **settings.run_tags},
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"{what} ({cron}, {settings.timezone}); turn it on in the UI.",
    )


NO_CORPUS = ("FLYWHEEL_CORPUS is not set: the nightly retrain never trains on the bundled sample; set it to "
             "your corpus (a folder, a .jsonl/.parquet file or a BEIR folder) where the daemon runs")


def nightly_schedule(job, settings: AutomationSettings) -> dg.ScheduleDefinition:
    """The nightly retrain; with no corpus configured every tick is skipped, saying why, instead of training
    (and perhaps promoting a model) on the bundled sample corpus."""
    _check(settings.timezone, settings.cron, "FLYWHEEL_NIGHTLY_CRON", "0 2 * * *")
    schedule = _stopped_schedule("flywheel_job_schedule", job, settings.cron, settings,
                                 "Nightly incremental run and retrain", settings.run_config())
    if settings.corpus:
        return schedule

    def skip(context):
        return dg.SkipReason(NO_CORPUS)

    return dg.ScheduleDefinition(name=schedule.name, job=job, cron_schedule=settings.cron,
                                 execution_timezone=settings.timezone, execution_fn=skip,
                                 default_status=dg.DefaultScheduleStatus.STOPPED,
                                 description=f"{schedule.description} Skips every tick until FLYWHEEL_CORPUS is set.")


REVIEW_ASSETS = ("query_review", "query_segments")


FEEDBACK_ASSETS = ("feedback_pairs", "logged_queries")


def query_review_job(upstream: tuple[str, ...] = FEEDBACK_ASSETS, executor_def=None):
    """The weekly review: the review queue and the query segments, after re-reading the feedback log (`upstream`;
    its new files only: the log is cached per file); the rest is read from the last run that made it."""
    return dg.define_asset_job("query_review_job", selection=dg.AssetSelection.assets(*REVIEW_ASSETS, *upstream),
                               executor_def=executor_def or dg.in_process_executor,
                               description="The weekly review queue of logged queries and the query segments.")


def query_review_schedule(job, settings: AutomationSettings) -> dg.ScheduleDefinition:
    _check(settings.timezone, settings.review_cron, "FLYWHEEL_REVIEW_CRON", "0 6 * * 1")
    feedback = settings.run_config().get("ops", {}).get("feedback")
    return _stopped_schedule("query_review_job_schedule", job, settings.review_cron, settings,
                             "Weekly review queue and query segments", {"ops": {"feedback": feedback}} if feedback else None)
