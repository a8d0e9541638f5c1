"""Cost before work: what `flywheel run` is about to do, in items, LLM calls and minutes per stage.

The CLI prints this table after the corpus check and before Dagster starts, so a 3-hour run can be cancelled in
its first second. Three steps, the last two pure:

1. `survey_corpus`: a cheap look at the corpus (no chunking, no model): the documents and their sizes in bytes,
   from the .jsonl lines (parsed, so only title + text count), the folder listing (file sizes) or the parquet
   footer (its row count and bytes); the human query sets from a BEIR folder's qrels. Chunks are estimated from
   each document's size at BYTES_PER_TOKEN (4.3) and the chunker's window (256 tokens, a new window every
   ~192: windows end at the best break in their second half, less the 32-token overlap). Measured against the
   real chunker: sample corpus 580 vs 606, cisi 1,770 vs 1,593, cranfield 1,990 vs 1,778 (its lower-case text
   with spaced punctuation has more bytes a token), msmarco 5,000 vs 4,999. When the home's last run read the
   same corpus, its chunks per document are used instead.
2. `plan_run`: the items each stage will do, from the arguments (the stages' Config defaults otherwise): chunks to
   embed, queries to write = min(max_chunks, chunks) x queries_per_chunk, judge calls = labelled queries x
   (candidates + 1), judge_agreement calls (<= 13 a human query), training steps of the bi-encoder, the
   reranker and the learning curve, UPR pairs in the evaluation.
3. `estimate`: seconds = fixed + items x seconds an item, from `<home>/state/stage_costs.json` (written by
   run_stats after every run from its steps' seconds and the items each stage did: `measured_costs`), else
   DEFAULT_COSTS. LLM calls whose answers the home's cache already holds cost nothing (the cache's rows of that
   kind are taken off, stage by stage), so the LLM calls shown are an upper bound.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

BYTES_PER_TOKEN = 4.3   # UTF-8 bytes per MiniLM word piece on English prose (see the module docstring)
WINDOW, STRIDE = 256, 192
TRAIN_SHARE = 0.7       # document_splits: 1 - test 0.2 - validation 0.1 of the documents, so of the queries
TEST_SHARE = 0.2
JUDGE_PAIRS_PER_QUERY = 13   # judge_agreement: depth 10 + up to 3 missed relevant documents per human query
SURVEY_LINES = 20_000   # .jsonl lines parsed; past that, the rest is extrapolated from the bytes left
COSTS_FILE = ("state", "stage_costs.json")

# Built-in per-item costs, measured on this 2-core CPU machine (no GPU), used until a run in the home has measured
# its own: (seconds an item, fixed seconds). Sources: the cranfield run with feedback of 2026-12-02 (run_stats of
# /tmp/fb/cranfield: 300 query calls in 121.9 s, 397 judge calls in 92.6 s, 122 judge_agreement calls in 65.2 s,
# 1,778 chunks embedded in 43.9 s and 34.1 s, 1,398 documents read and chunked in 2.8 s, the evaluation without UPR
# 114.9 s, every other step together ~26 s) and README's "make demo" of 2026-12-01 (reranker 16.0 min for its 300
# steps = 3.2 s a step; LearningCurveConfig: ~18 s a bi-encoder step at batch 32, scoring passes included; UPR
# p50 2.6 s a query of 20 pairs = 0.13 s a pair).
DEFAULT_COSTS: dict[str, dict[str, float]] = {
    "chunks": {"per_item": 0.002, "fixed": 0.0},
    "baseline_index": {"per_item": 0.025, "fixed": 0.0},
    "synthetic_queries": {"per_item": 0.41, "fixed": 0.0},
    "relevance_labels": {"per_item": 0.23, "fixed": 0.0},
    "judge_agreement": {"per_item": 0.53, "fixed": 0.0},
    "finetuned_biencoder": {"per_item": 18.0, "fixed": 30.0},
    "finetuned_crossencoder": {"per_item": 3.2, "fixed": 10.0},
    "learning_curve": {"per_item": 18.0, "fixed": 30.0},
    "finetuned_index": {"per_item": 0.02, "fixed": 0.0},
    "evaluation_report": {"per_item": 0.13, "fixed": 115.0},
    "document_summaries": {"per_item": 1.5, "fixed": 0.0},   # 32 cranfield documents in 48.6 s, cores free
    "other": {"per_item": 0.0, "fixed": 30.0},
}


@dataclass(frozen=True)
class Stage:
    name: str
    steps: tuple[str, ...]    # Dagster step keys whose seconds are the stage's
    unit: str
    llm: str = ""             # the LLM cache kind its calls are ("query", "judge"), "" when it calls no LLM
    always: bool = False      # its fixed seconds are paid even with no items (it runs every time)


STAGES = (
    Stage("chunks", ("corpus", "chunks"), "documents read and chunked", always=True),
    Stage("baseline_index", ("baseline_index",), "chunks to embed"),
    Stage("synthetic_queries", ("synthetic_queries",), "queries to write", "query"),
    Stage("relevance_labels", ("relevance_labels",), "judge calls", "judge"),
    Stage("judge_agreement", ("judge_agreement",), "judge calls", "judge"),
    Stage("finetuned_biencoder", ("finetuned_biencoder",), "training steps"),
    Stage("finetuned_crossencoder", ("finetuned_crossencoder",), "training steps"),
    Stage("learning_curve", ("learning_curve",), "training steps"),
    Stage("finetuned_index", ("finetuned_index",), "chunks to embed"),
    Stage("evaluation_report", ("evaluation_report",), "UPR pairs", "judge", always=True),
    Stage("document_summaries", ("document_summaries", "summary_index"), "documents to summarise", "summary"),
)
BY_NAME = {s.name: s for s in STAGES}


# -- 1. the corpus, cheaply

@dataclass(frozen=True)
class CorpusSurvey:
    documents: int
    chunks: int
    chunks_from: str                       # "document sizes" or "the last run"
    human_queries: tuple[int, ...] = ()    # queries per human test set (BEIR qrels other than train/dev)


def chunks_for_bytes(n_bytes: int) -> int:
    tokens = n_bytes / BYTES_PER_TOKEN
    return 1 if tokens <= WINDOW else 1 + math.ceil((tokens - WINDOW) / STRIDE)


def _jsonl_sizes(path: Path) -> list[int]:
    sizes, read_bytes, total = [], 0, path.stat().st_size
    with path.open("rb") as f:
        for line in f:
            read_bytes += len(line)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            text = str(next((record[k] for k in ("text", "contents", "body") if record.get(k)), ""))
            title = str(record.get("title") or "")
            sizes.append(len(text.encode()) + (0 if text.startswith(title) else len(title.encode()) + 2))
            if len(sizes) >= SURVEY_LINES:
                break
    rest = total - read_bytes
    if rest > 0 and sizes:   # the lines not read, at the mean size of those read
        mean = read_bytes / len(sizes)
        sizes += [int(sum(sizes) / len(sizes))] * int(rest / mean)
    return sizes


def document_sizes(path: Path) -> list[int]:
    """Bytes of each document (an estimate for HTML, which carries its markup)."""
    from assets.corpus.readers import TEXT_SUFFIXES, is_beir_folder

    if is_beir_folder(path):
        return _jsonl_sizes(path / "corpus.jsonl")
    if path.is_dir():
        sizes = []
        for root, _, files in os.walk(path):
            for name in files:
                file = Path(root) / name
                if file.suffix.lower() in TEXT_SUFFIXES and file.is_file():
                    size = file.stat().st_size
                    if size > 1:
                        sizes.append(size)
        return sizes
    if path.suffix.lower() == ".jsonl":
        return _jsonl_sizes(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        rows = meta.num_rows
        total = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        return [int(total / rows)] * rows if rows else []
    return [path.stat().st_size]


def human_query_counts(path: Path) -> tuple[int, ...]:
    """Queries with a relevant document per human test set of a BEIR folder (its qrels but train/dev)."""
    from assets.corpus import is_training_qrels
    from assets.corpus.readers import _read_qrels, is_beir_folder

    if not is_beir_folder(path) or not (path / "qrels").is_dir():
        return ()
    return tuple(len(_read_qrels(f)) for f in sorted((path / "qrels").glob("*.tsv")) if not is_training_qrels(f.stem))


def survey_corpus(path: Path, home: Path) -> CorpusSurvey:
    """Documents, estimated chunks and human query sets of the corpus at `path`, without reading it whole."""
    path = Path(path).expanduser().resolve()
    sizes = document_sizes(path)
    last = load_costs_file(home).get("corpus", {})
    if last.get("path") == str(path) and last.get("documents") and last.get("chunks"):
        chunks, source = round(len(sizes) * last["chunks"] / last["documents"]), "the last run"
    else:
        chunks, source = sum(chunks_for_bytes(b) for b in sizes), "document sizes"
    return CorpusSurvey(documents=len(sizes), chunks=chunks, chunks_from=source,
                        human_queries=human_query_counts(path))


# -- 2. the plan: items per stage

@dataclass(frozen=True)
class Knobs:
    """The arguments the plan depends on, each one already resolved to its stage's default when not given."""
    queries_per_chunk: int
    max_chunks: int
    label_queries: int
    candidates: int
    judge_queries: int
    epochs: float
    max_steps: int
    biencoder_batch: int
    reranker_steps: int          # 0: one epoch, at least reranker_min_steps
    reranker_min_steps: int
    reranker_batch: int
    curve: bool
    curve_sizes: tuple[int, ...]
    curve_seeds: tuple[int, ...]
    offtheshelf_reranker: str
    offtheshelf_first_stages: int
    offtheshelf_query_kinds: tuple[str, ...]
    rerank_depth: int
    only: tuple[str, ...] = ()
    summaries: bool = False
    summary_documents: int = 0   # 0 = every document


def knobs_from_args(args) -> Knobs:
    """Knobs of a `flywheel run` command line: a knob not given takes its stage Config's default (they are the one
    place a default lives)."""
    from assets.evaluation import EvaluationConfig
    from assets.indices.summaries import SummaryConfig
    from assets.labels import LabelConfig
    from assets.labels.judge_agreement import JudgeAgreementConfig
    from assets.queries import QueryGenConfig
    from assets.training import TrainConfig
    from assets.training.learning_curve import LearningCurveConfig
    from assets.training.reranker import RerankerConfig

    def given(name, config, fld):
        value = getattr(args, name, None)
        return config.model_fields[fld].default if value is None else value

    def listed(value, config, fld):
        if not value:
            return tuple(config.model_fields[fld].default)
        return tuple(v.strip() for v in value.split(",") if v.strip())

    return Knobs(
        queries_per_chunk=given("queries_per_chunk", QueryGenConfig, "queries_per_chunk"),
        max_chunks=given("max_chunks", QueryGenConfig, "max_chunks"),
        label_queries=given("label_queries", LabelConfig, "max_queries"),
        candidates=given("candidates", LabelConfig, "candidates_per_query"),
        judge_queries=given("judge_queries", JudgeAgreementConfig, "max_queries"),
        epochs=given("epochs", TrainConfig, "epochs"), max_steps=given("max_steps", TrainConfig, "max_steps"),
        biencoder_batch=TrainConfig.model_fields["batch_size"].default,
        reranker_steps=given("reranker_steps", RerankerConfig, "max_steps"),
        reranker_min_steps=RerankerConfig.model_fields["min_steps"].default,
        reranker_batch=RerankerConfig.model_fields["batch_size"].default,
        curve=not getattr(args, "no_learning_curve", False),
        curve_sizes=tuple(int(v) for v in listed(getattr(args, "curve_sizes", None), LearningCurveConfig, "sizes")),
        curve_seeds=tuple(int(v) for v in listed(getattr(args, "curve_seeds", None), LearningCurveConfig, "seeds")),
        offtheshelf_reranker=given("offtheshelf_reranker", EvaluationConfig, "offtheshelf_reranker"),
        offtheshelf_first_stages=len(listed(getattr(args, "offtheshelf_first_stages", None), EvaluationConfig,
                                            "offtheshelf_first_stages")),
        offtheshelf_query_kinds=listed(getattr(args, "offtheshelf_query_kinds", None), EvaluationConfig,
                                       "offtheshelf_query_kinds"),
        rerank_depth=given("rerank_depth", EvaluationConfig, "rerank_depth"),
        summaries=bool(getattr(args, "summaries", False)) or SummaryConfig.model_fields["enabled"].default,
        summary_documents=given("summary_documents", SummaryConfig, "max_documents"),
        only=tuple(v.strip() for v in (getattr(args, "only", None) or "").split(",") if v.strip()),
    )


@dataclass(frozen=True)
class StageWork:
    stage: str
    items: int
    detail: str
    llm_calls: int = 0


def _capped(n: int, cap: int) -> int:
    return n if cap <= 0 else min(n, cap)


def plan_run(knobs: Knobs, survey: CorpusSurvey, train_rows_per_query: float = TRAIN_SHARE) -> list[StageWork]:
    """The work of each stage the run will materialize (all of them, or those of --only)."""
    n = survey.chunks
    written_for = _capped(n, knobs.max_chunks)
    queries = written_for * knobs.queries_per_chunk
    labelled = _capped(queries, knobs.label_queries)
    judge_calls = labelled * (knobs.candidates + 1)
    agreement = sum(min(q, knobs.judge_queries) for q in survey.human_queries) * JUDGE_PAIRS_PER_QUERY
    rows = round(queries * train_rows_per_query)
    bi_steps = knobs.max_steps if knobs.max_steps > 0 else math.ceil(rows / knobs.biencoder_batch * knobs.epochs)
    pairs = 2 * rows   # the reranker's train pairs: each triplet's positive and hard negative
    ce_steps = knobs.reranker_steps if knobs.reranker_steps > 0 else max(
        knobs.reranker_min_steps, math.ceil(pairs / knobs.reranker_batch * knobs.epochs))
    sizes = [s for s in knobs.curve_sizes if s < rows] if knobs.curve else []
    curve_steps = len(knobs.curve_seeds) * sum(math.ceil(s / knobs.biencoder_batch * knobs.epochs) for s in sizes)
    upr_queries = ((round(queries * TEST_SHARE) if "synthetic" in knobs.offtheshelf_query_kinds else 0)
                   + (sum(survey.human_queries) if "human" in knobs.offtheshelf_query_kinds else 0))
    upr = (upr_queries * knobs.rerank_depth * knobs.offtheshelf_first_stages
           if knobs.offtheshelf_reranker == "upr" else 0)
    per_chunk = f" x {knobs.queries_per_chunk}" if knobs.queries_per_chunk != 1 else ""
    work = [
        StageWork("chunks", survey.documents, f"{survey.documents:,} documents -> ~{n:,} chunks "
                                              f"(from {survey.chunks_from})"),
        StageWork("baseline_index", n, f"~{n:,} chunks to embed (at most: unchanged ones are reused)"),
        StageWork("synthetic_queries", queries, f"{queries:,} queries to write ({written_for:,} chunks{per_chunk})",
                  queries),
        StageWork("relevance_labels", judge_calls, f"{labelled:,} queries x ({knobs.candidates} candidates + 1)",
                  judge_calls),
        StageWork("judge_agreement", agreement,
                  f"{agreement:,} judge calls ({len(survey.human_queries)} human sets, <= "
                  f"{knobs.judge_queries} queries x {JUDGE_PAIRS_PER_QUERY})" if survey.human_queries
                  else "no human query set: nothing to measure", agreement),
        StageWork("finetuned_biencoder", bi_steps, f"{bi_steps:,} steps (~{rows:,} triplets, batch "
                                                   f"{knobs.biencoder_batch})"),
        StageWork("finetuned_crossencoder", ce_steps, f"{ce_steps:,} steps (batch {knobs.reranker_batch})"),
        StageWork("learning_curve", curve_steps,
                  f"{curve_steps:,} steps ({len(sizes) * len(knobs.curve_seeds)} models: sizes "
                  f"{', '.join(map(str, sizes))} x {len(knobs.curve_seeds)} seeds)" if sizes
                  else "off" if not knobs.curve else "no size below the train split: nothing to train"),
        StageWork("finetuned_index", n, f"~{n:,} chunks to embed"),
        StageWork("evaluation_report", upr,
                  f"{upr:,} UPR pairs ({upr_queries:,} queries x depth {knobs.rerank_depth} x "
                  f"{knobs.offtheshelf_first_stages} first stages)" if upr
                  else f"no UPR (off-the-shelf reranker: {knobs.offtheshelf_reranker or 'none'})", upr),
    ]
    if knobs.summaries:
        summarised = _capped(survey.documents, knobs.summary_documents)
        work.append(StageWork("document_summaries", summarised, f"{summarised:,} documents to summarise", summarised))
    if knobs.only:
        work = [w for w in work if set(BY_NAME[w.stage].steps) & set(knobs.only)]
    return work


# -- 3. the estimate

@dataclass
class StageEstimate:
    stage: str
    detail: str
    llm_calls: int
    cached: int
    seconds: float


@dataclass
class Estimate:
    rows: list[StageEstimate]
    costs_from: str
    other_seconds: float = 0.0
    cached_rows: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rows) + self.other_seconds

    @property
    def llm_calls(self) -> int:
        return sum(r.llm_calls for r in self.rows)


def estimate(work: list[StageWork], costs: dict[str, dict[str, float]], cached: dict[str, int],
             costs_from: str = "built-in defaults", whole_run: bool = True) -> Estimate:
    """seconds = fixed + items x seconds an item per stage; calls the cache holds (`cached`: rows per kind, taken
    off stage by stage in the order of `work`) cost nothing. `costs` falls back to DEFAULT_COSTS stage by stage."""
    left = dict(cached)
    rows = []
    for w in work:
        cost = {**DEFAULT_COSTS[w.stage], **costs.get(w.stage, {})}
        kind = BY_NAME[w.stage].llm
        free = min(w.items, left.get(kind, 0)) if kind and w.llm_calls else 0
        if free:
            left[kind] -= free
        paid = w.items - free
        rows.append(StageEstimate(w.stage, w.detail, w.llm_calls, free,
                                  (cost["fixed"] if w.items or BY_NAME[w.stage].always else 0.0)
                                  + paid * cost["per_item"]))
    other = {**DEFAULT_COSTS["other"], **costs.get("other", {})}["fixed"] if whole_run else 0.0
    return Estimate(rows, costs_from, other, dict(cached))


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{int(minutes // 60)} h {minutes % 60:02.0f} min"


def format_estimate(est: Estimate, survey: CorpusSurvey) -> str:
    lines = [f"flywheel run: about to do (per-item costs from {est.costs_from}):",
             f"  {'stage':<24} {'work':<62} {'LLM calls':>10} {'time':>11}"]
    for r in est.rows:
        calls = f"<= {r.llm_calls:,}" if r.llm_calls else "-"
        lines.append(f"  {r.stage:<24} {r.detail:<62} {calls:>10} {duration(r.seconds):>11}")
    if est.other_seconds:
        lines.append(f"  {'other steps':<24} {'splits, triplets, adapter, expansion, gate, checks, monitoring':<62} "
                     f"{'-':>10} {duration(est.other_seconds):>11}")
    lines.append(f"  {'total':<24} {'':<62} {'<= ' + format(est.llm_calls, ','):>10} {duration(est.seconds):>11}")
    free = sum(r.cached for r in est.rows)
    if free:
        held = ", ".join(f"{n:,} {k}" for k, n in sorted(est.cached_rows.items()) if n)
        lines.append(f"  the home's LLM cache holds {held} answers: up to {free:,} of these calls cost nothing and "
                     "are left out of the time (answers for another corpus or model would not count)")
    lines.append("  (Ctrl-C now to cancel; a rerun resumes from the LLM cache and the stored outputs)")
    return "\n".join(lines)


# -- costs stored in the home

def load_costs_file(home: Path) -> dict:
    path = Path(home).joinpath(*COSTS_FILE)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def cached_rows(home: Path) -> dict[str, int]:
    """Rows per kind ("query", "judge") in the home's LLM cache, read-only; {} without one."""
    path = Path(home) / "llm_cache.sqlite"
    if not path.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            return {k: n for k, n in con.execute("select kind, count(*) from llm_responses group by kind")}
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def measured_costs(materializations: dict[str, dict], step_seconds: dict[str, float], previous: dict | None = None,
                   run_id: str = "") -> dict:
    """The stage costs one run measured (pure): per stage its seconds, items and so seconds an item; a stage that
    did no items (everything cached, a model reused) measures its fixed seconds instead. Stages the run did not
    do keep the `previous` values."""
    previous = previous or {}
    meta = materializations
    items = {
        "chunks": meta.get("documents", {}).get("n_documents"),
        "baseline_index": meta.get("baseline_index", {}).get("chunks_embedded"),
        "synthetic_queries": meta.get("synthetic_queries", {}).get("llm_calls"),
        "relevance_labels": meta.get("relevance_labels", {}).get("llm_calls"),
        "judge_agreement": meta.get("judge_agreement", {}).get("llm_calls"),
        "finetuned_biencoder": meta.get("finetuned_biencoder", {}).get("steps")
        if meta.get("finetuned_biencoder", {}).get("retrained") else 0,
        "finetuned_crossencoder": meta.get("finetuned_crossencoder", {}).get("steps")
        if meta.get("finetuned_crossencoder", {}).get("retrained") else 0,
        "learning_curve": meta.get("learning_curve", {}).get("steps", 0),
        "finetuned_index": meta.get("finetuned_index", {}).get("chunks_embedded"),
        "evaluation_report": meta.get("evaluation_report", {}).get("llm_calls"),
        "document_summaries": meta.get("document_summaries", {}).get("llm_calls"),   # None when off: not measured
    }
    stages = dict(previous.get("stages", {}))
    known = set()
    for stage in STAGES:
        known |= set(stage.steps)
        n = items[stage.name]
        if not all(s in step_seconds for s in stage.steps) or not isinstance(n, (int, float)):
            continue
        seconds = sum(step_seconds[s] for s in stage.steps)
        base = {**DEFAULT_COSTS[stage.name], **stages.get(stage.name, {})}
        if n > 0:
            fixed = min(base["fixed"], seconds)
            cost = {"per_item": round((seconds - fixed) / n, 4), "fixed": round(fixed, 2)}
        else:
            cost = {"per_item": base["per_item"], "fixed": round(seconds, 2)}
        stages[stage.name] = {**cost, "items": int(n), "seconds": round(seconds, 2)}
    other = [v for k, v in step_seconds.items() if k not in known]
    if other:
        stages["other"] = {"per_item": 0.0, "fixed": round(sum(other), 2), "steps": len(other)}
    out = {"run_id": run_id, "stages": stages, "corpus": previous.get("corpus", {})}
    docs, chunks = meta.get("documents", {}), meta.get("chunks", {})
    if docs.get("corpus_path") and docs.get("n_documents") and chunks.get("n_chunks"):
        out["corpus"] = {"path": str(Path(docs["corpus_path"]).expanduser().resolve()),
                         "documents": int(docs["n_documents"]), "chunks": int(chunks["n_chunks"])}
    triplets, written = meta.get("training_triplets", {}), meta.get("synthetic_queries", {})
    if triplets.get("n_train") and written.get("n_queries"):
        out["train_rows_per_query"] = round(triplets["n_train"] / written["n_queries"], 3)
    elif "train_rows_per_query" in previous:
        out["train_rows_per_query"] = previous["train_rows_per_query"]
    return out


def stored_costs(home: Path) -> tuple[dict[str, dict[str, float]], str, float]:
    """(costs by stage, where they come from, training rows per query) for `estimate`."""
    data = load_costs_file(home)
    stages = {k: {"per_item": v["per_item"], "fixed": v["fixed"]} for k, v in data.get("stages", {}).items()
              if isinstance(v, dict) and {"per_item", "fixed"} <= set(v)}
    source = (f"this machine's last run in the home (run {data.get('run_id', '?')[:8]}; other stages: built-in "
              "defaults)" if stages else "built-in defaults, measured on a 2-core CPU machine (no run in this "
                                         "home yet)")
    return stages, source, float(data.get("train_rows_per_query", TRAIN_SHARE))


def plan_and_estimate(args, home: Path, corpus: Path) -> tuple[Estimate, CorpusSurvey]:
    """The whole look before a run: survey, plan, estimate (what the CLI prints)."""
    survey = survey_corpus(corpus, home)
    costs, source, rows_per_query = stored_costs(home)
    knobs = knobs_from_args(args)
    work = plan_run(knobs, survey, rows_per_query)
    return estimate(work, costs, cached_rows(home), source, whole_run=not knobs.only), survey
