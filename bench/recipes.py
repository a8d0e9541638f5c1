"""Training-recipe benchmark: several fine-tuning settings side by side on one materialized flywheel home.

    .venv/bin/python bench/recipes.py --home /tmp/cran [--variants base,default,raw,no_hard_neg,lr2e-5]

Reads the home's stored assets (chunks, triplets, splits, human queries: run `flywheel run` first), trains
each variant from the base model, and scores dense retrieval (exact cosine) on the synthetic test split and
on every human query set. One table, so the levers (learning rate, WiSE-FT interpolation, hard negatives)
are compared in the same run on the same data.
"""
import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from assets.evaluation.metrics import aggregate_to_documents, mean_metrics, per_query_metrics  # noqa: E402
from assets.training.biencoder import TrainSettings, train_biencoder  # noqa: E402
from resources.embedder import bundled_minilm_path  # noqa: E402

VARIANTS = {
    "default": TrainSettings(),
    "raw": TrainSettings(interpolation=1.0),
    "lr2e-5_raw": TrainSettings(learning_rate=2e-5, interpolation=1.0),
    "no_hard_neg": TrainSettings(),
    "epochs2": TrainSettings(epochs=2.0),
}


def load(home: Path, name: str):
    with open(home / "storage" / name, "rb") as f:
        return pickle.load(f)


def dense_scores(model, chunks, splits, human_sets):
    C = model.encode(chunks["text"].tolist(), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    ids = chunks["chunk_id"].tolist()
    c2d = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    out = {}
    test = splits[splits["split"] == "test"]
    sets = {"synthetic/test": (dict(zip(test["query_id"], test["text"])),
                               {r.query_id: {c: 1 for c in r.positives} for r in test.itertuples()}, False)}
    for hs in human_sets:
        sets[f"human/{hs.name}"] = (hs.queries, hs.qrels, True)
    for name, (queries, qrels, to_docs) in sets.items():
        qids = [q for q in qrels if q in queries]
        Q = model.encode([queries[q] for q in qids], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        S = Q @ C.T
        ranking = {}
        for qid, row in zip(qids, S):
            top = np.argsort(-row)[:300]
            hits = [(ids[i], float(row[i])) for i in top]
            ranking[qid] = aggregate_to_documents(hits, c2d)[:100] if to_docs else [c for c, _ in hits][:100]
        m = mean_metrics(per_query_metrics(ranking, {q: qrels[q] for q in qids}))
        out[name] = (m["ndcg@10"], m["recall@100"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True)
    ap.add_argument("--variants", default="base,default,raw")
    args = ap.parse_args()
    home = Path(args.home)
    from sentence_transformers import SentenceTransformer

    chunks, splits, triplets = load(home, "chunks"), load(home, "query_splits"), load(home, "training_triplets")
    human = load(home, "human_queries")
    print(f"{len(triplets)} triplets ({(triplets['split'] == 'train').sum()} train), {len(chunks)} chunks")
    rows = []
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        model = SentenceTransformer(bundled_minilm_path(), device="cpu")
        if variant != "base":
            tr = triplets
            if variant == "no_hard_neg":   # in-batch negatives only: the mined negative replaced by a random chunk
                tr = triplets.copy()
                tr["negative"] = chunks["text"].sample(n=len(tr), replace=True, random_state=0).to_numpy()
            train_biencoder(model, tr, chunks, Path(f"/tmp/recipes/{variant}"), VARIANTS[variant])
        scores = dense_scores(model, chunks, splits, human)
        rows.append((variant, scores, time.perf_counter() - t0))
        print(variant, {k: round(v[0], 4) for k, v in scores.items()}, f"{time.perf_counter() - t0:.0f}s", flush=True)
    sets = list(rows[0][1])
    print("\n| variant | " + " | ".join(f"{s} nDCG@10 | {s} R@100" for s in sets) + " | seconds |")
    print("|---|" + "---|---|" * len(sets) + "---|")
    for variant, scores, secs in rows:
        print(f"| {variant} | " + " | ".join(f"{scores[s][0]:.4f} | {scores[s][1]:.4f}" for s in sets) + f" | {secs:.0f} |")
    print(f"\nrerun: .venv/bin/python bench/recipes.py --home {args.home} --variants {args.variants}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
