"""`run_stats`: what one run of the job cost and changed, as `<home>/reports/run_stats.json` and metadata.

It runs last (it depends on every other asset) and reads its own run's events from the Dagster instance:
each materialization's metadata (the stages already record `llm_calls`, `llm_cache_hits`,
`chunks_embedded`, the chunk diff, whether the model was retrained) and each step's duration. So it works the
same for `flywheel run`, a schedule tick or a sensor's run, on any instance storage.

    {"run_id": "...", "finished_at": "...",
     "llm_calls": 12, "llm_cache_hits": 1190,          # summed over every asset that reports them
     "chunks_total": 606, "chunks_new": 6, "chunks_removed": 0,
     "chunks_embedded": 6,                               # summed over the index assets
     "retrained": false, "retrain_reason": "skipped: only 1.0% of chunks ...",
     "llm_calls_by_asset": {...}, "chunks_embedded_by_asset": {...}, "seconds_by_asset": {...}}

Every run also appends the same object as a line to `reports/run_stats_history.jsonl`, and writes the per-item
cost of each stage it measured (seconds / items: chunks embedded, LLM calls paid, training steps) to
`<home>/state/stage_costs.json`, which `flywheel run` reads to estimate the next run before it starts
(pipelines/estimate.py).
"""
import datetime as dt
import json
from collections.abc import Iterable

import dagster as dg

from assets.common import markdown_table
from pipelines.estimate import COSTS_FILE, load_costs_file, measured_costs
from resources.workspace import WorkspaceResource

INPUT_ASSETS = ("corpus_report", "logged_queries")   # where the corpus and feedback readers count their skips
CHUNK_KEYS = ("chunks_total", "chunks_new", "chunks_removed", "chunks_unchanged", "documents_new",
              "documents_removed", "documents_changed")


def summarize_run(materializations: dict[str, dict], step_seconds: dict[str, float], run_id: str = "") -> dict:
    """run_stats from {asset: metadata values} and {step: seconds} of one run (pure: no Dagster needed)."""

    def per_asset(key: str) -> dict[str, int]:
        return {a: int(m[key]) for a, m in sorted(materializations.items()) if isinstance(m.get(key), (int, float))}

    calls, hits, embedded = per_asset("llm_calls"), per_asset("llm_cache_hits"), per_asset("chunks_embedded")
    skipped = {f"{asset}/{k.removeprefix('skipped_')}": int(v) for asset in INPUT_ASSETS
               for k, v in sorted(materializations.get(asset, {}).items())
               if (k.startswith("skipped_") or k in ("qrels_missing_document", "human_queries_dropped"))
               and isinstance(v, (int, float)) and v}
    chunks = materializations.get("chunks", {})
    model = materializations.get("finetuned_biencoder", {})
    return {
        "run_id": run_id,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "llm_calls": sum(calls.values()),
        "llm_cache_hits": sum(hits.values()),
        **{k: int(chunks[k]) for k in CHUNK_KEYS if k in chunks},
        "chunks_embedded": sum(embedded.values()),
        "retrained": model.get("retrained"),
        "retrain_reason": model.get("retrain_reason"),
        "llm_calls_by_asset": calls,
        "llm_cache_hits_by_asset": hits,
        "chunks_embedded_by_asset": embedded,
        "input_skipped": skipped,   # "<asset>/<reason>": count, from the readers of the corpus and the log
        "seconds_by_asset": {k: round(v, 2) for k, v in step_seconds.items()},
        "seconds_total": round(sum(step_seconds.values()), 2),
    }


def run_events(instance, run_id: str) -> tuple[dict[str, dict], dict[str, float]]:
    """{asset: metadata values} of every materialization and {step: seconds} of every successful step so far."""
    materializations, seconds = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            materializations[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = event.event_specific_data.duration_ms / 1000
    return materializations, seconds


def write_stage_costs(home, materializations: dict[str, dict], step_seconds: dict[str, float], run_id: str) -> dict:
    """Merge this run's measured per-item costs into `<home>/state/stage_costs.json` (stages it did not do keep
    the last measurement); returns what was written."""
    from pathlib import Path

    path = Path(home).joinpath(*COSTS_FILE)
    costs = measured_costs(materializations, step_seconds, load_costs_file(home), run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(costs, indent=2) + "\n")
    tmp.replace(path)   # a reader never sees half a file
    return costs


def run_stats_asset(upstream: Iterable[dg.AssetKey]) -> dg.AssetsDefinition:
    """The run_stats asset, depending on every key in `upstream` so that it runs last."""

    @dg.asset(name="run_stats", group_name="operations", compute_kind="python", deps=sorted(set(upstream), key=str))
    def run_stats(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.MaterializeResult:
        """What this run cost and changed: LLM calls, cache hits, chunks new/removed/embedded, seconds per asset."""
        materializations, seconds = run_events(context.instance, context.run_id)
        stats = summarize_run(materializations, seconds, context.run_id)
        reports = workspace.reports_dir
        (reports / "run_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        with open(reports / "run_stats_history.jsonl", "a") as f:
            f.write(json.dumps(stats) + "\n")
        costs = write_stage_costs(workspace.path(), materializations, seconds, context.run_id)
        scalars = {k: v for k, v in stats.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        import pandas as pd

        steps = pd.DataFrame(sorted(stats["seconds_by_asset"].items(), key=lambda kv: -kv[1]), columns=["step", "seconds"])
        return dg.MaterializeResult(metadata={
            **scalars,
            "retrained": bool(stats["retrained"]) if stats["retrained"] is not None else "n/a",
            "llm_calls_by_asset": dg.MetadataValue.json(stats["llm_calls_by_asset"]),
            "chunks_embedded_by_asset": dg.MetadataValue.json(stats["chunks_embedded_by_asset"]),
            "seconds_by_asset": dg.MetadataValue.md(markdown_table(steps, max_rows=50)),
            "stage_costs": dg.MetadataValue.json(costs["stages"]),   # seconds an item: the next run's estimate
            "path": dg.MetadataValue.path(str(reports / "run_stats.json")),
        })

    return run_stats
