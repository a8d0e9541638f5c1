"""Where a retriever wins or loses: nDCG@10 by query style and by the length of the query's document.

A mean over a query set can hide a model that gains on keyword queries and loses on questions, or on long
documents only. Each query gets two attributes, kept in per_query.parquet beside its metrics:

- `style`: the synthetic query's style (question, keywords, claim; the query writer's, carried through
  query_splits); "human" for a human-labelled query.
- `doc_length_bucket`: short / medium / long by the words of the query's document, cut at the corpus's
  document-length tertiles (the edges go into the report). A synthetic query's document is its source
  chunk's; a human query's is its most relevant judged document (the first of the highest grade).
  "unknown" when the judged document is not in the corpus.
- `feedback`: "seen" when one of the query's relevant documents (a human query's judged-relevant ones, a
  synthetic query's source) is a positive of the logged feedback the model trained on, else "unseen". A gain
  on the seen queries alone is a prior on documents users already cite, memory; a gain on the unseen ones is
  what carries over to tomorrow's documents. Each group also gets every retriever's delta over its baseline
  with a paired CI (`vs_baseline`), so the two can be told apart with evidence.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from assets.common import md_text
from assets.evaluation.scoring import QuerySet

LENGTH_BUCKETS = ["short", "medium", "long", "unknown"]
ATTRIBUTES = {"by_style": "style", "by_doc_length": "doc_length_bucket", "by_feedback": "feedback"}
FEEDBACK_GROUPS = ["seen", "unseen"]


def document_words(documents: pd.DataFrame) -> dict[str, int]:
    """doc_id -> words in its text."""
    return dict(zip(documents["doc_id"], documents["text"].fillna("").str.split().str.len()))


def length_edges(words: dict[str, int]) -> list[float]:
    """The corpus's document-length tertiles, in words: short <= edges[0] < medium <= edges[1] < long."""
    if not words:
        return [0.0, 0.0]
    return [float(x) for x in np.quantile(list(words.values()), [1 / 3, 2 / 3])]


def length_bucket(words: int | None, edges: list[float]) -> str:
    if words is None:
        return "unknown"
    return "short" if words <= edges[0] else "medium" if words <= edges[1] else "long"


def query_documents(query_set: QuerySet, query_splits: pd.DataFrame) -> dict[str, str]:
    """qid -> the query's document: the source document of a synthetic query, the most relevant judged
    document of a human one."""
    if query_set.kind == "synthetic":
        source = dict(zip(query_splits["query_id"], query_splits["doc_id"]))
        return {q: source[q] for q in query_set.qids}
    return {q: max(query_set.qrels[q].items(), key=lambda kv: kv[1])[0] for q in query_set.qids}


def feedback_status(query_set: QuerySet, query_splits: pd.DataFrame, seen_docs: set[str]) -> dict[str, str]:
    """qid -> "seen" / "unseen": does one of its relevant documents appear in the training feedback?"""
    if query_set.kind == "synthetic":
        source = dict(zip(query_splits["query_id"], query_splits["doc_id"]))
        return {q: "seen" if source[q] in seen_docs else "unseen" for q in query_set.qids}
    return {q: "seen" if any(g > 0 and d in seen_docs for d, g in query_set.qrels[q].items()) else "unseen"
            for q in query_set.qids}


def query_attributes(sets: dict[str, QuerySet], query_splits: pd.DataFrame, documents: pd.DataFrame,
                     seen_docs: set[str] = frozenset()) -> tuple[pd.DataFrame, list[float]]:
    """One row per (query_set, qid): style, doc_id, doc_words, doc_length_bucket, feedback; and the bucket edges."""
    words = document_words(documents)
    edges = length_edges(words)
    style = dict(zip(query_splits["query_id"], query_splits["style"]))
    rows = []
    for name, qs in sets.items():
        seen = feedback_status(qs, query_splits, set(seen_docs))
        for qid, doc in query_documents(qs, query_splits).items():
            n = words.get(doc)
            rows.append({"query_set": name, "qid": qid, "style": style[qid] if qs.kind == "synthetic" else "human",
                         "doc_id": doc, "doc_words": n, "doc_length_bucket": length_bucket(n, edges),
                         "feedback": seen[qid]})
    cols = ["query_set", "qid", "style", "doc_id", "doc_words", "doc_length_bucket", "feedback"]
    return pd.DataFrame(rows, columns=cols).astype({"doc_words": "Int64"}), edges


def breakdown(per_query: pd.DataFrame, metric: str = "ndcg@10", resamples: int = 10_000, seed: int = 0) -> dict:
    """One query set's per-query rows -> {"metric", "by_style", "by_doc_length", "by_feedback"}, each group
    {"n_queries": n, metric: {retriever: mean}}; styles sorted, length buckets short to long; the feedback
    groups (seen, unseen: both always present, n 0 when empty) also carry `vs_baseline`."""
    from assets.evaluation.comparisons import compare_to_baselines

    out: dict = {"metric": metric}
    if "feedback" not in per_query:   # rows from before the feedback split: no query has seen documents
        per_query = per_query.assign(feedback="unseen")
    for key, column in ATTRIBUTES.items():
        groups = {}
        for value, rows in per_query.groupby(column, sort=True):
            means = rows.groupby("retriever", sort=False)[metric].mean()
            groups[value] = {"n_queries": int(rows["qid"].nunique()),
                             metric: {r: round(float(v), 6) for r, v in means.items()}}
            if column == "feedback":
                groups[value]["vs_baseline"] = compare_to_baselines(rows, resamples, seed, metric)
        if column == "doc_length_bucket":
            groups = {b: groups[b] for b in LENGTH_BUCKETS if b in groups}
        if column == "feedback":
            groups = {g: groups.get(g, {"n_queries": 0, metric: {}, "vs_baseline": {}}) for g in FEEDBACK_GROUPS}
        out[key] = groups
    return out


def breakdown_markdown(set_name: str, bd: dict) -> str:
    """A table per query set: a row per retriever, a column per style and per length bucket (n in the header)."""
    groups = [(key, value, g) for key in ATTRIBUTES for value, g in bd[key].items()]
    retrievers = list(dict.fromkeys(r for _, _, g in groups for r in g[bd["metric"]]))
    header = [f"{value} (n={g['n_queries']})" for _, value, g in groups]
    lines = [f"### {md_text(set_name)}: {bd['metric']} by query style, document length and feedback (seen/unseen documents)", "",
             "| retriever | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for r in retrievers:
        cells = [f"{g[bd['metric']][r]:.3f}" if r in g[bd["metric"]] else "" for _, _, g in groups]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdowns_markdown(report: dict) -> str:
    """Every query set's breakdown table, after the rule that cut the length buckets."""
    tables = [breakdown_markdown(name, qs["breakdown"]) for name, qs in report["query_sets"].items()]
    rule = report["doc_length_buckets"]["rule"]
    return "\n\n".join([f"Document length buckets (words, the corpus's tertiles): {rule}", *tables])


def feedback_markdown(report: dict, retrievers: tuple[str, ...] = ("dense_finetuned", "hybrid_finetuned",
                                                                   "dense_adapter", "hybrid_adapter")) -> str:
    """Per query set: the trained rows' (fine-tuned model, query adapter) gain over their baseline on queries
    whose relevant documents the training feedback cited (seen) and on the rest (unseen), each with its CI:
    memory vs generalisation. A retriever the set has no row for (the adapter when it is off) is left out."""
    lines = ["| query set | retriever | seen: n | seen: delta [95% CI] | unseen: n | unseen: delta [95% CI] |",
             "|---|---|---|---|---|---|"]
    for name, qs in report["query_sets"].items():
        groups = qs["breakdown"].get("by_feedback", {})
        for r in retrievers:
            if "retrievers" in qs and r not in qs["retrievers"]:
                continue
            cells = []
            for g in FEEDBACK_GROUPS:
                c = groups.get(g, {}).get("vs_baseline", {}).get(r)
                cells += [str(groups.get(g, {}).get("n_queries", 0)),
                          f"{c['delta_ndcg@10']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], p={c['p_value']:.3g}"
                          if c else "-"]
            lines.append(f"| {md_text(name)} | {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
