"""Feedback: what real users did with the retriever (cited, clicked, thumbs up/down, shown, judged), read from a
log and turned into graded (query, document) pairs, the strongest training signal a team has.

The playbook: "set up your logging now"; (query, passage, is_cited) gives "even higher signal" than synthetic
queries; "with 1000 examples you can start to outperform" a provider's model. The log's schema, the signal
weights and the bad-row reasons are in assets/feedback/log.py; matching targets to the corpus and removing test
queries in assets/feedback/resolve.py. A BEIR folder's qrels/train.tsv and qrels/dev.tsv join as judged rows.

Incremental by content: each log file's aggregate is cached under <home>/state/feedback/ by the hash of its
bytes (and the reader's version), so a folder with one file a day re-reads only the new day.
"""

import hashlib
import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import preview, stable_hash
from assets.feedback.log import (READER_VERSION, LogReport, SignalWeights, aggregate_file, combine, combine_daily,
                                 log_files)
from assets.feedback.resolve import PAIR_COLUMNS, QUERY_COLUMNS, feedback_frames, judged_rows
from resources.prompts import normalise_query
from resources.workspace import WorkspaceResource

FEEDBACK_ENV = "FLYWHEEL_FEEDBACK"


class FeedbackConfig(dg.Config):
    path: str = ""                      # a .jsonl/.parquet log or a folder of them; "" -> $FLYWHEEL_FEEDBACK (read at
    #                                     run time), unset -> no log (BEIR train/dev qrels may still be read)
    cited: int = 3                      # grade of a passage the answer cited
    clicked: int = 2                    # ... of a clicked result (2 = relevant at the default threshold)
    thumbs_up: int = 2
    relevant_grade: int = 2             # grade >= this is a positive; 0 a negative; between: neither
    skip_above_negatives: bool = True   # a shown result skipped above a click is a weak negative
    beir_train_qrels: bool = True       # read the corpus's qrels/train.tsv and qrels/dev.tsv as judged feedback

    def weights(self) -> SignalWeights:
        return SignalWeights(cited=self.cited, clicked=self.clicked, thumbs_up=self.thumbs_up,
                             relevant_grade=self.relevant_grade, skip_above_negatives=self.skip_above_negatives)

    def log_path(self) -> str:
        return self.path or os.environ.get(FEEDBACK_ENV, "")


def file_digest(path: Path) -> str:
    h = hashlib.sha256(READER_VERSION.encode())
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:24]


def read_log(path: str, cache_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, LogReport, dict]:
    """(aggregate, daily, report, file counts) of every file under `path`, each read once per content."""
    report, aggregates, dailies, seen = LogReport(), [], [], {"files_read": 0, "files_cached": 0}
    cache_dir.mkdir(parents=True, exist_ok=True)
    for f in log_files(path):
        digest = file_digest(f)
        agg_file, day_file, rep_file = (cache_dir / f"{digest}.{k}" for k in ("pairs.parquet", "daily.parquet",
                                                                            "report.json"))
        if agg_file.exists() and day_file.exists() and rep_file.exists():
            agg, days = pd.read_parquet(agg_file), pd.read_parquet(day_file)
            saved = json.loads(rep_file.read_text())
            part = LogReport(rows=saved["rows"], files=saved["files"], examples=saved["examples"])
            part.skipped.update(saved["skipped"])
            seen["files_cached"] += 1
        else:
            agg, days, part = aggregate_file(f)
            for frame, dst in ((agg, agg_file), (days, day_file)):
                frame.to_parquet(dst.with_suffix(".tmp"), index=False)
                dst.with_suffix(".tmp").replace(dst)
            rep_file.write_text(json.dumps(part.to_dict()))
            seen["files_read"] += 1
        report.merge(part)
        aggregates.append(agg)
        dailies.append(days)
    return combine(aggregates), combine_daily(dailies), report, seen


def human_test_texts(human_queries: list) -> set[str]:
    """Normalised texts of every human test query: none of them may reach training or the query writer."""
    return {normalise_query(t) for s in human_queries for t in s.queries.values() if normalise_query(t)}


@dg.multi_asset(
    outs={
        "feedback_pairs": dg.AssetOut(description="Graded (logged query, document/chunk) pairs from the feedback log."),
        "logged_queries": dg.AssetOut(description="Each distinct logged query: its traffic, days and labels."),
    },
    group_name="feedback",
    compute_kind="pandas",
)
def feedback(context: dg.AssetExecutionContext, documents: pd.DataFrame, chunks: pd.DataFrame, human_queries: list,
             qrels_feedback: list, config: FeedbackConfig, workspace: WorkspaceResource):
    path = config.log_path()
    frames, daily, report, files = [], None, LogReport(), {"files_read": 0, "files_cached": 0}
    if path:
        agg, daily, report, files = read_log(path, workspace.path("state", "feedback"))
        frames.append(agg)
    if config.beir_train_qrels and qrels_feedback:
        frames.append(judged_rows(qrels_feedback, lambda s: f"qrels/{s.name.rsplit('/', 1)[-1]}"))
    agg = combine(frames) if frames else combine([])
    daily = daily if daily is not None else combine_daily([])
    pairs, queries, counts = feedback_frames(agg, daily, documents, chunks, human_test_texts(human_queries),
                                             config.weights())
    skipped = {**report.skipped, **{k: v for k, v in counts.items() if k != "test_queries_dropped"}}
    where = path or ("BEIR qrels/train,dev" if qrels_feedback else "")
    if not where:
        context.log.info("feedback: no log configured (flywheel run --feedback PATH, or FLYWHEEL_FEEDBACK)")
    else:
        context.log.info(f"feedback: {report.rows} rows from {report.files} files ({files['files_cached']} cached), "
                         f"{len(queries)} logged queries, {len(pairs)} labelled pairs; skipped {skipped}")
    common = {"log": where or "none: point `flywheel run --feedback PATH` (or FLYWHEEL_FEEDBACK) at a log",
              "log_hash": stable_hash(sorted(agg["norm"] + "\0" + agg["target"])) if len(agg) else ""}
    labels = pairs["label"].value_counts().to_dict()
    shown = pairs.merge(queries[["query_id", "text"]], on="query_id", how="left")
    yield dg.Output(pairs, output_name="feedback_pairs", metadata={
        **common,
        "n_pairs": len(pairs),
        "positives": int(labels.get("positive", 0)),
        "negatives": int(labels.get("negative", 0)),
        "weak_negatives": int(pairs["weak"].sum()) if len(pairs) else 0,
        "documents_with_positives": int(pairs.loc[pairs["label"] == "positive", "doc_id"].nunique()),
        "by_source": dg.MetadataValue.json(pairs["source"].value_counts().to_dict()),
        "preview": preview(shown[["text", "doc_id", "chunk_id", "grade", "label", "source"]], 8),
    })
    yield dg.Output(queries, output_name="logged_queries", metadata={
        **common,
        "n_logged_queries": len(queries),
        "rows_read": report.rows,
        "files": report.files,
        **files,
        "rows_skipped": int(sum(skipped.values())),
        **{f"skipped_{k}": int(v) for k, v in sorted(skipped.items())},
        "test_queries_dropped": int(counts.get("test_queries_dropped", 0)),
        "skipped_examples": dg.MetadataValue.json(report.examples),
        "with_positive": int((queries["n_positive"] > 0).sum()) if len(queries) else 0,
        "preview": preview(queries[["text", "n_interactions", "n_positive", "n_negative", "source"]], 8),
    })


__all__ = ["feedback", "FeedbackConfig", "PAIR_COLUMNS", "QUERY_COLUMNS", "human_test_texts"]
