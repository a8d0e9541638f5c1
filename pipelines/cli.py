"""`flywheel run` materializes the whole graph in-process and prints the report; `flywheel ui` opens the UIs."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.profiles import PROFILES, apply_profile   # plain data: --help stays fast

REPO_DAGSTER_YAML = Path(__file__).resolve().parent.parent / "dagster.yaml"


def prepare_environment(home: Path, offline: bool = True) -> None:
    """Quiet, offline-safe defaults (each can be overridden from the environment) and a Dagster instance in home."""
    home.mkdir(parents=True, exist_ok=True)
    for key, value in {"DAGSTER_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                       "LANCEDB_LOG": "error", "TOKENIZERS_PARALLELISM": "false",
                       "FLYWHEEL_HOME": str(home)}.items():
        os.environ.setdefault(key, value)
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")   # bundled models only: no hub lookups that retry for a minute
    dagster_home = home / "dagster"
    dagster_home.mkdir(exist_ok=True)
    if REPO_DAGSTER_YAML.exists() and not (dagster_home / "dagster.yaml").exists():
        shutil.copy(REPO_DAGSTER_YAML, dagster_home / "dagster.yaml")
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home))


def ops_of(asset_names: list[str]) -> set[str]:
    """The ops that materialize the named assets: a multi-asset's op (corpus, feedback) for any of its outputs."""
    import dagster as dg

    from pipelines.definitions import STAGES

    wanted = set(asset_names)
    return {a.op.name for a in dg.load_assets_from_modules(STAGES)
            if isinstance(a, dg.AssetsDefinition) and {k.to_user_string() for k in a.keys} & wanted}


def build_run_config(args: argparse.Namespace) -> dict:
    """Run config for flywheel_job: only the knobs given on the command line; the rest keep the stages'
    own defaults (their Config classes are the one place a default lives). With --only, only the ops of the
    selected assets get config (Dagster rejects config for an op outside the selection)."""
    knobs = {
        "corpus": {"path": str(Path(args.corpus).expanduser().resolve()) if args.corpus else None},
        "feedback": {"path": str(Path(args.feedback).expanduser().resolve()) if getattr(args, "feedback", "") else None},
        "synthetic_queries": {"queries_per_chunk": args.queries_per_chunk, "max_chunks": args.max_chunks,
                              "fewshot": getattr(args, "fewshot", None)},
        "relevance_labels": {"max_queries": args.label_queries, "candidates_per_query": args.candidates},
        "finetuned_biencoder": {"epochs": args.epochs, "max_steps": args.max_steps,
                                "learning_rate": args.learning_rate, "interpolation": args.interpolation,
                                "min_change_to_retrain": getattr(args, "min_change_to_retrain", None),
                                "evals_per_run": getattr(args, "evals_per_run", None),
                                "validation_corpus": getattr(args, "validation_corpus", None)},
        "distilled_biencoder": {"enabled": True if args.distill else None,
                                **({"epochs": args.epochs, "max_steps": args.max_steps,
                                    "learning_rate": args.learning_rate, "interpolation": args.interpolation}
                                   if args.distill else {})},
        "learning_curve": {"sizes": _ints(args.curve_sizes), "seeds": _ints(args.curve_seeds),
                           "logged_sizes": _ints(getattr(args, "curve_logged_sizes", None)),
                           "enabled": False if args.no_learning_curve else None,
                           "epochs": args.epochs, "learning_rate": args.learning_rate,   # the shipped model's recipe
                           "interpolation": args.interpolation},
        "finetuned_crossencoder": {"max_steps": args.reranker_steps, "evals_per_run": getattr(args, "evals_per_run", None)},
        "query_adapter": {"enabled": False if getattr(args, "no_adapter", False) else None,
                          "kind": getattr(args, "adapter_kind", None)},
        "judge_agreement": {"max_queries": getattr(args, "judge_queries", None)},
        "chunker_baselines": {"chunkers": None if getattr(args, "chunker_baselines", None) is None
                              else _names(args.chunker_baselines) or []},   # "" = off
        "expanded_index": {"enabled": False if getattr(args, "no_expansion", False) else None,
                           "drop_lowest_fraction": getattr(args, "expansion_drop_lowest", None)},
        "document_summaries": {"enabled": True if getattr(args, "summaries", False) else None,
                               "max_documents": getattr(args, "summary_documents", None)},
        "evaluation_report": {"rerank_depth": args.rerank_depth, "offtheshelf_reranker": args.offtheshelf_reranker,
                              "offtheshelf_first_stages": _names(args.offtheshelf_first_stages),
                              "rerank_first_stages": _names(args.rerank_first_stages),
                              "offtheshelf_query_kinds": _names(args.offtheshelf_query_kinds)},
    }
    ops = ops_of(_names(args.only)) if args.only else None
    config = {op: {k: v for k, v in cfg.items() if v is not None} for op, cfg in knobs.items()
              if ops is None or op in ops}
    return {"ops": {op: {"config": c} for op, c in config.items() if c},
            "loggers": {"console": {"config": {"log_level": args.log_level}}}}


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _ints(value: str | None) -> list[int] | None:
    try:
        return [int(v) for v in _names(value)] if value else None
    except ValueError:
        raise SystemExit(f"expected a comma list of whole numbers like 100,250,500, got {value!r}") from None


LLM_MODES = ("json", "json_schema", "tools", "md_json")  # resources.llm_openai.MODES, spelt out so --help stays fast


def make_llm(args: argparse.Namespace, home: Path):
    """The LLM resource of a CLI run. An endpoint's URL and key reach it as dg.EnvVar (read at run time), never
    as values: a value would be stored in the run's job snapshot in <home>/dagster and shown in the UI."""
    from pipelines.definitions import default_llm
    from resources.llm import LocalGGUFLLMResource

    cache = str(home / "llm_cache.sqlite")
    share = {} if args.llm_max_failure_share is None else {"max_failure_share": args.llm_max_failure_share}
    if args.llm_backend == "openai":
        base_url = args.llm_base_url or os.environ.get("FLYWHEEL_LLM_BASE_URL", "")
        model = args.llm_model or os.environ.get("FLYWHEEL_LLM_MODEL", "")
        if not base_url or not model:
            raise SystemExit("--llm-backend openai needs --llm-base-url (e.g. http://localhost:8000/v1) and --llm-model; "
                             "the key is read from FLYWHEEL_LLM_API_KEY")
        os.environ.update(FLYWHEEL_LLM_BASE_URL=base_url, FLYWHEEL_LLM_MODEL=model)   # this process's run reads them
        return default_llm(home, **share, **({"mode": args.llm_mode} if args.llm_mode else {}))
    return LocalGGUFLLMResource(cache_path=cache, model_path=args.llm_model or "", **share)


def make_embedder(args: argparse.Namespace, home: Path):
    """The embedder of a CLI run: the sentence-transformers model, or (--embed-backend openai) a provider's
    /v1/embeddings, its URL, model and key reaching the resource as dg.EnvVar, as the LLM's do."""
    from pipelines.definitions import default_embedder
    from resources.embedder import EmbedderResource

    if getattr(args, "embed_backend", "local") != "openai":
        return EmbedderResource(model=args.base_model or "")
    base_url = args.embed_base_url or os.environ.get("FLYWHEEL_EMBED_BASE_URL", "")
    model = args.embed_model or os.environ.get("FLYWHEEL_EMBED_MODEL", "")
    if not base_url or not model:
        raise SystemExit("--embed-backend openai needs --embed-base-url (e.g. https://api.openai.com/v1) and "
                         "--embed-model (e.g. text-embedding-3-small); the key is read from FLYWHEEL_EMBED_API_KEY")
    if args.base_model:
        raise SystemExit("--base-model names a sentence-transformers model; with --embed-backend openai the "
                         "provider's --embed-model is the base model: give one of the two")
    os.environ.update(FLYWHEEL_EMBED_BASE_URL=base_url, FLYWHEEL_EMBED_MODEL=model)   # this process's run reads them
    return default_embedder(home)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_abandoned_runs(instance) -> list[str]:
    """Fail earlier CLI runs whose process is gone, and free the pool slots they held.

    A run killed mid-step (Ctrl-C twice, OOM, a closed laptop) never releases its `llm`/`gpu` slot, and
    the next run would wait for it forever. CLI runs carry their pid, so a dead one is recognisable.
    """
    import dagster as dg

    released = []
    live = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=live, tags={"flywheel/launched_by": "cli"})):
        pid = int(run.tags.get("flywheel/pid", "0") or 0)
        if pid and _process_alive(pid):
            continue
        instance.report_run_failed(run, message=f"flywheel: the process of this run (pid {pid}) is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released


def run_flywheel(args: argparse.Namespace):
    """Materialize flywheel_job in-process; returns (result, stage seconds). Used by the CLI and bench/.

    A --corpus that does not exist or holds nothing readable raises UnreadableCorpus before anything is created."""
    apply_profile(args)
    home = Path(args.home).expanduser().resolve()
    if args.corpus:
        from assets.corpus.readers import check_documents

        check_documents(args.corpus)
    prepare_environment(home, offline=not (args.base_model or args.llm_backend == "openai"))
    local_llm = args.llm_backend != "openai"
    if local_llm and not args.only:   # the whole job: a first run converts the GGUF while this one imports and embeds
        start_llm_conversion(args)
    import dagster as dg

    from pipelines.definitions import build_definitions

    defs = build_definitions(home, llm=make_llm(args, home), embedder=make_embedder(args, home))
    job = defs.resolve_job_def("flywheel_job")
    instance = dg.DagsterInstance.get()
    for run_id in release_abandoned_runs(instance):
        print(f"flywheel: released run {run_id}, whose process is gone", file=sys.stderr)
    only = _names(args.only)
    selection = None   # the rest is read from <home>/storage; a multi-asset's outputs go together (corpus, feedback)
    if only:
        selection = sorted(dg.AssetSelection.assets(*only).required_multi_asset_neighbors()
                           .resolve(defs.resolve_asset_graph()), key=lambda k: k.to_user_string())
        if local_llm and needs_llm(defs, selection):
            start_llm_conversion(args)
    from pipelines.memory import RssSampler

    with RssSampler() as sampler:
        result = job.execute_in_process(run_config=build_run_config(args), instance=instance, raise_on_error=False,
                                        asset_selection=selection,
                                        tags={"flywheel/launched_by": "cli", "flywheel/pid": str(os.getpid())})
    write_stage_memory(home, sampler, instance, result.run_id)
    return result, stage_seconds(result, instance)


def start_llm_conversion(args: argparse.Namespace) -> None:
    """Convert the local LLM's GGUF (`make_llm`'s model) in a child process, if it has no converted copy yet."""
    from resources.llm_local import start_conversion

    start_conversion(args.llm_model or "")


def needs_llm(defs, keys) -> bool:
    """Whether any of these assets asks for the `llm` resource."""
    return any("llm" in defs.resolve_assets_def(key).required_resource_keys for key in keys)


def write_stage_memory(home: Path, sampler, instance, run_id: str) -> dict:
    """`<home>/reports/stage_memory.json`: the process's peak RSS over the run and inside each step (MiB)."""
    import json

    from pipelines.memory import peak_by_step, step_windows

    peaks = peak_by_step(sampler.samples, step_windows(instance, run_id))
    report = {"run_id": run_id, "peak_rss_mib": round(sampler.peak / 2**20, 1),
              "peak_rss_mib_by_step": {k: round(v / 2**20, 1) for k, v in peaks.items()}}
    (home / "reports").mkdir(parents=True, exist_ok=True)
    (home / "reports" / "stage_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def read_stage_memory(home: Path, run_id: str) -> dict[str, float]:
    """{step: peak MiB} of this run, or {} when the file is missing or another run's."""
    import json

    try:
        report = json.loads((home / "reports" / "stage_memory.json").read_text())
    except (OSError, ValueError):
        return {}
    return report.get("peak_rss_mib_by_step", {}) if report.get("run_id") == run_id else {}


def stage_seconds(result, instance=None) -> dict[str, float]:
    """Seconds per step (assets and checks): a successful one as Dagster measured it; with the instance, also each
    failed step, as "<step> (failed)", from its start to its failure in the event log."""
    seconds = {e.step_key: e.event_specific_data.duration_ms / 1000
               for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    if instance is not None and not result.success:
        from pipelines.memory import step_windows

        failed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
        for step, (start, end) in step_windows(instance, result.run_id).items():
            if step in failed:
                seconds[f"{step} (failed)"] = end - start
    return seconds


def print_plan(args: argparse.Namespace, home: Path) -> None:
    """What the run will do and its estimated time and LLM calls per stage (pipelines/estimate.py), on stderr
    before anything runs. Advisory: an estimate that cannot be made says why and the run goes on."""
    try:
        from pipelines.estimate import format_estimate, plan_and_estimate

        if args.corpus:
            corpus = Path(args.corpus)
        else:
            from assets.corpus.sample import sample_corpus_path

            corpus = sample_corpus_path(home)   # what the run reads; written now, a second earlier
        est, survey = plan_and_estimate(args, home, corpus)
        print(format_estimate(est, survey), file=sys.stderr, flush=True)
    except Exception as error:   # never worth failing a run for
        print(f"flywheel: no estimate of this run ({type(error).__name__}: {error})", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    apply_profile(args)   # before the plan, so that the estimate is of what will run
    home = Path(args.home).expanduser().resolve()
    t0 = time.perf_counter()
    from assets.corpus.readers import UnreadableCorpus

    try:
        if args.corpus:
            from assets.corpus.readers import check_documents

            check_documents(args.corpus)   # refused before the plan is printed or the home created
        print_plan(args, home)
        result, seconds = run_flywheel(args)
    except UnreadableCorpus as e:   # a wrong --corpus: one line, no traceback, nothing created
        print(f"flywheel: {e}", file=sys.stderr)
        return 2
    memory = read_stage_memory(home, result.run_id)   # {step: peak MiB}; a failed step is "<step> (failed)" here
    rows, width = [], max((len(step) for step in seconds), default=0)   # the checks' names are long
    for step, secs in seconds.items():
        peak = memory.get(step.removesuffix(" (failed)"))
        rows.append(f"  {step:<{width}} {secs:8.1f}" + (f" {peak:9,.0f}" if peak is not None else ""))
    print(f"stage seconds{' and peak RSS (MiB)' if memory else ''}:\n" + "\n".join(rows), file=sys.stderr)
    if not result.success:
        for event in result.all_events:
            if event.is_failure:
                print(event.message, file=sys.stderr)
        print(f"flywheel run failed after {time.perf_counter() - t0:.0f}s; see the run in `flywheel ui --home {home}`",
              file=sys.stderr)
        return 1
    evaluated = "evaluation_report" in seconds   # not so with an --only that leaves it out: an older report
    #                                              on disk is not this run's
    if evaluated:
        print((home / "reports" / "evaluation.md").read_text())
    else:
        print("materialized: " + ", ".join(sorted(seconds)))
    stats_path = home / "reports" / "run_stats.json"
    if "run_stats" in seconds and stats_path.exists():
        import json

        stats = json.loads(stats_path.read_text())
        print("run stats: " + ", ".join(f"{k}={stats.get(k)}" for k in (
            "llm_calls", "llm_cache_hits", "chunks_total", "chunks_new", "chunks_removed", "chunks_embedded",
            "retrained")) + f"\n  {stats.get('retrain_reason')}")
        if stats.get("input_skipped"):
            print("input skipped (counted, not fatal): "
                  + ", ".join(f"{k}={v}" for k, v in stats["input_skipped"].items()))
    report = f"; report: {home / 'reports' / 'evaluation.json'}" if evaluated else ""
    print(f"done in {time.perf_counter() - t0:.0f}s{report}")
    return 0


def mlflow_ui_plan(env, home: Path, port: int) -> tuple[str | None, str]:
    """(the backend store `flywheel ui` serves an MLflow UI for, or None; the UI's URL for the run links).

    FLYWHEEL_MLFLOW_TRACKING_URI wins, as for the runs: an http(s) server is its own UI (nothing started;
    FLYWHEEL_MLFLOW_UI may name another address); a database URI gets a local UI over it; unset, the home's
    sqlite store gets one."""
    from resources.tracking import without_credentials

    uri = env.get("FLYWHEEL_MLFLOW_TRACKING_URI", "")
    local = f"http://127.0.0.1:{port}"
    if uri.startswith(("http://", "https://")):
        return None, env.get("FLYWHEEL_MLFLOW_UI") or without_credentials(uri).rstrip("/")
    return (uri or f"sqlite:///{home / 'mlflow.db'}"), local


def cmd_ui(args: argparse.Namespace) -> int:
    home = Path(args.home).expanduser().resolve()
    prepare_environment(home)
    bin_dir = Path(sys.executable).parent
    backend, mlflow_ui = mlflow_ui_plan(os.environ, home, args.mlflow_port)
    env = {**os.environ, "FLYWHEEL_MLFLOW_UI": mlflow_ui}
    procs = [
        subprocess.Popen([str(bin_dir / "dagster-webserver"), "-m", "pipelines.definitions", "-h", "127.0.0.1",
                          "-p", str(args.dagster_port)], env=env),
        # the daemon starts the runs the UI queues (a "Materialize" click; the instance queues runs, one at a
        # time, dagster.yaml) and ticks the schedules and the sensor once they are turned on
        subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-m", "pipelines.definitions"], env=env),
    ]
    if backend:   # a tracking server (http) serves its own UI: none is started here
        procs.append(subprocess.Popen([str(bin_dir / "mlflow"), "ui", "--backend-store-uri", backend,
                                       "--host", "127.0.0.1", "--port", str(args.mlflow_port)], env=env))
    print(f"Dagster UI: http://127.0.0.1:{args.dagster_port}   MLflow UI: {mlflow_ui or '(none: set FLYWHEEL_MLFLOW_UI)'}   "
          "(and the Dagster daemon: runs launched from the UI, schedules, sensors)")

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)   # `kill` or a test's terminate() stops both servers too
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=20)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize the whole graph in-process and print the evaluation table")
    run.add_argument("--corpus", default="", help="folder / .jsonl / .parquet / BEIR folder (default: bundled sample)")
    run.add_argument("--home", default="flywheel_home", help="where everything is written")
    run.add_argument("--profile", default="full", choices=sorted(PROFILES),
                     help="full: the stages' defaults; demo: a few minutes on the sample corpus (make demo). "
                          "Knobs given here override the profile's")
    run.add_argument("--feedback", default="",
                     help="a feedback log (.jsonl/.parquet, or a folder of them): logged queries and what users cited, "
                          "clicked or judged (default: $FLYWHEEL_FEEDBACK; none)")
    run.add_argument("--queries-per-chunk", type=int, help="synthetic queries per chunk (default 1)")
    run.add_argument("--max-chunks", type=int, help="write queries for a stable sample of this many chunks (default 2500; 0 = all)")
    run.add_argument("--fewshot", choices=["generic", "logged", "auto"],
                     help="the query writer's examples: generic (default), logged (queries from --feedback, in your "
                          "users' style), auto (logged when the log has enough)")
    run.add_argument("--label-queries", type=int, help="queries the judge labels (default 300; 0 = all)")
    run.add_argument("--judge-queries", type=int,
                     help="human queries per set on which the judge is measured against the labels (default 60)")
    run.add_argument("--candidates", type=int, help="candidates judged per labelled query (default 3)")
    run.add_argument("--epochs", type=float, help="training epochs (default 1)")
    run.add_argument("--max-steps", type=int, help="> 0 overrides --epochs")
    run.add_argument("--validation-corpus", type=int, help="chunks each validation pass of the bi-encoder embeds "
                                                             "and searches (default 1000)")
    run.add_argument("--evals-per-run", type=int, help="validation passes while training each model (default 4); "
                                                         "each one embeds the validation corpus")
    run.add_argument("--learning-rate", type=float, help="default 1e-5")
    run.add_argument("--interpolation", type=float, help="WiSE-FT alpha (default 0.5); 1.0 = raw fine-tuned weights")
    run.add_argument("--distill", action="store_true",
                     help="also train a bi-encoder distilled from the cross-encoder (margin-MSE) and compare")
    run.add_argument("--no-adapter", action="store_true",
                     help="skip the query adapter (seconds on a CPU) and its dense_adapter/hybrid_adapter rows")
    run.add_argument("--adapter-kind", choices=["linear", "mlp"],
                     help="the query adapter: linear (default, a d x d map) or mlp (plus a residual MLP)")
    run.add_argument("--no-expansion", action="store_true",
                     help="skip the doc2query-expanded table and its bm25_expanded/hybrid_expanded rows")
    run.add_argument("--expansion-drop-lowest", type=float,
                     help="doc2query--: also drop this share of the expansion queries, the lowest by the base model's "
                          "query/chunk cosine (default 0; e.g. 0.3)")
    run.add_argument("--summaries", action="store_true",
                     help="also summarise each document with the LLM (one call a document, cached) and index the "
                          "summaries beside the chunks: rows dense_summaries/hybrid_summaries (off by default)")
    run.add_argument("--summary-documents", type=int,
                     help="summarise at most this many documents, in doc-id order (default 0 = all)")
    run.add_argument("--reranker-steps", type=int,
                     help="cross-encoder training steps (default: one epoch, at least 300)")
    run.add_argument("--rerank-depth", type=int, help="first-stage hits each reranker reorders (default 20)")
    run.add_argument("--offtheshelf-reranker",
                     help='"upr" (default: the LLM\'s query likelihood), a hub/local cross-encoder, or "" for none')
    run.add_argument("--offtheshelf-first-stages", help="comma list (default hybrid_finetuned)")
    run.add_argument("--offtheshelf-query-kinds", help="comma list: synthetic,human (default both)")
    run.add_argument("--rerank-first-stages", help="comma list for the fine-tuned reranker (default: all five)")
    run.add_argument("--chunker-baselines",
                     help="comma list of chunkers scored on the human queries against the shipped one, e.g. "
                          "tokens-512-64,sentences-256 (default shipped,tokens-128-16,sentences-256; \"\" = off)")
    run.add_argument("--curve-sizes",
                     help="learning curve: comma list of training-example counts (default 100,300)")
    run.add_argument("--curve-logged-sizes",
                     help="learning curve with a feedback log: comma list of logged training queries (default 25,50,100)")
    run.add_argument("--curve-seeds", help="learning curve: comma list of seeds, one training each (default 0,1)")
    run.add_argument("--no-learning-curve", action="store_true",
                     help="skip the learning curve (it trains len(sizes) x len(seeds) extra models)")
    run.add_argument("--only", help="comma list of assets to materialize; the others are read from the last run "
                                    "in --home (e.g. judge_agreement,evaluation_report)")
    run.add_argument("--min-change-to-retrain", type=float,
                     help="retrain only when this share of chunks/training queries changed (default 0.05; 0 = always)")
    run.add_argument("--base-model", default="", help="hub id or local folder (default: bundled all-MiniLM-L6-v2)")
    run.add_argument("--embed-backend", choices=["local", "openai"], default="local",
                     help="local: the sentence-transformers --base-model; openai: a provider's /v1/embeddings (the "
                          "fine-tunes are skipped, the query adapter trains over its frozen vectors)")
    run.add_argument("--embed-base-url", default="",
                     help="openai: the endpoint, e.g. https://api.openai.com/v1 (default: $FLYWHEEL_EMBED_BASE_URL); "
                          "the key is read from FLYWHEEL_EMBED_API_KEY")
    run.add_argument("--embed-model", default="",
                     help="openai: the embeddings model, e.g. text-embedding-3-small (default: $FLYWHEEL_EMBED_MODEL)")
    run.add_argument("--llm-backend", choices=["local", "openai"], default="local")
    run.add_argument("--llm-model", default="",
                     help="local: GGUF file or HF folder; openai: the model name (default: $FLYWHEEL_LLM_MODEL)")
    run.add_argument("--llm-base-url", default="",
                     help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: $FLYWHEEL_LLM_BASE_URL)")
    run.add_argument("--llm-max-failure-share", type=float, help="an LLM stage stops when more than this share "
                     "of its calls gave nothing usable (default 0.5); what was paid for stays cached")
    run.add_argument("--llm-mode", choices=LLM_MODES, help="openai: how structured output is asked for (default "
                     "$FLYWHEEL_LLM_MODE, else json; tools or md_json for servers that ignore response_format)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    run.set_defaults(func=cmd_run)
    ui = sub.add_parser("ui", help="start the Dagster UI and the MLflow UI on localhost")
    ui.add_argument("--home", default="flywheel_home")
    ui.add_argument("--dagster-port", type=int, default=3000)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
