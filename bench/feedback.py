"""Feedback benchmark: what logged user feedback buys, on held-out human queries, against synthetic data.

    .venv/bin/python bench/feedback.py ../shared/datasets/cranfield --out /tmp/fb/cranfield \
        [--logged-share 0.667] [--curve-sizes 25,50,100] [--seeds 0,1] [--skip-pipeline] -- [flywheel run knobs]

1. A simulated log (assets/feedback/simulate.py): the folder's human queries split by a stable hash into a
   logged part (cited = judged relevant, shown = the other TF-IDF top 10) and a held-out part, written as a
   BEIR folder <out>/<name>_heldout that is never logged. Only the held-out part is scored here.
2. `flywheel run --corpus <heldout> --feedback <log>` (the knobs after `--`): the blend is the pipeline's
   shipped bi-encoder, and the promotion gate decides on it.
3. From the same triplets, with the same recipe: a synthetic-only and a feedback-only model.
4. Every model against the base model on the held-out human queries (dense retrieval, nDCG@10, paired
   bootstrap CI and sign-flip p), overall and split into queries whose relevant documents the training
   feedback cited ("seen") and the rest ("unseen").
5. A learning curve in logged queries (feedback-only models on nested subsets, one per seed): how many
   logged queries does a team need?
6. With --fewshot-ab: the query writer prompted with logged queries as its examples (`--fewshot logged`, the
   users' style) against the generic examples: the pipeline's query-writing stages rerun on a copy of the home,
   a synthetic-only model trained on each, and the two compared paired on the held-out human queries.
"""
import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from assets.common import stable_fraction  # noqa: E402
from assets.evaluation.breakdown import feedback_status  # noqa: E402
from assets.evaluation.scoring import QuerySet, dense_per_query  # noqa: E402
from assets.evaluation.statistics import compare_paired  # noqa: E402
from assets.feedback.simulate import simulate_log  # noqa: E402
from assets.training import TrainConfig  # noqa: E402
from assets.training.biencoder import TrainSettings, train_biencoder  # noqa: E402
from assets.training.blend import blend_rows  # noqa: E402
from assets.triplets import feedback_documents  # noqa: E402
from resources.embedder import bundled_minilm_path  # noqa: E402


def load(home: Path, name: str):
    with open(home / "storage" / name, "rb") as f:
        return pickle.load(f)


def settings_like_pipeline(seed: int = 42) -> TrainSettings:
    d = TrainConfig()
    return TrainSettings(epochs=d.epochs, max_steps=d.max_steps, learning_rate=d.learning_rate,
                         batch_size=d.batch_size, interpolation=d.interpolation, seed=seed)


def train(rows: pd.DataFrame, chunks: pd.DataFrame, out: Path, settings: TrainSettings) -> tuple[str, int]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(bundled_minilm_path(), device="cpu")
    result = train_biencoder(model, rows, chunks, out, settings)
    return result.model_path, result.steps


def per_query(model_path: str | None, sets: list[QuerySet], chunks: pd.DataFrame, cache: dict) -> pd.DataFrame:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path or bundled_minilm_path(), device="cpu")
    enc = lambda t: model.encode(t, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)  # noqa: E731
    vectors = enc(chunks["text"].tolist())
    ids = chunks["chunk_id"].tolist()
    frames = [dense_per_query(qs, enc, ids, vectors).assign(query_set=qs.name) for qs in sets]
    return pd.concat(frames, ignore_index=True)


def compare_rows(name: str, scores: pd.DataFrame, base: pd.DataFrame, status: dict) -> list[dict]:
    joined = scores.merge(base, on=["query_set", "qid"], suffixes=("", "_base"))
    joined["group"] = [status[(s, q)] for s, q in zip(joined["query_set"], joined["qid"])]
    rows = []
    for group, part in [("all", joined), *((g, joined[joined["group"] == g]) for g in ("seen", "unseen"))]:
        if part.empty:
            rows.append({"model": name, "queries": group, "n": 0})
            continue
        c = compare_paired(part["ndcg@10_base"].to_numpy(), part["ndcg@10"].to_numpy(), 10_000, 0)
        rows.append({"model": name, "queries": group, "n": len(part), "base": part["ndcg@10_base"].mean(),
                     "model_ndcg@10": part["ndcg@10"].mean(), "delta": c.delta, "ci_lo": c.ci95[0], "ci_hi": c.ci95[1],
                     "p": c.p_value})
    return rows


def fewshot_ab(home: Path, out: Path, sim: dict, knobs: list[str], chunks, sets, base, status, generic,
               settings, cache) -> list[dict]:
    """Queries written with logged examples vs generic ones: the writer's stages rerun on a copy of the home."""
    import shutil

    from pipelines.cli import parser, run_flywheel

    home2 = out / "home-fewshot-logged"
    if not home2.exists():
        shutil.copytree(home, home2)
    t = time.perf_counter()
    result, _ = run_flywheel(parser().parse_args(
        ["run", "--corpus", sim["heldout"], "--feedback", sim["log"], "--home", str(home2), *knobs,
         "--fewshot", "logged", "--only",
         "synthetic_queries,relevance_labels,document_splits,query_splits,training_triplets"]))
    if not result.success:
        raise SystemExit("the --fewshot logged rerun failed")
    triplets2 = load(home2, "training_triplets")
    queries = {name: load(h, "synthetic_queries") for name, h in (("generic", home), ("logged", home2))}
    print("synthetic queries kept: " + ", ".join(f"{k} {len(v)}" for k, v in queries.items())
          + "; examples of the logged-style queries: " + "; ".join(queries["logged"]["text"].head(5)))
    path, steps = train(blend_rows(triplets2, 1.0, 0.0), chunks, out / "models" / "synthetic-only-logged-fewshot",
                        settings)
    logged = per_query(path, sets, chunks, cache)
    rows = compare_rows(f"synthetic only, logged few-shot ({steps} steps)", logged, base, status)
    # the same two models head to head, paired by query: "base" in this row is the generic few-shot model
    rows += compare_rows("logged few-shot vs generic few-shot (both synthetic only; base = generic)", logged, generic,
                         status)
    print(f"fewshot A/B: {time.perf_counter() - t:.0f}s\n{table(rows)}", flush=True)
    return rows


def logged_subset(triplets: pd.DataFrame, n_queries: int, seed: int) -> pd.DataFrame:
    """Feedback train rows of the first n logged queries in a seed's stable order (nested as n grows)."""
    fb = triplets[(triplets["origin"] == "feedback")]
    order = sorted(fb.loc[fb["split"] == "train", "query_id"].unique(), key=lambda q: stable_fraction(q, seed + 303))
    keep = set(order[:n_queries])
    return fb[(fb["split"] != "train") | fb["query_id"].isin(keep)]


def table(rows: list[dict]) -> str:
    lines = ["| model | held-out queries | n | base nDCG@10 | model nDCG@10 | delta | 95% CI | p |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("n"):
            lines.append(f"| {r['model']} | {r['queries']} | 0 | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['queries']} | {r['n']} | {r['base']:.3f} | {r['model_ndcg@10']:.3f} | "
                     f"{r['delta']:+.3f} | [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}] | {r['p']:.3g} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    knobs = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--out", required=True)
    ap.add_argument("--logged-share", type=float, default=2 / 3)
    ap.add_argument("--curve-sizes", default="", help="this script's own curve (feedback-only models on nested "
                    "subsets of logged queries, e.g. 25,50,100); the pipeline's learning_curve asset draws the blend's")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--skip-pipeline", action="store_true", help="read the home a previous run left")
    ap.add_argument("--models", default="synthetic,feedback", help="extra models to train (synthetic,feedback)")
    ap.add_argument("--fewshot-ab", action="store_true", help="also: synthetic-only models from queries written with "
                    "logged few-shot examples vs the generic ones, compared paired")
    args = ap.parse_args(argv)
    out = Path(args.out)
    sim = simulate_log(args.dataset, out, args.logged_share)
    home = out / "home"
    print(f"simulated log: {sim}")
    t0 = time.perf_counter()
    if not args.skip_pipeline:
        from pipelines.cli import parser, run_flywheel

        result, seconds = run_flywheel(parser().parse_args(
            ["run", "--corpus", sim["heldout"], "--feedback", sim["log"], "--home", str(home), *knobs]))
        print(f"pipeline: success={result.success} in {time.perf_counter() - t0:.0f}s")
        if not result.success:
            return 1
    chunks, triplets = load(home, "chunks"), load(home, "training_triplets")
    human = load(home, "human_queries")
    shipped, gate = load(home, "finetuned_biencoder"), load(home, "promotion_gate")
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"]))
    sets = [QuerySet(f"human/{h.name}", "human", h.queries, h.qrels, chunk_doc) for h in human]
    seen_docs = feedback_documents(triplets, chunks)
    status = {(qs.name, q): s for qs in sets for q, s in feedback_status(qs, None, seen_docs).items()}
    counts = triplets.groupby(["origin", "split"]).size().to_dict()
    print(f"triplets: {counts}; documents seen in training feedback: {len(seen_docs)}")
    cache: dict = {}
    base = per_query(None, sets, chunks, cache)
    rows = compare_rows("blend (the pipeline's shipped model)", per_query(shipped["model_path"], sets, chunks, cache),
                        base, status)
    print(table(rows), flush=True)   # each model's rows as soon as they are known: a cut-off run still shows them
    settings = settings_like_pipeline()
    scored = {}
    for kind, weights in (("synthetic", (1.0, 0.0)), ("feedback", (0.0, 1.0))):
        if kind not in args.models.split(",") and not (kind == "synthetic" and args.fewshot_ab):
            continue
        t = time.perf_counter()
        path, steps = train(blend_rows(triplets, *weights), chunks, out / "models" / f"{kind}-only", settings)
        scored[kind] = per_query(path, sets, chunks, cache)
        rows += compare_rows(f"{kind} only ({steps} steps)", scored[kind], base, status)
        print(f"{kind}-only: {steps} steps, {time.perf_counter() - t:.0f}s\n{table(rows[-3:])}", flush=True)
    if args.fewshot_ab:
        rows += fewshot_ab(home, out, sim, knobs, chunks, sets, base, status, scored["synthetic"], settings, cache)
    print(f"\n## {Path(args.dataset).name}: held-out human queries (logged share {args.logged_share:.2f}), dense\n")
    print(table(rows))
    print(f"\ngate: {gate['decision']}: {gate['reason']}")
    curve = []
    if "learning_curve" in {p.name for p in (home / "storage").iterdir()}:
        from assets.training.curve import summarize, summary_markdown

        points = load(home, "learning_curve")
        if len(points):
            print("\n## The pipeline's learning curve (learning_curve asset: the blend scaled to n logged queries)\n")
            print(summary_markdown(summarize(points), "ndcg@10"))
    n_logged = triplets.loc[(triplets["origin"] == "feedback") & (triplets["split"] == "train"), "query_id"].nunique()
    sizes = [int(s) for s in args.curve_sizes.split(",") if s and int(s) < n_logged]
    sizes += [n_logged] if sizes else []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for size in sizes:
            if size == n_logged and seed != 0:
                continue   # "all" is the same subset whatever the seed: trained once
            subset = logged_subset(triplets, size, seed)
            path, steps = train(subset, chunks, out / "models" / f"curve-{size}-{seed}", settings_like_pipeline(seed))
            for r in compare_rows(f"{size} logged queries, seed {seed}", per_query(path, sets, chunks, cache), base,
                                  status):
                curve.append({**r, "size": size, "seed": seed, "steps": steps})
    print(f"\n## Learning curve in logged queries (feedback only; of {n_logged} logged training queries)\n")
    print(table(curve))
    pd.DataFrame(rows + curve).to_csv(out / "feedback_bench.csv", index=False)
    plot(curve, out / "feedback_curve.png")
    print(f"\nrerun: .venv/bin/python bench/feedback.py {args.dataset} --out {args.out} "
          f"--logged-share {args.logged_share:.3f} --curve-sizes {args.curve_sizes} --seeds {args.seeds}"
          + (f" -- {' '.join(knobs)}" if knobs else "") + f"\n(total {time.perf_counter() - t0:.0f}s)")
    return 0


def plot(curve: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from assets.common import save_figure

    df = pd.DataFrame([r for r in curve if r.get("n")])
    if df.empty:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, g in df.groupby("queries"):
        band = g.groupby("size")["model_ndcg@10"].agg(["min", "max", "mean"])
        ax.plot(band.index, band["mean"], marker="o", label=f"{group} (n={int(g['n'].iloc[0])})")
        ax.fill_between(band.index, band["min"], band["max"], alpha=0.2)
        ax.axhline(g["base"].iloc[0], ls="--", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_xlabel("logged training queries")
    ax.set_ylabel("held-out nDCG@10 (dashed: base model)")
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
