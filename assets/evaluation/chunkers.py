"""Chunkers as baselines: is chunking the problem, before anything is fine-tuned?

The corpus is cut by each configured chunker (assets/corpus/chunkers.py: token windows of other sizes, whole
sentences packed up to a budget) and each cut is scored on the corpus's human queries with the three base
retrievers of the main table (`bm25`, `dense_base`, `hybrid_base`: the same LanceDB BM25 index, base-model
vectors and RRF fusion), judged at document level as the main table judges them (a document ranks at its
best chunk, MaxP). Each chunker's rows are compared with the shipped chunker's (ChunkingConfig: the `chunks`
asset) on the same queries and the same retriever: delta nDCG@10, a paired bootstrap 95% interval and a
sign-flip p-value (comparisons.py). Synthetic queries cannot compare chunkers: their positives are the
shipped chunks, which another chunker does not have.

Cost: every chunk is embedded once with the base model. A chunk's id is the hash of its text, so a vector is
reused from the baseline table (the shipped chunks), from any chunker's table of an earlier run, or from a
chunker of this run that cut the same text (a short document kept whole is one chunk under every chunker).
The shipped chunker is scored on the baseline table itself, so its rows are the main table's rows; every other
chunker gets a LanceDB table `chunker_<name>`, synced incrementally like the main indices.

Depth: a human set fetches CHUNK_DEPTH chunks per query to rank 100 documents; a chunker that cuts more
chunks per document fetches proportionally more (`depth_for`), so smaller chunks are not cut short at recall@100.
"""
import math
import time
from dataclasses import replace

import dagster as dg
import numpy as np
import pandas as pd

from assets.common import md_text
from assets.corpus.chunkers import Chunker, parse_chunker
from assets.corpus.chunking import load_tokenizer
from assets.evaluation.comparisons import DELTA, METRIC, paired_delta, verdict
from assets.evaluation.metrics import METRIC_NAMES, mean_metrics
from assets.evaluation.scoring import CHUNK_DEPTH, QuerySet, score_hits
from assets.indices import embed_incrementally
from resources.compute import compute_tags
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource
from resources.workspace import WorkspaceResource

RETRIEVERS = {"bm25": "bm25", "dense_base": "dense", "hybrid_base": "hybrid"}   # report row -> ChunkIndex.search
SHIPPED = "shipped"
NO_HUMAN_QUERIES = ("no human-labelled queries: chunkers are compared on a BEIR folder's qrels (flywheel run --corpus "
                    "<BEIR folder>); synthetic queries are judged by the shipped chunks and cannot compare chunkers")
OFF = "off: chunker_baselines.chunkers is [] (flywheel run --chunker-baselines \"\")"


class ChunkerBaselinesConfig(dg.Config):
    chunkers: list[str] = [SHIPPED, "tokens-128-16", "sentences-256"]   # [] = off. "shipped" is ChunkingConfig's
    #   chunker, always scored (first) as the baseline. Cost on cranfield (1,398 documents, 1,778 shipped chunks):
    #   tokens-128-16 cuts 3,116 chunks of which 417 are shipped ones (2,699 to embed: 132 s on one CPU thread,
    #   ~20 chunks/s), sentences-256 1,767 of which 1,395 are (372 to embed: ~20 s); a rerun embeds none
    bootstrap_resamples: int = 10_000   # as the evaluation's: the same intervals for the same scores
    seed: int = 0


def resolve_chunkers(names: list[str], shipped: Chunker) -> list[Chunker]:
    """The chunkers to score, the shipped one first (the baseline of every comparison), each once; [] for []."""
    if not names:
        return []
    out = [shipped]
    for name in names:
        c = shipped if name.strip() == SHIPPED else parse_chunker(name)
        if c not in out:
            out.append(c)
    return out


def chunker_table(c: Chunker) -> str:
    return "chunker_" + c.name.replace("-", "_")


def human_query_sets(human_queries: list, chunks: pd.DataFrame) -> dict[str, QuerySet]:
    """One document-level query set per human qrels file, its chunks mapped to documents (as build_query_sets)."""
    chunk_to_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    return {f"human/{hs.name}": QuerySet(f"human/{hs.name}", "human", hs.queries, hs.qrels, chunk_to_doc)
            for hs in human_queries}


def depth_for(chunks: pd.DataFrame, shipped_chunks: pd.DataFrame) -> int:
    """Chunks fetched per query: CHUNK_DEPTH, scaled by this chunker's chunks per document over the shipped one's."""
    per_doc = len(chunks) / max(1, chunks["doc_id"].nunique())
    shipped = len(shipped_chunks) / max(1, shipped_chunks["doc_id"].nunique())
    return math.ceil(CHUNK_DEPTH * max(1.0, per_doc / shipped))


def vectors_from_cache(chunks: pd.DataFrame, cache: dict, encode) -> tuple[np.ndarray, int]:
    """Every chunk's vector, embedding only ids not in ``cache`` (which then holds them too); (vectors, embedded)."""
    vectors, n_new = embed_incrementally(chunks, cache, encode)
    cache.update(zip(chunks["chunk_id"], vectors))
    return vectors, n_new


def score_chunker(index, chunks: pd.DataFrame, sets: dict[str, QuerySet], query_vectors: dict[str, np.ndarray],
                  depth: int) -> tuple[dict, pd.DataFrame]:
    """{set: {retriever: metrics}} of one chunker's index, and its per-query rows (query_set, retriever, qid, ...)."""
    chunk_to_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    entry, rows = {}, []
    for name, qs in sets.items():
        qs = replace(qs, chunk_to_doc=chunk_to_doc)
        texts = [qs.queries[q] for q in qs.qids]
        entry[name] = {}
        for row, retriever in RETRIEVERS.items():
            hits = [index.search(retriever, t, v, depth) for t, v in zip(texts, query_vectors[name])]
            pq = score_hits(qs, hits)
            entry[name][row] = {m: round(v, 6) for m, v in mean_metrics(pq).items()}
            rows.append(pq.assign(query_set=name, retriever=row))
    return entry, pd.concat(rows, ignore_index=True)


def add_shipped_comparisons(section: dict, per_query: pd.DataFrame, shipped: str, resamples: int, seed: int) -> None:
    """Every other chunker's row gets {baseline: the shipped chunker, delta_ndcg@10, ci95, p_value, n_paired}."""
    for (set_name, row), group in per_query.groupby(["query_set", "retriever"]):
        wide = group.pivot(index="qid", columns="chunker", values=METRIC)
        for name in wide.columns:
            if name != shipped:
                section[name][set_name][row].update({"baseline": shipped,
                                                     **paired_delta(wide, shipped, name, resamples, seed)})


def chunker_findings(section: dict, shipped: str) -> list[str]:
    """One line per (set, retriever) where a chunker is clearly better or worse than the shipped one."""
    lines = []
    for name, sets in section.items():
        for set_name, rows in sets.items():
            for row, m in rows.items():
                if DELTA in m and verdict(m) != "no clear difference":
                    lo, hi = m["ci95"]
                    lines.append(f"{md_text(set_name)}, {row}: {name} is {verdict(m)} than {shipped} (Δ nDCG@10 "
                                 f"{m[DELTA]:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], p {m['p_value']:.3g})")
    return lines


def chunkers_markdown(value: dict) -> str:
    """evaluation.md's chunker table: every chunker's rows per human set, each against the shipped chunker."""
    section, stats = value.get("chunkers") or {}, value.get("stats", {})
    if not section:
        return f"No chunker comparison: {value.get('note') or NO_HUMAN_QUERIES}."
    shipped = value["shipped"]
    lines = [f"Baseline: the shipped chunker **{shipped}**. A verdict needs the 95% CI to exclude 0 and p < 0.05.", "",
             "| query set | chunker | chunks | mean tokens | retriever | nDCG@10 | recall@10 | recall@100 | "
             f"Δ nDCG@10 vs {shipped} | 95% CI | p | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for set_name in next(iter(section.values())):
        for name, sets in section.items():
            s = stats.get(name, {})
            for row, m in sets[set_name].items():
                cmp = "— | — | — | baseline"
                if DELTA in m:
                    lo, hi = m["ci95"]
                    cmp = f"{m[DELTA]:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {m['p_value']:.3g} | {verdict(m)}"
                lines.append(f"| {md_text(set_name)} | {name} | {s.get('n_chunks', '')} | "
                             f"{s.get('mean_tokens', 0):.0f} | {row} | {m['ndcg@10']:.3f} | {m['recall@10']:.3f} | "
                             f"{m['recall@100']:.3f} | {cmp} |")
    findings = chunker_findings(section, shipped) or ["No chunker differs clearly from the shipped one."]
    lines += ["", *(f"- {f}" for f in findings)]
    lines += ["", "Cost: " + "; ".join(f"{n}: {s['n_chunks']} chunks, {s['chunks_embedded']} embedded, "
                                       f"{s['chunks_reused']} reused" for n, s in stats.items())]
    return "\n".join(lines)


@dg.asset(group_name="evaluation", compute_kind="lancedb", pool="gpu", op_tags=compute_tags("gpu"))
def chunker_baselines(context: dg.AssetExecutionContext, documents: pd.DataFrame, chunks: pd.DataFrame,
                      human_queries: list, baseline_index: dict, embedder: EmbedderResource,
                      lancedb: LanceDBResource, workspace: WorkspaceResource,
                      config: ChunkerBaselinesConfig) -> dg.Output[dict]:
    """BM25, dense and hybrid (base model) on the human queries under each chunker, against the shipped chunker."""
    shipped = parse_chunker(chunks.attrs.get("chunker", "tokens-256-32"))
    specs = resolve_chunkers(config.chunkers, shipped)
    sets = human_query_sets(human_queries, chunks)
    note = OFF if not specs else NO_HUMAN_QUERIES if not sets else ""
    value = {"chunkers": {}, "shipped": shipped.name, "note": note, "stats": {}}
    if note:
        return dg.Output(value, metadata={"note": note, "chunks_embedded": 0, "n_chunkers": 0})
    model = embedder.vector_key()   # the base model's vectors, at the precision the embedder encodes in
    cache = {c: v for s in specs[1:] for c, v in lancedb.stored_vectors(chunker_table(s), model).items()}
    cache |= lancedb.stored_vectors(baseline_index["table"], model)
    query_vectors = {n: embedder.encode([qs.queries[q] for q in qs.qids]) for n, qs in sets.items()}
    # a provider's tokenizer is not local (the bundled MiniLM's counts then); its input limit is the config's
    tokenizer = load_tokenizer(embedder.tokenizer_path())
    limit = embedder.max_seq_length if embedder.frozen_reason() else embedder.load().max_seq_length
    per_query = []
    for spec in specs:
        t0 = time.perf_counter()
        if spec == shipped:
            cut, n_new, table = chunks, 0, baseline_index["table"]
            index = lancedb.open(table)
        else:
            cut, _ = spec.chunk(documents, tokenizer)
            vectors, n_new = vectors_from_cache(cut, cache, lambda texts: embedder.encode(texts))
            table = chunker_table(spec)
            index, _ = lancedb.sync_chunk_table(table, cut, vectors, model=model)
        depth = depth_for(cut, chunks)
        value["chunkers"][spec.name], pq = score_chunker(index, cut, sets, query_vectors, depth)
        per_query.append(pq.assign(chunker=spec.name))
        value["stats"][spec.name] = {"n_chunks": len(cut), "mean_tokens": round(float(cut["n_tokens"].mean()), 1),
                                     "over_encoder_limit": int((cut["n_tokens"] > limit - 2).sum()),  # [CLS], [SEP]
                                     "chunks_embedded": n_new, "chunks_reused": len(cut) - n_new, "table": table,
                                     "depth": depth, "seconds": round(time.perf_counter() - t0, 2)}
        context.log.info(f"{spec.name}: {len(cut)} chunks, {n_new} embedded, scored on {len(sets)} human sets")
    per_query = pd.concat(per_query, ignore_index=True)
    add_shipped_comparisons(value["chunkers"], per_query, shipped.name, config.bootstrap_resamples, config.seed)
    path = workspace.reports_dir / "chunkers_per_query.parquet"
    per_query[["chunker", "query_set", "retriever", "qid", *METRIC_NAMES]].to_parquet(path, index=False)
    flat = {f"{c}/{s}/{r}/ndcg@10": dg.MetadataValue.float(m["ndcg@10"])
            for c, sets in value["chunkers"].items() for s, rows in sets.items() for r, m in rows.items()}
    return dg.Output(value, metadata={
        "table": dg.MetadataValue.md(chunkers_markdown(value)), "shipped": shipped.name, "n_chunkers": len(specs),
        "chunks_embedded": sum(s["chunks_embedded"] for s in value["stats"].values()),
        "chunks_reused": sum(s["chunks_reused"] for s in value["stats"].values()),
        "stats": dg.MetadataValue.json(value["stats"]), "per_query_path": str(path), **flat})
