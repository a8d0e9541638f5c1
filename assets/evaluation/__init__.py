"""Evaluation: every retriever, before and after fine-tuning, on the synthetic test split and on every
human-labelled query set the corpus brought.

Retrievers: BM25, dense and hybrid on the base model; dense and hybrid on the fine-tuned model. Synthetic
queries are scored at chunk level (their positives are chunks). Human qrels judge documents, so chunk
rankings are turned into document rankings by each document's best chunk (MaxP, Dai & Callan 2019).
The report is written to <home>/reports/evaluation.json (a public interface, see README) and
evaluation.md, with per-query scores in per_query.parquet so any comparison can be recomputed.
"""

import json
import time
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from assets.evaluation.metrics import METRIC_NAMES, aggregate_to_documents, mean_metrics, per_query_metrics
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

TABLE_METRICS = ["ndcg@10", "mrr@10", "recall@10", "recall@100", "accuracy@1", "accuracy@3"]
DEPTH = 100            # documents (or chunks) scored per query: recall@100 needs 100
CHUNK_DEPTH = 300      # chunks fetched for a document ranking: several chunks of one document collapse into one


class EvaluationConfig(dg.Config):
    log_to_mlflow: bool = True


def retrieve_all(index, retriever: str, texts: list[str], vectors, k: int) -> list[list[tuple[str, float]]]:
    return [index.search(retriever, t, v, k) for t, v in zip(texts, vectors)]


def evaluate_query_set(name: str, kind: str, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                       systems: dict[str, tuple], encode, chunk_to_doc: dict[str, str] | None):
    """Metrics of every system on one query set. systems: name -> (index, retriever, model path or None).

    chunk_to_doc None: qrels judge chunks. Otherwise rankings are collapsed to documents first.
    """
    qids = [q for q in qrels if q in queries]
    texts = [queries[q] for q in qids]
    vectors_by_model: dict = {}
    result, per_query, latency = {}, [], {}
    for system, (index, retriever, model_path) in systems.items():
        if retriever == "bm25":
            vectors = [None] * len(texts)
        else:
            if model_path not in vectors_by_model:
                vectors_by_model[model_path] = encode(texts, model_path)
            vectors = vectors_by_model[model_path]
        t0 = time.perf_counter()
        hits = retrieve_all(index, retriever, texts, vectors, CHUNK_DEPTH if chunk_to_doc else DEPTH)
        latency[system] = 1000 * (time.perf_counter() - t0) / max(1, len(texts))
        if chunk_to_doc:
            ranking = {q: aggregate_to_documents(h, chunk_to_doc)[:DEPTH] for q, h in zip(qids, hits)}
        else:
            ranking = {q: [c for c, _ in h][:DEPTH] for q, h in zip(qids, hits)}
        pq = per_query_metrics(ranking, {q: qrels[q] for q in qids})
        result[system] = {m: round(float(v), 6) for m, v in mean_metrics(pq).items() if m in METRIC_NAMES}
        result[system]["search_ms_per_query"] = round(latency[system], 3)
        pq.insert(0, "retriever", system)
        pq.insert(0, "query_set", name)
        per_query.append(pq)
    return {"kind": kind, "n_queries": len(qids), "retrievers": result}, pd.concat(per_query, ignore_index=True)


def report_markdown(report: dict) -> str:
    lines = ["| query set | kind | n | retriever | " + " | ".join(TABLE_METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(TABLE_METRICS)]
    for set_name, qs in report["query_sets"].items():
        for system, metrics in qs["retrievers"].items():
            lines.append(f"| {set_name} | {qs['kind']} | {qs['n_queries']} | {system} | "
                         + " | ".join(f"{metrics[m]:.3f}" for m in TABLE_METRICS) + " |")
    return "\n".join(lines)


@dg.asset(group_name="evaluation", compute_kind="python", pool="gpu", op_tags=compute_tags("gpu"))
def evaluation_report(context: dg.AssetExecutionContext, chunks: pd.DataFrame, query_splits: pd.DataFrame,
                      human_queries: list, baseline_index: dict, finetuned_index: dict, finetuned_biencoder: dict,
                      embedder: EmbedderResource, lancedb: LanceDBResource, workspace: WorkspaceResource,
                      mlflow: MLflowResource, config: EvaluationConfig) -> dg.Output[dict]:
    """Retrieval quality of every retriever, before and after fine-tuning, on synthetic and human queries."""
    base = lancedb.open(baseline_index["table"])
    tuned = lancedb.open(finetuned_index["table"])
    ft_path = finetuned_biencoder["model_path"]
    systems = {"bm25": (base, "bm25", None), "dense_base": (base, "dense", None),
               "hybrid_base": (base, "hybrid", None), "dense_finetuned": (tuned, "dense", ft_path),
               "hybrid_finetuned": (tuned, "hybrid", ft_path)}
    encode = lambda texts, path: embedder.encode(texts, path)  # noqa: E731
    test = query_splits[query_splits["split"] == "test"]
    sets = {"synthetic/test": ("synthetic", dict(zip(test["query_id"], test["text"])),
                               {r.query_id: {c: 1 for c in r.positives} for r in test.itertuples(index=False)}, None)}
    chunk_to_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    for hs in human_queries:
        sets[f"human/{hs.name}"] = ("human", hs.queries, hs.qrels, chunk_to_doc)
    report = {"query_sets": {}, "generated_at": datetime.now(timezone.utc).isoformat(),
              "corpus": chunks.attrs.get("corpus_name", "corpus"), "corpus_hash": chunks.attrs.get("corpus_hash", ""),
              "model": {k: finetuned_biencoder.get(k) for k in ("model_path", "mlflow_run_id", "model_version",
                                                                "base_model")}}
    per_query = []
    for set_name, (kind, queries, qrels, c2d) in sets.items():
        entry, pq = evaluate_query_set(set_name, kind, queries, qrels, systems, encode, c2d)
        report["query_sets"][set_name] = entry
        per_query.append(pq)
        context.log.info(f"evaluated {set_name}: {entry['n_queries']} queries")
    table = report_markdown(report)
    reports = workspace.reports_dir
    (reports / "evaluation.json").write_text(json.dumps(report, indent=2))
    (reports / "evaluation.md").write_text(f"# Evaluation: {report['corpus']}\n\n{table}\n")
    pd.concat(per_query, ignore_index=True).to_parquet(reports / "per_query.parquet", index=False)
    if config.log_to_mlflow and finetuned_biencoder.get("mlflow_run_id"):
        metrics = {f"{s.replace('/', '.')}.{r}.{m.replace('@', '_at_')}": v
                   for s, qs in report["query_sets"].items()
                   for r, ms in qs["retrievers"].items() for m, v in ms.items() if m in METRIC_NAMES}
        mlflow.log_to_run(finetuned_biencoder["mlflow_run_id"], metrics,
                          [str(reports / "evaluation.json"), str(reports / "evaluation.md")])
    flat = {f"{s}/{r}/ndcg@10": dg.MetadataValue.float(ms["ndcg@10"])
            for s, qs in report["query_sets"].items() for r, ms in qs["retrievers"].items()}
    return dg.Output(report, metadata={"report": dg.MetadataValue.md(table),
                                       "report_path": str(reports / "evaluation.json"),
                                       "n_query_sets": len(sets), **flat,
                                       "mlflow_run": dg.MetadataValue.url(finetuned_biencoder.get("mlflow_run_url") or "")})
