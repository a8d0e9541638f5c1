"""Learned fusion: the hybrid's weights chosen on the synthetic validation split instead of a fixed RRF.

`hybrid_base` fuses BM25 and dense with reciprocal rank fusion, both lists weighted alike (RRF k=60, Cormack
et al. 2009). Bruch et al. 2023 ("An Analysis of Fusion Functions for Hybrid Retrieval") find that a convex
combination of normalised scores with its one weight tuned on a small sample of queries beats RRF in domain.
`fusion_weights` tries a small grid, two methods x the weight on dense:

- `rrf`: weighted RRF, (1 - w) / (k + rank_bm25) + w / (k + rank_dense); at w = 0.5 it is `hybrid_base`'s order;
- `convex`: (1 - w) * bm25' + w * dense', each list's scores min-max normalised per query (0 when a chunk is
  not in that list's top `depth`),

each query's two lists fetched once from the base table and fused in memory for every point. The pick has the
best mean nDCG@10 on the synthetic VALIDATION split (never the test split, never a human query: the asset reads
query_splits' validation rows and nothing else); ties go to the point nearest the fixed default (rrf, 0.5), so a
flat grid changes nothing. A pick at w = 0 or 1 (one retriever alone) or at the grid's edge is flagged: the best
may lie outside the grid. The evaluation's `hybrid_learned` row searches the base table with the pick and is
compared with `hybrid_base`, paired by query.
"""

from dataclasses import dataclass

import dagster as dg
import pandas as pd

from assets.common import markdown_table
from assets.evaluation.metrics import mean_metrics
from assets.evaluation.scoring import DEPTH, QuerySet, score_hits, synthetic_query_set
from resources.embedder import EmbedderResource
from resources.lance import LanceDBResource

METHODS = ("rrf", "convex")
DEFAULT = ("rrf", 0.5)    # hybrid_base's fusion
RRF_K = 60
METRIC = "ndcg@10"


class FusionConfig(dg.Config):
    methods: list[str] = list(METHODS)
    weights: list[float] = [round(0.1 * i, 1) for i in range(11)]   # weight on dense: 0 = BM25 alone, 1 = dense alone;
    #   22 points x the validation queries, fused in memory: well under a second for 100 queries
    depth: int = DEPTH        # hits fetched from each list per query, as hybrid_base fetches


def weighted_rrf(lexical: list[str], semantic: list[str], weight: float, k: int = RRF_K,
                 limit: int | None = None) -> list[tuple[str, float]]:
    """(1 - weight) / (k + BM25 rank) + weight / (k + dense rank), ranks from 1; ties by chunk id."""
    scores: dict[str, float] = {}
    for w, ranking in ((1.0 - weight, lexical), (weight, semantic)):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + w / (k + rank)
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return fused[:limit] if limit else fused


def min_max(hits: list[tuple[str, float]]) -> dict[str, float]:
    """Scores scaled to [0, 1] within one list (all 1 when they are equal)."""
    if not hits:
        return {}
    lo, hi = min(s for _, s in hits), max(s for _, s in hits)
    return {c: (s - lo) / (hi - lo) if hi > lo else 1.0 for c, s in hits}


def convex_fuse(lexical: list[tuple[str, float]], semantic: list[tuple[str, float]], weight: float,
                limit: int | None = None) -> list[tuple[str, float]]:
    """(1 - weight) * normalised BM25 + weight * normalised dense; a chunk missing from a list gets 0 from it."""
    a, b = min_max(lexical), min_max(semantic)
    scores = {c: (1.0 - weight) * a.get(c, 0.0) + weight * b.get(c, 0.0) for c in a.keys() | b.keys()}
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return fused[:limit] if limit else fused


def fuse(method: str, weight: float, lexical: list[tuple[str, float]], semantic: list[tuple[str, float]],
         limit: int | None = None) -> list[tuple[str, float]]:
    if method == "rrf":
        return weighted_rrf([c for c, _ in lexical], [c for c, _ in semantic], weight, limit=limit)
    if method == "convex":
        return convex_fuse(lexical, semantic, weight, limit)
    raise ValueError(f"unknown fusion method {method!r}: use one of {', '.join(METHODS)}")


def choose_fusion(query_set: QuerySet, lexical: list[list[tuple[str, float]]], semantic: list[list[tuple[str, float]]],
                  methods: list[str], weights: list[float], limit: int = DEPTH) -> dict:
    """The grid point with the best mean nDCG@10 on `query_set` (hits per query in `query_set.qids` order), ties
    to the point nearest DEFAULT; with every point's score, the default's, and whether the pick is at an edge."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown fusion method {m!r}: use one of {', '.join(METHODS)}")
    if not weights or any(not 0 <= w <= 1 for w in weights):
        raise ValueError(f"fusion weights must be a non-empty list in [0, 1] (the weight on dense), got {weights}")
    grid = []
    for m in methods:
        for w in sorted(set(weights)):
            hits = [fuse(m, w, lx, sm, limit) for lx, sm in zip(lexical, semantic)]
            value = float(mean_metrics(score_hits(query_set, hits))[METRIC]) if query_set.qids else 0.0
            grid.append({"method": m, "weight_dense": w, METRIC: round(value, 6)})

    def distance(p: dict) -> tuple:
        return (p["method"] != DEFAULT[0], abs(p["weight_dense"] - DEFAULT[1]), p["method"], p["weight_dense"])

    best = min(grid, key=lambda p: (-p[METRIC], *distance(p)))
    default = [p for p in grid if (p["method"], p["weight_dense"]) == DEFAULT]
    lo, hi = min(weights), max(weights)
    at_edge = best["weight_dense"] in (lo, hi)
    note = (f"the weight picked ({best['weight_dense']:g}) is at the grid's edge [{lo:g}, {hi:g}]"
            + (": one retriever alone" if best["weight_dense"] in (0.0, 1.0) else ": the best may lie outside it")
            if at_edge else "")
    return {"method": best["method"], "weight_dense": best["weight_dense"], "tuned_on": query_set.name,
            "n_queries": len(query_set.qids), f"validation_{METRIC}": best[METRIC],
            f"default_{METRIC}": default[0][METRIC] if default else None, "at_grid_edge": at_edge, "note": note,
            "grid": grid}


@dataclass
class FusedIndex:
    """A chunk table searched with a chosen fusion for "hybrid"; every other retriever as the table does."""
    index: object          # a resources.lance.ChunkIndex
    method: str
    weight_dense: float

    def search(self, retriever: str, query: str, vector=None, k: int = 100) -> list[tuple[str, float]]:
        if retriever != "hybrid":
            return self.index.search(retriever, query, vector, k)
        depth = max(k, DEPTH)
        return fuse(self.method, self.weight_dense, self.index.bm25(query, depth), self.index.dense(vector, depth), k)


def learned_fusion_systems(fusion_weights: dict, base_index) -> dict[str, tuple]:
    """The evaluation row of the learned fusion over the base table (none when no weights were chosen)."""
    if not fusion_weights.get("method"):
        return {}
    return {"hybrid_learned": (FusedIndex(base_index, fusion_weights["method"], fusion_weights["weight_dense"]),
                               "hybrid", None)}


def fusion_markdown(fusion: dict | None) -> str:
    if not fusion or not fusion.get("method"):
        return ""
    default = fusion.get(f"default_{METRIC}")
    line = (f"`hybrid_learned`: {fusion['method']} with weight {fusion['weight_dense']:g} on dense (BM25 "
            f"{1 - fusion['weight_dense']:g}), chosen on {fusion['tuned_on']} ({fusion['n_queries']} queries): nDCG@10 "
            f"{fusion[f'validation_{METRIC}']:.3f} there"
            + (f", {default:.3f} for the fixed RRF (rrf, 0.5)." if default is not None else "."))
    return line + (f" Note: {fusion['note']}." if fusion.get("note") else "")


@dg.asset(group_name="evaluation", compute_kind="python")   # the cpu profile: it embeds the validation queries only
def fusion_weights(context: dg.AssetExecutionContext, query_splits: pd.DataFrame, baseline_index: dict,
                   embedder: EmbedderResource, lancedb: LanceDBResource, config: FusionConfig) -> dg.Output[dict]:
    """The hybrid fusion (method, weight on dense) with the best nDCG@10 on the synthetic validation split."""
    validation = synthetic_query_set(query_splits, "validation")   # the only queries this asset reads
    index = lancedb.open(baseline_index["table"])
    texts = [validation.queries[q] for q in validation.qids]
    vectors = embedder.encode(texts) if texts else []
    lexical = [index.bm25(t, config.depth) for t in texts]
    semantic = [index.dense(v, config.depth) for v in vectors]
    out = choose_fusion(validation, lexical, semantic, config.methods, config.weights, DEPTH)
    if out["note"]:
        context.log.warning(f"fusion_weights: {out['note']}")
    context.log.info(f"fusion_weights: {out['method']} w_dense={out['weight_dense']:g} on {out['n_queries']} "
                     f"validation queries")
    grid = pd.DataFrame(out["grid"]).pivot(index="weight_dense", columns="method", values=METRIC).reset_index()
    return dg.Output(out, metadata={
        **{k: v for k, v in out.items() if k not in ("grid", "note")},
        "note": out["note"] or "inside the grid",
        "grid": dg.MetadataValue.md(markdown_table(grid, max_rows=len(grid))),
    })
