"""When to retrain: only when enough of the data changed since the model in use was trained.

A nightly run on a corpus where 0.3% of the documents changed would otherwise pay a full training run,
register a new model version and re-embed every chunk with it, for a model that cannot be meaningfully
different. After each training the asset writes a record (`<home>/models/biencoder/last_trained.json`: the
output it returned, a fingerprint of the training settings and base model, and the chunk ids and training
query ids it saw). The next run compares against it:

- no record, or the recorded model folder is gone           -> train
- the settings, base model or registered model name changed -> train
- changed = max(share of chunks new or removed, share of training queries new or removed) < threshold
                                                            -> skip: the recorded model is reused, the reason
                                                               is in the asset's metadata and run_stats.json
- otherwise                                                 -> train

`min_change_to_retrain = 0` trains on every run (the behaviour before this rule existed).

The rule is the pure `decide_retrain`; `retrain_or_reuse` wires it into a training asset (the bi-encoder and
the cross-encoder reranker both use it).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    changed_fraction: float   # 1.0 when there is nothing to compare with


def settings_fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_fraction(previous: Iterable[str], current: Iterable[str]) -> float:
    """(new + removed) / size of the previous set: 0.0 when equal; 1.0 when the previous set is empty."""
    prev, now = set(previous), set(current)
    if not prev:
        return 1.0 if now else 0.0
    return len(prev ^ now) / len(prev)


def decide_retrain(record: dict | None, chunk_ids: Iterable[str], query_ids: Iterable[str], fingerprint: str,
                   threshold: float) -> RetrainDecision:
    if record is None:
        return RetrainDecision(True, "no earlier model: first training", 1.0)
    model_path = record.get("value", {}).get("model_path", "")
    if not model_path or not Path(model_path).exists():
        return RetrainDecision(True, f"the earlier model folder {model_path!r} is gone", 1.0)
    if record.get("fingerprint") != fingerprint:
        return RetrainDecision(True, "the training settings, the base model or the registered model name changed", 1.0)
    chunks = changed_fraction(record.get("chunk_ids", []), chunk_ids)
    queries = changed_fraction(record.get("query_ids", []), query_ids)
    changed = max(chunks, queries)
    what = f"{chunks:.1%} of chunks and {queries:.1%} of training queries changed since the last training"
    if threshold <= 0:
        return RetrainDecision(True, f"{what}; min_change_to_retrain=0 retrains on every run", changed)
    if changed < threshold:
        return RetrainDecision(False, f"skipped: only {what}, below min_change_to_retrain={threshold:.1%}; "
                                      f"reusing the model of MLflow run {record['value'].get('mlflow_run_id')}",
                               changed)
    return RetrainDecision(True, f"{what} (>= min_change_to_retrain={threshold:.1%})", changed)


def load_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_record(path: Path, value: dict, chunk_ids: Iterable[str], query_ids: Iterable[str], fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"value": value, "fingerprint": fingerprint, "trained_at": time.time(),
                               "chunk_ids": sorted(set(chunk_ids)), "query_ids": sorted(set(query_ids))}))
    tmp.replace(path)


def retrain_or_reuse(context, record_path: Path, settings: dict, chunk_ids: list[str], query_ids: list[str],
                     threshold: float, train):
    """`train()` (a dg.Output whose value has `model_path`) when enough changed since the recorded training, else
    the recorded output; either way the output and its metadata say which, and why."""
    import dagster as dg

    fingerprint = settings_fingerprint(settings)
    record = load_record(record_path)
    decision = decide_retrain(record, chunk_ids, query_ids, fingerprint, threshold)
    context.log.info(f"{context.asset_key.to_user_string()}: {decision.reason}")
    said = {"retrained": decision.retrain, "retrain_reason": decision.reason,
            "changed_fraction": round(decision.changed_fraction, 4)}
    if not decision.retrain:
        value = {**record["value"], "retrained": False, "retrain_reason": decision.reason}
        return dg.Output(value, metadata={**said, "mlflow_run": dg.MetadataValue.url(value.get("mlflow_run_url") or ""),
                                          "mlflow_run_id": str(value.get("mlflow_run_id")),
                                          "model_path": value["model_path"]})
    out = train()
    value = {**out.value, "retrained": True, "retrain_reason": decision.reason}
    save_record(record_path, value, chunk_ids, query_ids, fingerprint)
    return dg.Output(value, metadata={**said, **out.metadata})
