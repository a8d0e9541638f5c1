"""The nightly retrain: `flywheel_job_schedule`, its time and timezone taken from the environment.

    FLYWHEEL_NIGHTLY_CRON   cron string, default "0 2 * * *" (02:00 every day)
    FLYWHEEL_TIMEZONE       IANA name, default "UTC" (e.g. "Europe/Berlin": 02:00 Berlin time, DST included)
    FLYWHEEL_CORPUS         the corpus the scheduled run (and the corpus sensor) reads; unset = the stage default
    FLYWHEEL_FEEDBACK       the feedback log (file or folder) the scheduled run reads and the sensor watches

A nightly run is cheap when little changed: every stage is incremental by content (cached LLM calls, reused
vectors), and training is skipped below `min_change_to_retrain` (assets/training/retrain.py). The schedule is
STOPPED by default: turn it on in the UI (Automation) or with `dagster schedule start flywheel_job_schedule`.
"""
import os
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg


@dataclass(frozen=True)
class AutomationSettings:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    corpus: str = ""                     # "" = the corpus stage's default (the bundled sample)
    feedback: str = ""                   # "" = no log (the feedback stage also reads FLYWHEEL_FEEDBACK at run time)
    sensor_interval_s: int = 300         # how often the corpus sensor looks at the folder
    run_tags: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, env=None) -> "AutomationSettings":
        env = os.environ if env is None else env
        return cls(cron=env.get("FLYWHEEL_NIGHTLY_CRON", cls.cron), timezone=env.get("FLYWHEEL_TIMEZONE", cls.timezone),
                   corpus=env.get("FLYWHEEL_CORPUS", ""), feedback=env.get("FLYWHEEL_FEEDBACK", ""),
                   sensor_interval_s=int(env.get("FLYWHEEL_SENSOR_INTERVAL_S", cls.sensor_interval_s)))

    def run_config(self) -> dict:
        ops = {}
        if self.corpus:
            ops["corpus"] = {"config": {"path": self.corpus}}
        if self.feedback:
            ops["feedback"] = {"config": {"path": self.feedback}}
        return {"ops": ops} if ops else {}


def nightly_schedule(job, settings: AutomationSettings) -> dg.ScheduleDefinition:
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"FLYWHEEL_TIMEZONE={settings.timezone!r} is not an IANA timezone name; use e.g. 'UTC' "
                         "or 'Europe/Berlin'") from exc
    if len(settings.cron.split()) != 5:
        raise ValueError(f"FLYWHEEL_NIGHTLY_CRON={settings.cron!r} is not a 5-field cron string; e.g. '0 2 * * *'")
    return dg.ScheduleDefinition(
        name="flywheel_job_schedule",
        job=job,
        cron_schedule=settings.cron,
        execution_timezone=settings.timezone,
        run_config=settings.run_config(),
        tags={"flywheel/trigger": "schedule", **settings.run_tags},
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Nightly incremental run and retrain ({settings.cron}, {settings.timezone}); turn it on in the UI.",
    )
