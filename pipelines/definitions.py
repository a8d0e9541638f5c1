"""The one code location: every asset, check, resource, job and schedule of flywheel.

`build_definitions(home, llm=...)` is what the CLI and the tests call; `defs` is what `dagster dev` and
`flywheel ui` load, with the home taken from FLYWHEEL_HOME (default ./flywheel_home).
"""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets import (corpus, evaluation, feedback, indices, labels, monitoring, promotion, queries, splits, training,
                    triplets)
from pipelines.run_stats import run_stats_asset
from pipelines.schedules import AutomationSettings, nightly_schedule, query_review_job, query_review_schedule
from pipelines.sensors import corpus_sensor
from resources.embedder import EmbedderResource
from resources.embedder_openai import OpenAIEmbedderResource
from resources.lance import LanceDBResource
from resources.llm import LLMResource, LocalGGUFLLMResource, OpenAICompatibleLLMResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

STAGES = [corpus, feedback, indices, queries, labels, splits, triplets, training, evaluation, promotion, monitoring]

EXECUTORS = ("in_process", "multiprocess", "k8s")


@dg.success_hook(name="release_memory_after_step")
def release_memory_after_step(context) -> None:
    """After every step: collect garbage and hand glibc's free pages back. In one process the steps follow each
    other, and without this the heap a training step freed stays resident (measured on the demo: 3.3 GB carried
    from the learning curve into the evaluation, 1.7 GB after a trim)."""
    from resources.device import release_memory

    release_memory()


@dg.failure_hook(name="release_memory_after_failed_step")
def release_memory_after_failed_step(context) -> None:
    from resources.device import release_memory

    release_memory()


STEP_HOOKS = {release_memory_after_step, release_memory_after_failed_step}


def make_flywheel_job(executor: str = "in_process"):
    """flywheel_job on one machine (in_process, the default: the multiprocess executor costs seconds per step on
    2 cores), several processes (multiprocess), or one Kubernetes pod per step (k8s; pipelines/k8s.py)."""
    if executor not in EXECUTORS:
        raise ValueError(f"FLYWHEEL_EXECUTOR={executor!r}: use one of {', '.join(EXECUTORS)}")
    if executor == "k8s":
        from pipelines.k8s import k8s_executor

        executor_def = k8s_executor()
    else:
        executor_def = dg.in_process_executor if executor == "in_process" else dg.multiprocess_executor
    return dg.define_asset_job("flywheel_job", selection=dg.AssetSelection.all(), executor_def=executor_def,
                               hooks=STEP_HOOKS,
                               description="Corpus to evaluated, fine-tuned retriever: every stage in order.")



def default_home() -> Path:
    return Path(os.environ.get("FLYWHEEL_HOME", "flywheel_home")).expanduser().resolve()


def default_llm(home: Path, **settings) -> LLMResource:
    """The bundled local model, unless FLYWHEEL_LLM_BASE_URL names an OpenAI-compatible endpoint; then the
    URL, model and key are dg.EnvVar values, read at run time and never shown in the UI (nor stored in the
    job snapshot). Without FLYWHEEL_LLM_API_KEY the key is "EMPTY", what keyless local servers take.
    FLYWHEEL_LLM_MODE (not a secret) picks how structured output is asked for (default json)."""
    cache = str(home / "llm_cache.sqlite")
    if os.environ.get("FLYWHEEL_LLM_BASE_URL"):
        if not os.environ.get("FLYWHEEL_LLM_API_KEY"):   # an unset EnvVar would fail the run
            os.environ["FLYWHEEL_LLM_API_KEY"] = "EMPTY"
        return OpenAICompatibleLLMResource(cache_path=cache, base_url=dg.EnvVar("FLYWHEEL_LLM_BASE_URL"),
                                           model=dg.EnvVar("FLYWHEEL_LLM_MODEL"),
                                           api_key=dg.EnvVar("FLYWHEEL_LLM_API_KEY"),
                                           **{"mode": os.environ.get("FLYWHEEL_LLM_MODE", "json"), **settings})
    return LocalGGUFLLMResource(cache_path=cache, **settings)


def default_embedder(home: Path, **settings) -> EmbedderResource:
    """The sentence-transformers model (FLYWHEEL_BASE_MODEL, default the bundled MiniLM), unless
    FLYWHEEL_EMBED_BASE_URL names an OpenAI-compatible /v1/embeddings endpoint: then the URL, the model
    (FLYWHEEL_EMBED_MODEL) and the key (FLYWHEEL_EMBED_API_KEY, "EMPTY" when unset) are dg.EnvVar values, read
    at run time and never shown in the UI, and every vector is cached in <home>/embedding_cache.sqlite."""
    if os.environ.get("FLYWHEEL_EMBED_BASE_URL"):
        if not os.environ.get("FLYWHEEL_EMBED_API_KEY"):   # an unset EnvVar would fail the run
            os.environ["FLYWHEEL_EMBED_API_KEY"] = "EMPTY"
        return OpenAIEmbedderResource(base_url=dg.EnvVar("FLYWHEEL_EMBED_BASE_URL"),
                                      model=dg.EnvVar("FLYWHEEL_EMBED_MODEL"),
                                      api_key=dg.EnvVar("FLYWHEEL_EMBED_API_KEY"),
                                      cache_path=str(home / "embedding_cache.sqlite"), **settings)
    return EmbedderResource(model=os.environ.get("FLYWHEEL_BASE_MODEL", ""), **settings)   # as --base-model


def default_resources(home: Path, llm: LLMResource | None = None, embedder: EmbedderResource | None = None,
                      **overrides) -> dict:
    """Everything under `home`, unless FLYWHEEL_LANCEDB_URI (e.g. s3://bucket/flywheel; credentials and endpoint from
    the usual AWS_* variables) or FLYWHEEL_MLFLOW_TRACKING_URI (e.g. http://mlflow:5000) point elsewhere;
    FLYWHEEL_REGISTRY_PROJECT names the registered models in place of the corpus name."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "io_manager": dg.FilesystemIOManager(base_dir=str(home / "storage")),   # outputs persist in the home
        "workspace": WorkspaceResource(home=str(home)),
        "llm": llm or default_llm(home),
        "embedder": embedder or default_embedder(home),
        "lancedb": LanceDBResource(uri=os.environ.get("FLYWHEEL_LANCEDB_URI") or str(home / "lancedb")),
        "mlflow": MLflowResource(tracking_uri=os.environ.get("FLYWHEEL_MLFLOW_TRACKING_URI")
                                 or f"sqlite:///{home / 'mlflow.db'}",
                                 registry_project=os.environ.get("FLYWHEEL_REGISTRY_PROJECT", ""),   # "": the corpus
                                 ui_url=os.environ.get("FLYWHEEL_MLFLOW_UI", "")),   # "": from the tracking URI
        **overrides,   # e.g. lancedb=LanceDBResource(uri="s3://...", storage_options=...)
    }


def build_definitions(home: Path | None = None, automation: AutomationSettings | None = None,
                      executor: str | None = None, **resource_overrides) -> dg.Definitions:
    """`automation` (schedule time and timezone, the watched corpus) and `executor` default to the FLYWHEEL_*
    environment (FLYWHEEL_EXECUTOR: in_process, multiprocess or k8s)."""
    home = Path(home) if home else default_home()
    automation = automation or AutomationSettings.from_env()
    executor = executor or os.environ.get("FLYWHEEL_EXECUTOR", "in_process")
    flywheel_job = make_flywheel_job(executor)
    assets = dg.load_assets_from_modules(STAGES)
    checks = dg.load_asset_checks_from_modules(STAGES)
    stage_keys = [key for a in assets for key in a.keys]
    review_job = query_review_job()
    return dg.Definitions(
        assets=[*assets, run_stats_asset(stage_keys)],
        asset_checks=checks,
        jobs=[flywheel_job, review_job],
        schedules=[nightly_schedule(flywheel_job, automation), query_review_schedule(review_job, automation)],
        sensors=[corpus_sensor(flywheel_job, automation, home)],
        resources=default_resources(home, **resource_overrides),
        executor=flywheel_job.executor_def,   # assets materialized from the UI run like the job (in-process here)
    )


defs = build_definitions()
