"""Evaluation: every retriever, before and after fine-tuning, on the synthetic test split and on every
human-labelled query set the corpus brought.

Retrievers: BM25, dense and hybrid on the base model; dense and hybrid on the fine-tuned model (and on the
distilled one, when distillation is on; the report then says which training did better); dense and hybrid on
the base model's table with the query adapter applied to the query vectors (`dense_adapter`, `hybrid_adapter`:
the same fusion as `hybrid_base` with the adapted dense side; absent when the adapter is off); BM25 and hybrid
on the doc2query-expanded base table (`bm25_expanded`, `hybrid_expanded`: assets/indices/expansion.py) and the
hybrid with the fusion tuned on the synthetic validation split (`hybrid_learned`: fusion.py). Synthetic
queries are scored at chunk level (their positives are chunks). Human qrels judge documents, so chunk
rankings are turned into document rankings by each document's best chunk (MaxP, Dai & Callan 2019).
Reranking rows ("<first stage>+rerank_finetuned", "<first stage>+rerank_offtheshelf") reorder a first
stage's top `rerank_depth` chunks with the fine-tuned cross-encoder or an off-the-shelf reranker (the local
LLM's query likelihood offline, any cross-encoder online), with the reranking latency per query beside them.
Every retriever is compared with its baseline on the same queries (comparisons.py: delta nDCG@10, a paired
bootstrap 95% interval, a sign-flip p-value), each query set is broken down by query style and document
length (breakdown.py), and drawn as a before/after chart (plots.py). The `chunker_baselines` asset (chunkers.py)
scores other chunkers of the corpus on the human queries against the shipped one; the report carries its section.
The report is written to <home>/reports/evaluation.json (a public interface, see README) and
evaluation.md, with per-query scores in per_query.parquet so any comparison can be recomputed, and the
charts in reports/plots/.
"""

import json
import time
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from assets.common import image, md_text
from assets.corpus import corpus_report_lines
from assets.evaluation.chunkers import chunker_baselines, chunkers_markdown  # noqa: F401  (chunker_baselines: an asset)
from assets.evaluation.breakdown import breakdown, breakdowns_markdown, feedback_markdown, query_attributes
from assets.evaluation.comparisons import (add_comparisons, comparison_metrics, comparisons_markdown, reranker_verdict,
                                         reranker_verdict_markdown)
from assets.evaluation.fusion import fusion_markdown, fusion_weights, learned_fusion_systems  # noqa: F401 (an asset)
from assets.evaluation.metrics import METRIC_NAMES, mean_metrics
from assets.evaluation.plots import report_charts
from assets.evaluation.rerank import (CrossEncoderReranker, LLMReranker, latency_summary, rerank,
                                      score_candidates, unscored_pairs)
from assets.evaluation.scoring import QuerySet, build_query_sets, score_hits
from assets.indices.expansion import expansion_markdown, expansion_systems
from assets.indices.summaries import summaries_markdown, summary_systems, with_summary_rows
from assets.labels.agreement import agreement_markdown
from assets.training.adapter import QueryAdapter, load_adapter
from assets.training.crossencoder import load_reranker
from assets.triplets import feedback_documents
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.llm import LLMResource
from resources.tracking import MLflowResource
from resources.workspace import WorkspaceResource

TABLE_METRICS = ["ndcg@10", "mrr@10", "recall@10", "recall@100", "accuracy@1", "accuracy@3"]


FIRST_STAGES = ["bm25", "dense_base", "hybrid_base", "dense_finetuned", "hybrid_finetuned"]
ADAPTER = "query_adapter"   # the systems' encoder key of the adapter rows: the base model + the adapter


class EvaluationConfig(dg.Config):
    log_to_mlflow: bool = True
    rerank_depth: int = 20                      # first-stage hits a reranker reorders per query
    rerank_first_stages: list[str] = FIRST_STAGES   # reranked by the fine-tuned cross-encoder (~10 ms a pair on CPU)
    offtheshelf_reranker: str = "upr"           # "upr": the LLM's query likelihood; a hub/local cross-encoder; "" none
    offtheshelf_first_stages: list[str] = ["hybrid_finetuned"]   # UPR costs ~0.15 s a pair on 2 CPU cores: the
    #   shipped first stage only by default (20 pairs x 300 queries = 15 min); scores are cached for reruns
    offtheshelf_query_kinds: list[str] = ["synthetic", "human"]  # ["human"]: spend the zero-shot reranker's
    #   cost only where the answer matters most
    bootstrap_resamples: int = 10_000   # bootstrap and sign-flip resamples per comparison: the 2.5th percentile
    #   then moves by ~1% of the interval between seeds; ~0.1 s a comparison at 300 queries
    seed: int = 0                       # the resamples' seed: the same report every run on the same scores


def build_rerankers(config: EvaluationConfig, finetuned_crossencoder: dict, llm: LLMResource, device: str) -> list:
    """(row suffix, reranker, first stages) for the fine-tuned cross-encoder and the off-the-shelf reranker."""
    out = []
    if finetuned_crossencoder.get("model_path"):
        model = load_reranker(finetuned_crossencoder["model_path"], device, finetuned_crossencoder.get("max_length", 256))
        out.append(("rerank_finetuned", CrossEncoderReranker(model, name="finetuned cross-encoder"),
                    config.rerank_first_stages))
    if config.offtheshelf_reranker == "upr":
        out.append(("rerank_offtheshelf", LLMReranker(llm, name=f"upr:{llm.model_id()}"),
                    config.offtheshelf_first_stages))
    elif config.offtheshelf_reranker:
        out.append(("rerank_offtheshelf", CrossEncoderReranker(load_reranker(config.offtheshelf_reranker, device),
                                                               name=config.offtheshelf_reranker),
                    config.offtheshelf_first_stages))
    return out


def adapter_systems(query_adapter: dict, base_index) -> dict[str, tuple]:
    """The adapter's rows over the base model's table (the vectors it was trained over); none when it is off."""
    if not query_adapter.get("enabled"):
        return {}
    return {"dense_adapter": (base_index, "dense", ADAPTER), "hybrid_adapter": (base_index, "hybrid", ADAPTER)}


def make_encoder(embedder: EmbedderResource, query_adapter: dict):
    """encode(texts, key): the model at `key` (a path; None = the base model), or the adapter for key ADAPTER."""
    adapter = (QueryAdapter(load_adapter(query_adapter["weights_path"]), lambda texts: embedder.encode(texts, None))
               if query_adapter.get("enabled") else None)

    def encode(texts: list[str], key: str | None):
        return adapter.adapt_queries(texts) if key == ADAPTER else embedder.encode(texts, key)

    return encode


def not_trained(*outputs: dict) -> list[str]:
    """The reasons training assets gave for training nothing (a provider's embeddings cannot be fine-tuned)."""
    return [o["skipped"] for o in outputs if o.get("enabled") is False and o.get("skipped")]


def retrieve_all(index, retriever: str, texts: list[str], vectors, k: int) -> list[list[tuple[str, float]]]:
    return [index.search(retriever, t, v, k) for t, v in zip(texts, vectors)]


def evaluate_query_set(query_set: QuerySet, systems: dict[str, tuple], encode, rerankers: list[tuple] = (),
                       chunk_text: dict[str, str] | None = None, rerank_depth: int = 20):
    """Metrics of every system on one query set. systems: name -> (index, retriever, encoder key: a model path,
    None for the base model, or ADAPTER; `encode(texts, key)` turns the queries into vectors).
    rerankers: (suffix, reranker, first stages) -> a "<first stage>+<suffix>" row for each first stage."""
    qids = query_set.qids
    texts = [query_set.queries[q] for q in qids]
    vectors_by_model: dict = {}
    result, per_query, hits_by_system = {}, [], {}

    def score(system: str, hits: list[list[tuple[str, float]]], extra: dict) -> None:
        pq = score_hits(query_set, hits)
        result[system] = {m: round(float(v), 6) for m, v in mean_metrics(pq).items() if m in METRIC_NAMES}
        result[system].update(extra)
        pq.insert(0, "retriever", system)
        pq.insert(0, "query_set", query_set.name)
        per_query.append(pq)

    for system, (index, retriever, model_path) in systems.items():
        if retriever == "bm25":
            vectors = [None] * len(texts)
        else:
            if model_path not in vectors_by_model:
                vectors_by_model[model_path] = encode(texts, model_path)
            vectors = vectors_by_model[model_path]
        t0 = time.perf_counter()
        hits = retrieve_all(index, retriever, texts, vectors, query_set.depth)
        ms = 1000 * (time.perf_counter() - t0) / max(1, len(texts))
        hits_by_system[system] = hits
        score(system, hits, {"search_ms_per_query": round(ms, 3)})
    for suffix, reranker, stages in rerankers:
        stages = [s for s in stages if s in hits_by_system]
        candidates = {q: list(dict.fromkeys(c for s in stages for c, _ in hits_by_system[s][i][:rerank_depth]))
                      for i, q in enumerate(qids)}
        pairs = score_candidates(reranker, qids, texts, candidates, chunk_text)
        for s in stages:
            reranked = [rerank(h, pairs.scores.get(q, {}), rerank_depth) for q, h in zip(qids, hits_by_system[s])]
            per_q = {q: min(rerank_depth, len(h)) for q, h in zip(qids, hits_by_system[s])}
            score(f"{s}+{suffix}", reranked, {"search_ms_per_query": result[s]["search_ms_per_query"],
                                             "rerank_depth": rerank_depth, **latency_summary(pairs.ms_per_pair, per_q),
                                             "rerank_failures": unscored_pairs(qids, hits_by_system[s], pairs.scores,
                                                                               rerank_depth)})
    return {"kind": query_set.kind, "n_queries": len(qids), "retrievers": result}, pd.concat(per_query, ignore_index=True)


def latency_cell(metrics: dict) -> str:
    cell = f"{metrics.get('search_ms_per_query', 0):.1f}"
    if metrics.get("rerank_ms_p50") is not None:
        cell += f"; {metrics['rerank_ms_p50']:.0f}/{metrics['rerank_ms_p95']:.0f}"
    elif "rerank_depth" in metrics:
        cell += "; cached, not timed"
    return cell


def metric_key(*parts: str) -> str:
    """An MLflow metric name: letters, digits and . _ - / only, so "+" and "@" are spelt out."""
    return ".".join(p.replace("/", ".").replace("+", ".").replace("@", "_at_") for p in parts)


def mlflow_metrics(report: dict) -> dict[str, float]:
    """Every metric and every comparison (delta, CI bounds, p) under names that are the same every run, so
    MLflow's compare view lines runs up: "<set>.<retriever>.<metric>"."""
    out = {}
    for set_name, qs in report["query_sets"].items():
        for retriever, ms in qs["retrievers"].items():
            numbers = {m: v for m, v in ms.items() if m in METRIC_NAMES} | comparison_metrics(ms)
            out.update({metric_key(set_name, retriever, m): v for m, v in numbers.items()})
    return out


def distillation_verdict(report: dict) -> dict:
    """Per query set (human sets first in importance): contrastive vs distilled dense nDCG@10, and the winner."""
    out = {}
    for name, qs in report["query_sets"].items():
        r = qs["retrievers"]
        if "dense_distilled" in r and "dense_finetuned" in r:
            a, b = r["dense_finetuned"]["ndcg@10"], r["dense_distilled"]["ndcg@10"]
            out[name] = {"kind": qs["kind"], "contrastive": a, "distilled": b,
                         "better": "distilled" if b > a else "contrastive" if a > b else "tie"}
    return out


def distillation_markdown(verdict: dict) -> str:
    if not verdict:
        return ""
    lines = ["", "## Distillation (margin-MSE from the cross-encoder) vs contrastive training, dense nDCG@10", ""]
    lines += [f"- {name} ({v['kind']}): contrastive {v['contrastive']:.3f}, distilled {v['distilled']:.3f}: "
              f"**{v['better']}**" for name, v in verdict.items()]
    return "\n".join(lines) + "\n"


RERANKER_VERDICT_TAG, RERANKER_REASON_TAG = "flywheel.reranker_verdict", "flywheel.reranker_reason"


def tag_reranker(mlflow: MLflowResource, reranker: dict, verdict: dict, context) -> None:
    """Write the verdict onto the reranker's registered version; the alias `champion` moves to it only when
    it is better than its first stage (a reranker that does not help is registered, never served)."""
    name, version = reranker.get("registered_model"), reranker.get("model_version")
    if not (name and version):
        return
    mlflow.tag_version(name, str(version), {RERANKER_VERDICT_TAG: "ship" if verdict["ship"] else "hold",
                                            RERANKER_REASON_TAG: verdict["reason"][:5000]})
    if verdict["ship"]:
        mlflow.set_alias(name, str(version))
    context.log.info(f"reranker {name} v{version}: {'ship' if verdict['ship'] else 'hold'}: {verdict['reason']}")


def evaluation_markdown(report: dict, table: str, charts: dict) -> str:
    """evaluation.md: the metrics table, the comparisons, the breakdowns, the charts and the judge."""
    parts = [f"# Evaluation: {md_text(report['corpus'])}", table,
             "## Every retriever against its baseline (nDCG@10, paired by query)", comparisons_markdown(report),
             "## Seen vs unseen documents: memory or generalisation? (nDCG@10 gain over the baseline)",
             "A query is *seen* when one of its relevant documents is a positive of the logged feedback the model "
             "trained on. A gain on the seen queries alone is a prior on documents users already cite.",
             feedback_markdown(report),
             "## Where the differences are (per query style, document length and feedback)",
             breakdowns_markdown(report),
             "## Before and after", *(f"![{name}](plots/{path.name})" for name, path in charts.items()),
             "## Chunkers: is chunking the problem? (human queries, base model, each against the shipped chunker)",
             chunkers_markdown(report.get("chunker_baselines", {}) | {"chunkers": report.get("chunkers", {})}),
             "## Document expansion, summaries and learned fusion",
             "\n\n".join(filter(None, [expansion_markdown(report.get("expansion")),
                                       summaries_markdown(report.get("summaries")),
                                       fusion_markdown(report.get("fusion"))])) or "All off.",
             *(["## Not trained", "\n".join(f"- {md_text(why)}" for why in report["not_trained"])]
               if report.get("not_trained") else []),
             "## The fine-tuned reranker: worth its latency?",
             reranker_verdict_markdown(report.get("reranker_verdict", {})),
             f"## The judge against human labels\n\n{agreement_markdown(report['judge_agreement'])}",
             "## What reading the corpus skipped\n\n"
             + ("\n".join(corpus_report_lines(report.get("input") or {})) or "Nothing: every document and judgment was used.")]
    return "\n\n".join(parts) + "\n" + distillation_markdown(report.get("distillation", {}))


def report_markdown(report: dict) -> str:
    lines = ["| query set | kind | n | retriever | " + " | ".join(TABLE_METRICS) + " | ms/query (search; rerank p50/p95) |",
             "|---|---|---|---|" + "---|" * (len(TABLE_METRICS) + 1)]
    for set_name, qs in report["query_sets"].items():
        for system, metrics in qs["retrievers"].items():
            lines.append(f"| {md_text(set_name)} | {qs['kind']} | {qs['n_queries']} | {system} | "
                         + " | ".join(f"{metrics[m]:.3f}" for m in TABLE_METRICS) + f" | {latency_cell(metrics)} |")
    return "\n".join(lines)


@dg.asset(group_name="evaluation", compute_kind="python", pool="gpu", op_tags=compute_tags("gpu"))
def evaluation_report(context: dg.AssetExecutionContext, documents: pd.DataFrame, corpus_report: dict,
                      chunks: pd.DataFrame, query_splits: pd.DataFrame, training_triplets: pd.DataFrame,
                      human_queries: list, baseline_index: dict, finetuned_index: dict, finetuned_biencoder: dict,
                      finetuned_crossencoder: dict, judge_agreement: dict, distilled_index: dict,
                      distilled_biencoder: dict, query_adapter: dict, expanded_index: dict, fusion_weights: dict,
                      chunker_baselines: dict, summary_index: dict,
                      embedder: EmbedderResource, llm: LLMResource,
                      lancedb: LanceDBResource, workspace: WorkspaceResource,
                      mlflow: MLflowResource, config: EvaluationConfig) -> dg.Output[dict]:
    """Retrieval quality of every retriever, before and after fine-tuning and reranking, on synthetic and human
    queries, each against its baseline with a confidence interval, with each reranker's latency."""
    base = lancedb.open(baseline_index["table"])
    systems = {"bm25": (base, "bm25", None), "dense_base": (base, "dense", None), "hybrid_base": (base, "hybrid", None)}
    if finetuned_index.get("enabled", True):   # not over a provider's embeddings: nothing was fine-tuned
        tuned, ft_path = lancedb.open(finetuned_index["table"]), finetuned_biencoder["model_path"]
        systems.update({"dense_finetuned": (tuned, "dense", ft_path), "hybrid_finetuned": (tuned, "hybrid", ft_path)})
    if distilled_index.get("enabled"):
        distilled = lancedb.open(distilled_index["table"])
        systems.update({"dense_distilled": (distilled, "dense", distilled_biencoder["model_path"]),
                        "hybrid_distilled": (distilled, "hybrid", distilled_biencoder["model_path"])})
    systems.update(adapter_systems(query_adapter, base))
    systems.update(expansion_systems(expanded_index, lancedb) | learned_fusion_systems(fusion_weights, base))
    systems.update(summary_systems(summary_index, lancedb))
    encode = make_encoder(embedder, query_adapter)
    rows = with_summary_rows(chunks, summary_index)   # the chunks, and any summary rows a hit may name
    sets = build_query_sets(query_splits, human_queries, rows)
    report = {"query_sets": {}, "generated_at": datetime.now(timezone.utc).isoformat(),
              "corpus": chunks.attrs.get("corpus_name", "corpus"), "corpus_hash": chunks.attrs.get("corpus_hash", ""),
              "model": {k: finetuned_biencoder.get(k) for k in ("model_path", "mlflow_run_id", "model_version",
                                                                "base_model")},
              "adapter": {k: query_adapter.get(k) for k in ("enabled", "kind", "weights_path", "mlflow_run_id",
                                                            "model_version", "base_model", "best_epoch")}}
    rerankers = build_rerankers(config, finetuned_crossencoder, llm, embedder.resolved_device())
    report["rerankers"] = {"depth": config.rerank_depth,
                           **{suffix: {"model": r.name, "first_stages": list(st)} for suffix, r, st in rerankers}}
    report["reranker_model"] = {k: finetuned_crossencoder.get(k) for k in ("model_path", "mlflow_run_id",
                                                                          "model_version", "base_model")}
    report["judge_agreement"] = judge_agreement
    report["expansion"], report["fusion"] = expanded_index, fusion_weights
    report["summaries"] = {k: v for k, v in summary_index.items() if k != "summary_rows"}
    report["input"] = corpus_report
    report["not_trained"] = not_trained(finetuned_biencoder, finetuned_crossencoder, distilled_biencoder)
    report["chunkers"] = chunker_baselines["chunkers"]     # {chunker: {human set: {retriever: metrics}}}
    report["chunker_baselines"] = {k: v for k, v in chunker_baselines.items() if k != "chunkers"}
    chunk_text = dict(zip(rows["chunk_id"], rows["text"]))
    per_query = []
    for set_name, query_set in sets.items():
        use = [r for r in rerankers if r[0] != "rerank_offtheshelf" or query_set.kind in config.offtheshelf_query_kinds]
        entry, pq = evaluate_query_set(query_set, systems, encode, use, chunk_text, config.rerank_depth)
        report["query_sets"][set_name] = entry
        per_query.append(pq)
        context.log.info(f"evaluated {set_name}: {entry['n_queries']} queries")
    llm.release()   # UPR is done: its weights leave memory
    if distilled_index.get("enabled"):
        report["distillation"] = distillation_verdict(report)
    seen_docs = feedback_documents(training_triplets, chunks)
    attributes, edges = query_attributes(sets, query_splits, documents, seen_docs)
    per_query = pd.concat(per_query, ignore_index=True).merge(attributes, on=["query_set", "qid"], how="left")
    add_comparisons(report, per_query, config.bootstrap_resamples, config.seed)
    report["reranker_verdict"] = reranker_verdict(report, per_query, config.bootstrap_resamples, config.seed)
    tag_reranker(mlflow, finetuned_crossencoder, report["reranker_verdict"], context)
    for set_name, qs in report["query_sets"].items():
        qs["breakdown"] = breakdown(per_query[per_query["query_set"] == set_name], resamples=config.bootstrap_resamples,
                                    seed=config.seed)
    report["feedback"] = {"documents_seen_in_training": len(seen_docs),
                          "feedback_train_rows": int(((training_triplets.get("origin") == "feedback")
                                                      & (training_triplets["split"] == "train")).sum())}
    report["doc_length_buckets"] = {"unit": "words", "edges": edges, "rule": f"short <= {edges[0]:g} < medium <= "
                                    f"{edges[1]:g} < long", "n_documents": len(documents)}
    reports = workspace.reports_dir
    charts = report_charts(report, reports / "plots")
    report["plots"] = {name: f"plots/{path.name}" for name, path in charts.items()}
    table = report_markdown(report)
    (reports / "evaluation.json").write_text(json.dumps(report, indent=2))
    (reports / "evaluation.md").write_text(evaluation_markdown(report, table, charts))
    per_query.to_parquet(reports / "per_query.parquet", index=False)
    if config.log_to_mlflow and finetuned_biencoder.get("mlflow_run_id"):
        mlflow.log_to_run(finetuned_biencoder["mlflow_run_id"], mlflow_metrics(report),
                          [str(reports / "evaluation.json"), str(reports / "evaluation.md"),
                           *((str(path), "plots") for path in charts.values())])
    if config.log_to_mlflow and query_adapter.get("mlflow_run_id"):
        adapter_rows = {k: v for k, v in mlflow_metrics(report).items() if "_adapter." in k}   # its own run: its rows
        mlflow.log_to_run(query_adapter["mlflow_run_id"], adapter_rows)
    flat = {f"{s}/{r}/ndcg@10": dg.MetadataValue.float(ms["ndcg@10"])
            for s, qs in report["query_sets"].items() for r, ms in qs["retrievers"].items()}
    plots = {f"plot/{name}": image(path, alt=f"{name}: nDCG@10 before and after, with the 95% CI of each delta")
             for name, path in charts.items()}
    return dg.Output(report, metadata={"report": dg.MetadataValue.md(table),
                                       "comparisons": dg.MetadataValue.md(comparisons_markdown(report)),
                                       "reranker_verdict": dg.MetadataValue.md(
                                           reranker_verdict_markdown(report["reranker_verdict"]) or "no reranker rows"),
                                       "breakdown": dg.MetadataValue.md(breakdowns_markdown(report)),
                                       "seen_vs_unseen": dg.MetadataValue.md(feedback_markdown(report)),
                                       "report_path": str(reports / "evaluation.json"),
                                       "n_query_sets": len(sets), **flat, **plots,
                                       "not_trained": dg.MetadataValue.md(
                                           "\n".join(f"- {md_text(w)}" for w in report["not_trained"]) or "none"),
                                       "rerank_failures": dg.MetadataValue.json(   # pairs a reranker could not score
                                           {f"{s}/{r}": ms["rerank_failures"] for s, qs in report["query_sets"].items()
                                            for r, ms in qs["retrievers"].items() if ms.get("rerank_failures")}),
                                       "fusion": dg.MetadataValue.md(fusion_markdown(fusion_weights) or "off"),
                                       "llm_calls": sum(getattr(r, "calls", 0) for _, r, _ in rerankers),   # UPR
                                       "llm_cache_hits": sum(getattr(r, "cache_hits", 0) for _, r, _ in rerankers),
                                       "mlflow_run": dg.MetadataValue.url(finetuned_biencoder.get("mlflow_run_url") or "")})
