"""The judge, measured: for every human-labelled query set the corpus brought, the LLM judge grades each
query's top hybrid candidates (and a few human-relevant documents it missed), and its agreement with the
human labels is reported (assets/labels/agreement.py). Unjudged documents count as not relevant, as in TREC.

A judge whose AUC is near 0.5 on a corpus is noise there: its labels should not be trusted, and the report
says so before anyone reads the fine-tuning results.
"""

import json

import dagster as dg
import pandas as pd

from assets.common import progress_logger, stable_sample
from assets.evaluation.metrics import aggregate_to_documents
from assets.labels.agreement import agreement, agreement_markdown
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.llm import JudgeRequest, LLMResource, check_failure_share
from resources.workspace import WorkspaceResource


class JudgeAgreementConfig(dg.Config):
    max_queries: int = 60        # per query set: 60 x ~13 pairs = ~800 judge calls, ~2 min locally, cached
    depth: int = 10              # top hybrid documents judged per query: the pairs a label stage would see
    missed_relevant: int = 3     # plus up to this many human-relevant documents outside the top `depth`
    seed: int = 0


def candidate_pairs(queries: dict[str, str], qrels: dict[str, dict[str, int]], hits: dict[str, list[tuple[str, float]]],
                    chunk_to_doc: dict[str, str], first_chunk: dict[str, str], depth: int,
                    missed_relevant: int) -> list[dict]:
    """(query, document, passage chunk, human label) rows: each top document with its best chunk as the passage,
    then human-relevant documents the first stage missed, with their first chunk."""
    rows = []
    for qid, chunk_hits in hits.items():
        rel = qrels.get(qid, {})
        best_chunk: dict[str, str] = {}
        for chunk_id, _ in chunk_hits:
            best_chunk.setdefault(chunk_to_doc[chunk_id], chunk_id)
        docs = aggregate_to_documents(chunk_hits, chunk_to_doc)[:depth]
        missed = [d for d in sorted(rel, key=lambda d: -rel[d]) if rel[d] > 0 and d not in docs and d in first_chunk]
        for doc in docs + missed[:missed_relevant]:
            rows.append({"query_id": qid, "query": queries[qid], "doc_id": doc,
                         "chunk_id": best_chunk.get(doc, first_chunk.get(doc)), "human_grade": int(rel.get(doc, 0))})
    return rows


@dg.asset(group_name="labels", compute_kind="llm", pool="llm", op_tags=compute_tags("llm"))
def judge_agreement(context: dg.AssetExecutionContext, human_queries: list, chunks: pd.DataFrame,
                    baseline_index: dict, llm: LLMResource, embedder: EmbedderResource, lancedb: LanceDBResource,
                    workspace: WorkspaceResource, config: JudgeAgreementConfig) -> dg.Output[dict]:
    """Agreement of the LLM judge with the human labels on each human query set: AUC, precision, kappa."""
    index = lancedb.open(baseline_index["table"])
    chunk_to_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    chunk_text = dict(zip(chunks["chunk_id"], chunks["text"]))
    first_chunk = chunks.drop_duplicates("doc_id").set_index("doc_id")["chunk_id"].to_dict()
    result, frames = {}, []
    for hs in human_queries:
        qids = pd.DataFrame({"query_id": [q for q in hs.qrels if q in hs.queries]})
        qids = stable_sample(qids, "query_id", config.max_queries, config.seed)["query_id"].tolist()
        vectors = embedder.encode([hs.queries[q] for q in qids])
        hits = {q: index.hybrid(hs.queries[q], v, 10 * config.depth) for q, v in zip(qids, vectors)}
        rows = candidate_pairs(hs.queries, hs.qrels, hits, chunk_to_doc, first_chunk, config.depth,
                               config.missed_relevant)
        requests = [JudgeRequest(query=r["query"], chunk_id=r["chunk_id"], passage=chunk_text[r["chunk_id"]])
                    for r in rows]
        context.log.info(f"judge_agreement {hs.name}: {len(requests)} judge calls ({len(qids)} queries)")
        judgments, stats = llm.judge(requests, progress=progress_logger(context, f"judge_agreement {hs.name}"))
        check_failure_share(stats, f"judge_agreement {hs.name}", llm.max_failure_share)
        by_pair = {(j.query, j.chunk_id): j for j in judgments}
        df = pd.DataFrame(rows)
        df["score"] = [getattr(by_pair.get((r["query"], r["chunk_id"])), "score", None) for r in rows]
        df["judge_grade"] = [getattr(by_pair.get((r["query"], r["chunk_id"])), "grade", None) for r in rows]
        df = df.dropna(subset=["score"])   # pairs the judge could not grade: left out, and counted
        df["human"] = df["human_grade"] > 0
        df.insert(0, "query_set", hs.name)
        result[hs.name] = {**agreement(df, config.seed), "pairs_dropped": len(rows) - len(df), "judge": llm.model_id(),
                           "llm_calls": stats.calls, "llm_cache_hits": stats.cache_hits, "judge_failures": stats.lost}
        frames.append(df)
    llm.release()   # the weights leave memory before the next stage
    table = agreement_markdown(result)
    out = workspace.reports_dir
    (out / "judge_agreement.json").write_text(json.dumps(result, indent=2))
    if frames:
        pd.concat(frames, ignore_index=True).to_parquet(out / "judge_pairs.parquet", index=False)
    return dg.Output(result, metadata={
        "agreement": dg.MetadataValue.md(table),
        "judge": llm.model_id(),
        "query_sets": len(result),
        "llm_calls": sum(r["llm_calls"] for r in result.values()),          # counted in run_stats.json
        "llm_cache_hits": sum(r["llm_cache_hits"] for r in result.values()),
        "judge_pairs_dropped": sum(r["pairs_dropped"] for r in result.values()),  # failed or unreadable judge calls
        **{f"{name}/roc_auc": dg.MetadataValue.float(r["roc_auc"] if r["roc_auc"] is not None else float("nan"))
           for name, r in result.items()},
        **{f"{name}/kappa": dg.MetadataValue.float(r["kappa"] if r["kappa"] is not None else float("nan"))
           for name, r in result.items()},
        "report_path": str(out / "judge_agreement.json"),
    })
