"""The one code location: every asset, check, resource, job and schedule of flywheel.

`build_definitions(home, llm=...)` is what the CLI and the tests call; `defs` is what `dagster dev` and
`flywheel ui` load, with the home taken from FLYWHEEL_HOME (default ./flywheel_home).
"""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets import corpus, evaluation, indices, labels, queries, splits, training, triplets
from pipelines.run_stats import run_stats_asset
from pipelines.schedules import AutomationSettings, nightly_schedule
from pipelines.sensors import corpus_sensor
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.llm import LLMResource, LocalGGUFLLMResource, OpenAICompatibleLLMResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

STAGES = [corpus, indices, queries, labels, splits, triplets, training, evaluation]

flywheel_job = dg.define_asset_job(
    "flywheel_job",
    selection=dg.AssetSelection.all(),
    description="Corpus to evaluated, fine-tuned retriever: every stage in order.",
    executor_def=dg.in_process_executor,   # the multiprocess executor costs seconds per step on 2 cores
)



def default_home() -> Path:
    return Path(os.environ.get("FLYWHEEL_HOME", "flywheel_home")).expanduser().resolve()


def default_llm(home: Path) -> LLMResource:
    """The bundled local model, unless FLYWHEEL_LLM_BASE_URL names an OpenAI-compatible endpoint; then the
    URL, model and key are dg.EnvVar values, read at run time and never shown in the UI."""
    cache = str(home / "llm_cache.sqlite")
    if os.environ.get("FLYWHEEL_LLM_BASE_URL"):
        return OpenAICompatibleLLMResource(cache_path=cache, base_url=dg.EnvVar("FLYWHEEL_LLM_BASE_URL"),
                                           model=dg.EnvVar("FLYWHEEL_LLM_MODEL"),
                                           api_key=dg.EnvVar("FLYWHEEL_LLM_API_KEY"))
    return LocalGGUFLLMResource(cache_path=cache)


def default_resources(home: Path, llm: LLMResource | None = None, embedder: EmbedderResource | None = None) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    return {
        "io_manager": dg.FilesystemIOManager(base_dir=str(home / "storage")),   # outputs persist in the home
        "workspace": WorkspaceResource(home=str(home)),
        "llm": llm or default_llm(home),
        "embedder": embedder or EmbedderResource(),
        "lancedb": LanceDBResource(uri=str(home / "lancedb")),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}"),
    }


def build_definitions(home: Path | None = None, automation: AutomationSettings | None = None,
                      **resource_overrides) -> dg.Definitions:
    """`automation` (schedule time and timezone, the watched corpus) defaults to the FLYWHEEL_* environment."""
    home = Path(home) if home else default_home()
    automation = automation or AutomationSettings.from_env()
    assets = dg.load_assets_from_modules(STAGES)
    checks = dg.load_asset_checks_from_modules(STAGES)
    stage_keys = [key for a in assets for key in a.keys]
    return dg.Definitions(
        assets=[*assets, run_stats_asset(stage_keys)],
        asset_checks=checks,
        jobs=[flywheel_job],
        schedules=[nightly_schedule(flywheel_job, automation)],
        sensors=[corpus_sensor(flywheel_job, automation, home)],
        resources=default_resources(home, **resource_overrides),
    )


defs = build_definitions()
