"""The feedback log reader: what users did with the retriever's results, turned into graded (query, document)
pairs. Pure functions, no Dagster.

The log is a `.jsonl` or `.parquet` file, or a folder of them (read in sorted order, e.g. one file a day),
one interaction a row (the schema is a public interface, documented in the README):

    {"query": "...", "doc_id": "...",          # or "chunk_id", or "passage" (text; matched to a chunk)
     "signal": "cited" | "clicked" | "thumbs_up" | "thumbs_down" | "shown" | "judged",
     "grade": 0..3,                            # optional; required for "judged"
     "query_id": "...", "session_id": "...", "rank": 3, "timestamp": "2026-11-30T12:00:00Z"}  # optional

Signals become grades by `SignalWeights` (config), per (query, target) pair, in this order:
1. a `grade` given on any row (always on `judged` rows): the highest one given;
2. else `cited` (the answer used this passage): `cited` weight (3);
3. else a thumbs-down at least as often as thumbs-up: a labelled negative (grade 0);
4. else `clicked` / `thumbs_up`: their weight (2);
5. else `shown` and skipped *above* a clicked or cited result of the same impression (same query, same
   session, same file): a weak negative (grade 0, `weak`). The user read past it to reach the click
   (Joachims et al. 2005, "click > skip above"). A shown result below the last click, or in an impression
   with no click, is no evidence at all: position bias means it was probably never looked at;
6. else (shown only): no label; counted as `shown_only`.
A grade >= `relevant_grade` is a positive, 0 a negative, anything between is `neutral` (neither).

Bad rows never stop a read: each is counted by reason (`bad_json`, `not_an_object`, `empty_query`,
`no_target`, `unknown_signal`, `bad_grade`, `bad_rank`, `bad_timestamp` (the row is kept, without its time),
`too_large`, `unreadable_file`, `unsupported_file`) with a few examples. Memory is bounded by the distinct
(query, target) pairs and impressions with a click, never by the rows: each file is streamed twice (clicks
first, then skips), and its aggregate is what later stages read (cached by the file's content hash in the
feedback asset, so yesterday's files cost nothing tonight).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from resources.prompts import normalise_query

SIGNALS = ("cited", "clicked", "thumbs_up", "thumbs_down", "shown", "judged")
POSITIVE_SIGNALS = ("cited", "clicked", "thumbs_up")
TARGET_FIELDS = ("doc_id", "chunk_id", "passage")
LOG_SUFFIXES = (".jsonl", ".parquet")
READER_VERSION = "feedback-reader-v1"   # part of the per-file cache key: bump when the aggregate changes
MAX_ROW_BYTES = 1_000_000               # a log row over 1 MB is not an interaction: skipped, never held whole
MAX_EXAMPLES = 5

# One row per (query, target) of one file: what the file said about the pair, before any weighting.
AGGREGATE_COLUMNS = ["norm", "text", "query_id", "target_kind", "target", "cited", "clicked", "thumbs_up",
                     "thumbs_down", "shown", "skipped_above", "max_grade", "n_interactions", "source"]
DAILY_COLUMNS = ["norm", "date", "n", "sessions"]


@dataclass(frozen=True)
class SignalWeights:
    cited: int = 3            # the answer used the passage: the strongest implicit signal
    clicked: int = 2          # opened it: relevant enough to train on, weaker than a citation
    thumbs_up: int = 2
    relevant_grade: int = 2   # grade >= this is a positive (the labels stage's threshold)
    skip_above_negatives: bool = True   # False: shown results are never negatives


@dataclass
class LogReport:
    """Rows read and skipped, by reason, with a few examples each."""

    rows: int = 0
    files: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, example: str, n: int = 1) -> None:
        self.skipped[reason] += n
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example[:200])

    def merge(self, other: "LogReport") -> None:
        self.rows += other.rows
        self.files += other.files
        for reason, n in other.skipped.items():
            self.skipped[reason] += n
            for ex in other.examples.get(reason, []):
                if len(self.examples.setdefault(reason, [])) < MAX_EXAMPLES:
                    self.examples[reason].append(ex)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "files": self.files, "skipped": dict(self.skipped), "examples": self.examples}


def log_files(path: str | Path) -> list[Path]:
    """The log files under `path` (a file, or a folder read recursively in sorted order)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"feedback log {path} does not exist: point --feedback (or FLYWHEEL_FEEDBACK) at a "
                         ".jsonl/.parquet file or a folder of them")
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOG_SUFFIXES)


def _iter_records(path: Path, report: LogReport):
    """(where, record) for each row of a .jsonl or .parquet file; unreadable rows are counted, not raised."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as f:
            lineno = 0
            while line := f.readline(MAX_ROW_BYTES + 1):
                lineno += 1
                where = f"{path.name}:{lineno}"
                if len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):
                    report.skip("too_large", where)
                    while line and not line.endswith(b"\n"):
                        line = f.readline(1 << 20)
                    continue
                if not line.strip():
                    continue
                try:
                    yield where, json.loads(line.decode("utf-8-sig" if lineno == 1 else "utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    report.skip("bad_json", where)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
            n = 0
            for batch in pf.iter_batches(batch_size=10_000):
                for record in batch.to_pylist():
                    n += 1
                    yield f"{path.name}:row {n}", record
        except Exception as e:   # pyarrow raises several types for a corrupt file
            report.skip("unreadable_file", f"{path.name}: {type(e).__name__}: {e}")
    else:
        report.skip("unsupported_file", path.name)


@dataclass(frozen=True)
class Interaction:
    norm: str
    text: str
    query_id: str | None
    target_kind: str
    target: str
    signal: str
    grade: int | None
    rank: int | None
    impression: str
    date: str | None
    session: str | None


def _parse_time(value) -> tuple[str | None, bool]:
    """(YYYY-MM-DD in UTC or None, ok)."""
    if value is None or value == "":
        return None, True
    try:
        if isinstance(value, (int, float)):
            ts = datetime.fromtimestamp(float(value), tz=timezone.utc)
        elif isinstance(value, datetime):
            ts = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        else:
            ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
        return ts.astimezone(timezone.utc).date().isoformat(), True
    except (ValueError, OverflowError, OSError):
        return None, False


def parse_interaction(record, where: str, report: LogReport) -> Interaction | None:
    """One log row checked and normalised, or None (counted under its reason)."""
    if not isinstance(record, dict):
        report.skip("not_an_object", where)
        return None
    query = record.get("query")
    if not isinstance(query, str) or not normalise_query(query):
        report.skip("empty_query", where)
        return None
    target_kind = next((f for f in TARGET_FIELDS if isinstance(record.get(f), (str, int)) and
                        str(record[f]).strip()), None)
    if target_kind is None:
        report.skip("no_target", where)
        return None
    signal = record.get("signal")
    if signal not in SIGNALS:
        report.skip("unknown_signal", f"{where}: {signal!r}")
        return None
    grade = record.get("grade")
    if grade is not None or signal == "judged":
        if isinstance(grade, bool) or not isinstance(grade, (int, float)) or grade != int(grade) \
                or not 0 <= grade <= 3:
            report.skip("bad_grade", f"{where}: {grade!r}")
            return None
        grade = int(grade)
    rank = record.get("rank")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, (int, float)) or rank != int(rank) or rank < 0:
            report.skip("bad_rank", f"{where}: {rank!r}")
            return None
        rank = int(rank)
    date, ok = _parse_time(record.get("timestamp"))
    if not ok:
        report.skip("bad_timestamp", f"{where}: {record.get('timestamp')!r}")
    session = record.get("session_id")
    session = str(session) if session not in (None, "") else None
    norm = normalise_query(query)
    query_id = record.get("query_id")
    return Interaction(norm=norm, text=" ".join(query.split()), query_id=str(query_id) if query_id not in (None, "")
                       else None, target_kind=target_kind, target=str(record[target_kind]).strip(), signal=signal,
                       grade=grade, rank=rank, impression=f"{norm}\0{session or ''}", date=date, session=session)


def aggregate_file(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, LogReport]:
    """One file's (pairs, daily counts, report): AGGREGATE_COLUMNS per (query, target), DAILY_COLUMNS per
    (query, date). Two streaming passes: the last click of each impression, then everything else."""
    report = LogReport(files=1)
    last_click: dict[str, int] = {}
    scratch = LogReport()   # pass 1 only looks for clicks; its skips are counted in pass 2
    for where, record in _iter_records(path, scratch):
        it = parse_interaction(record, where, LogReport())
        if it and it.rank is not None and it.signal in ("cited", "clicked"):
            last_click[it.impression] = max(last_click.get(it.impression, -1), it.rank)
    pairs: dict[tuple[str, str, str], dict] = {}
    daily: dict[tuple[str, str], list] = {}
    for where, record in _iter_records(path, report):
        it = parse_interaction(record, where, report)
        if it is None:
            continue
        report.rows += 1
        p = pairs.get((it.norm, it.target_kind, it.target))
        if p is None:
            p = pairs[(it.norm, it.target_kind, it.target)] = {
                "norm": it.norm, "text": it.text, "query_id": it.query_id, "target_kind": it.target_kind,
                "target": it.target, **{s: 0 for s in ("cited", "clicked", "thumbs_up", "thumbs_down", "shown",
                                                        "skipped_above")}, "max_grade": -1, "n_interactions": 0,
                "source": "log"}
        p["n_interactions"] += 1
        if it.signal != "judged":
            p[it.signal] += 1
        if it.grade is not None:
            p["max_grade"] = max(p["max_grade"], it.grade)
        if it.signal == "shown" and it.rank is not None and it.rank < last_click.get(it.impression, -1):
            p["skipped_above"] += 1
        d = daily.setdefault((it.norm, it.date or ""), [0, set()])
        d[0] += 1
        if it.session:
            d[1].add(it.session)
    agg = pd.DataFrame(list(pairs.values()), columns=AGGREGATE_COLUMNS)
    days = pd.DataFrame([{"norm": n, "date": day, "n": c, "sessions": len(s)} for (n, day), (c, s) in daily.items()],
                        columns=DAILY_COLUMNS)
    return agg, days, report


def combine(aggregates: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-file aggregates summed into one row per (query, target); the first text and query_id seen kept."""
    if not aggregates or all(a.empty for a in aggregates):
        return pd.DataFrame(columns=AGGREGATE_COLUMNS)
    df = pd.concat([a for a in aggregates if not a.empty], ignore_index=True)
    counts = ["cited", "clicked", "thumbs_up", "thumbs_down", "shown", "skipped_above", "n_interactions"]
    out = df.groupby(["norm", "target_kind", "target"], sort=True).agg(
        text=("text", "first"), query_id=("query_id", "first"), max_grade=("max_grade", "max"),
        source=("source", lambda s: "+".join(sorted(set(s)))), **{c: (c, "sum") for c in counts}).reset_index()
    return out[AGGREGATE_COLUMNS]


def combine_daily(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=DAILY_COLUMNS)
    return pd.concat(frames, ignore_index=True).groupby(["norm", "date"], sort=True)[["n", "sessions"]].sum() \
        .reset_index()[DAILY_COLUMNS]


def pair_grade(row, weights: SignalWeights) -> tuple[int | None, bool]:
    """(grade or None for no label, weak) of one aggregated pair, by the rules in the module docstring."""
    if row["max_grade"] >= 0:
        return int(row["max_grade"]), False
    if row["cited"]:
        return weights.cited, False
    if row["thumbs_down"] and row["thumbs_down"] >= row["thumbs_up"]:
        return 0, False
    positive = [w for s, w in (("clicked", weights.clicked), ("thumbs_up", weights.thumbs_up)) if row[s]]
    if positive:
        return max(positive), False
    if row["skipped_above"] and weights.skip_above_negatives:
        return 0, True
    return None, False


def label_of(grade: int, relevant_grade: int) -> str:
    return "positive" if grade >= relevant_grade else "negative" if grade == 0 else "neutral"
