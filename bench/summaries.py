"""Summaries benchmark: does an LLM-written summary of each document, indexed beside its chunks, pay for its calls?

    OMP_NUM_THREADS=2 .venv/bin/python bench/summaries.py ../shared/datasets/cranfield [--documents 400]
        [--home /tmp/flywheel-bench-summaries] [--resamples 10000]

1. A sample of the corpus: the first `--documents` documents in a stable hash order (all of them with 0), written
   as a BEIR folder with the same queries and qrels; the corpus asset drops the judgments of documents left out,
   and the queries left with no relevant document.
2. Materializes corpus, chunks, baseline_index, document_summaries (the bundled LLM unless --llm-model names
   another; every answer cached in <home>/llm_cache.sqlite, so a rerun costs no call) and summary_index.
3. Scores BM25, dense and hybrid on the plain table and on the table with the summaries, on the human queries,
   each summary row against its plain one paired by query (bootstrap 95% CI, sign-flip p), and prints the LLM's
   seconds a document: what the gain costs.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402
import pandas as pd  # noqa: E402

from assets.common import stable_fraction  # noqa: E402
from assets.corpus import chunks, corpus  # noqa: E402
from assets.evaluation import evaluate_query_set, make_encoder  # noqa: E402
from assets.evaluation.comparisons import compare_to_baselines  # noqa: E402
from assets.evaluation.scoring import build_query_sets  # noqa: E402
from assets.indices import baseline_index, document_summaries, summary_index  # noqa: E402
from assets.indices.summaries import summary_systems, with_summary_rows  # noqa: E402
from resources.embedder import EmbedderResource  # noqa: E402
from resources.lance import LanceDBResource  # noqa: E402
from resources.llm import LocalGGUFLLMResource  # noqa: E402
from resources.workspace import WorkspaceResource  # noqa: E402


def sample_folder(folder: Path, out: Path, n_documents: int) -> Path:
    """A BEIR folder of the first n documents of `folder` in a stable hash order, with its queries and qrels."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    lines = [line for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    if n_documents > 0:
        lines = sorted(lines, key=lambda line: stable_fraction(str(json.loads(line)["_id"]), 7))[:n_documents]
    (out / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(folder / "queries.jsonl", out / "queries.jsonl")
    shutil.copytree(folder / "qrels", out / "qrels", dirs_exist_ok=True)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--documents", type=int, default=400, help="documents sampled (0 = all)")
    p.add_argument("--home", type=Path, default=Path("/tmp/flywheel-bench-summaries"))
    p.add_argument("--llm-model", default="", help="a .gguf, local HF folder or hub id (default: the bundled 270M)")
    p.add_argument("--resamples", type=int, default=10_000)
    args = p.parse_args(argv)
    name = args.folder.resolve().name
    home = args.home / f"{name}-{args.documents or 'all'}"
    folder = sample_folder(args.folder.resolve(), home / name, args.documents)
    lancedb = LanceDBResource(uri=str(home / "lancedb"))
    embedder = EmbedderResource()
    resources = {"io_manager": dg.FilesystemIOManager(base_dir=str(home / "storage")),
                 "workspace": WorkspaceResource(home=str(home)), "embedder": embedder, "lancedb": lancedb,
                 "llm": LocalGGUFLLMResource(cache_path=str(home / "llm_cache.sqlite"), model_path=args.llm_model)}
    config = {"ops": {"corpus": {"config": {"path": str(folder)}},
                      "document_summaries": {"config": {"enabled": True}}},
              "loggers": {"console": {"config": {"log_level": "INFO"}}}}
    t0 = time.perf_counter()
    result = dg.materialize([corpus, chunks, baseline_index, document_summaries, summary_index], resources=resources,
                            run_config=config, instance=dg.DagsterInstance.ephemeral())
    wall = time.perf_counter() - t0
    meta = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}
    the_chunks, info = result.output_for_node("chunks"), result.output_for_node("summary_index")
    human = result.output_for_node("corpus", "human_queries")
    base = lancedb.open(result.output_for_node("baseline_index")["table"])
    systems = {"bm25": (base, "bm25", None), "dense_base": (base, "dense", None), "hybrid_base": (base, "hybrid", None),
               **summary_systems(info, lancedb)}
    sets = build_query_sets(pd.DataFrame(columns=["query_id", "split", "text", "positives"]), human,
                            with_summary_rows(the_chunks, info))
    summaries = meta["document_summaries"]
    calls = summaries["llm_calls"]
    print(f"\n## {name}: {summaries['n_documents']} documents, {len(the_chunks)} chunks, {summaries['n_summaries']} "
          f"summaries (mean {summaries['mean_words']} words; {summaries['without_summary']} documents without a "
          f"usable one); LLM {summaries['llm']}: {calls} calls in {summaries['seconds']:.0f}s"
          + (f" = {summaries['seconds'] / calls:.2f} s a document" if calls else " (all cached: rerun with a fresh "
             "--home to time the calls)") + "\n")
    print("| query set | n | retriever | plain nDCG@10 | with summaries | delta | 95% CI | p |")
    print("|---|---|---|---|---|---|---|---|")
    for set_name, qs in sets.items():
        if qs.kind != "human" or not qs.qids:
            continue
        _, pq = evaluate_query_set(qs, systems, make_encoder(embedder, {}))
        means = pq.groupby("retriever")["ndcg@10"].mean()
        vs = compare_to_baselines(pq, args.resamples, 0)
        for row in ("bm25_summaries", "dense_summaries", "hybrid_summaries"):
            c = vs[row]
            print(f"| {set_name} | {c['n_paired']} | {row} | {means[c['baseline']]:.3f} | {means[row]:.3f} | "
                  f"{c['delta_ndcg@10']:+.3f} | [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] | {c['p_value']:.3g} |")
    print("\nexamples: " + " | ".join(result.output_for_node("document_summaries")["summary"].head(3)))
    print(f"\nwall time {wall:.0f}s\nrerun: OMP_NUM_THREADS=2 .venv/bin/python bench/summaries.py {' '.join(argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
