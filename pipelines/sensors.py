"""`corpus_sensor`: notices new, changed or deleted documents in the corpus (and files of the feedback log,
FLYWHEEL_FEEDBACK, listed under "feedback:") and requests an incremental run.

Each tick lists the corpus (FLYWHEEL_CORPUS: a folder, or a .jsonl/.parquet file) as {relative path: size and
modification time}, cheap even for 100k files since no file is read. The cursor is a digest of that listing;
the listing itself is kept in `<home>/state/corpus_snapshot.json` so the run request can say what changed.
The first tick only records the listing. A change requests one run of flywheel_job (run_key = the digest, so
the same state never runs twice); that run pays only for what changed, and retrains only past the threshold.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from pipelines.schedules import AutomationSettings


@dataclass(frozen=True)
class CorpusChange:
    added: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> str:
        return f"{len(self.added)} new, {len(self.changed)} changed, {len(self.removed)} deleted files"


def corpus_snapshot(path: Path) -> dict[str, str]:
    """{path relative to the corpus: "size:mtime_ns"} for every file (hidden files and folders skipped)."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return {path.name: f"{st.st_size}:{st.st_mtime_ns}"}
    snap = {}
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            full = Path(root) / name
            try:
                st = full.stat()
            except OSError:
                continue          # deleted while listing: the next tick sees it gone
            snap[full.relative_to(path).as_posix()] = f"{st.st_size}:{st.st_mtime_ns}"
    return snap


def snapshot_digest(snapshot: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:24]


def corpus_diff(old: dict[str, str], new: dict[str, str]) -> CorpusChange:
    return CorpusChange(added=sorted(set(new) - set(old)), removed=sorted(set(old) - set(new)),
                        changed=sorted(k for k in set(old) & set(new) if old[k] != new[k]))


def corpus_sensor(job, settings: AutomationSettings, home: Path) -> dg.SensorDefinition:
    state_file = Path(home) / "state" / "corpus_snapshot.json"

    @dg.sensor(name="corpus_sensor", job=job, minimum_interval_seconds=settings.sensor_interval_s,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Requests an incremental run when documents in FLYWHEEL_CORPUS are added, changed or deleted.")
    def _sensor(context: dg.SensorEvaluationContext):
        if not settings.corpus:
            return dg.SkipReason("FLYWHEEL_CORPUS is not set: set it to the corpus folder or file to watch")
        corpus = Path(settings.corpus)
        if not corpus.exists():
            return dg.SkipReason(f"corpus {corpus} does not exist (FLYWHEEL_CORPUS)")
        snapshot = corpus_snapshot(corpus)
        if settings.feedback and Path(settings.feedback).exists():   # a new day of the log is a change too
            snapshot.update({f"feedback:{k}": v for k, v in corpus_snapshot(Path(settings.feedback)).items()})
        digest = snapshot_digest(snapshot)
        if context.cursor == digest:
            return dg.SkipReason(f"no change in {len(snapshot)} files")
        previous = json.loads(state_file.read_text()) if state_file.exists() else None
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(snapshot))
        first_look = context.cursor is None
        context.update_cursor(digest)
        if first_look:
            return dg.SkipReason(f"first look at {corpus}: recorded {len(snapshot)} files; a change requests a run")
        change = corpus_diff(previous, snapshot) if previous is not None else None   # None: the state file was lost
        summary = change.summary() if change else "changed files (the earlier listing is gone)"
        context.log.info(f"corpus_sensor: {summary} in {corpus}")
        counts = {f"flywheel/files_{k}": str(len(getattr(change, k))) for k in ("added", "changed", "removed")} if change else {}
        return dg.RunRequest(run_key=digest, run_config=settings.run_config(),
                             tags={"flywheel/trigger": "corpus_sensor", **counts})

    return _sensor
