"""Quality benchmark: the whole pipeline over BEIR folders, one table of every retriever on human queries.

    .venv/bin/python bench/quality.py ../shared/datasets/cranfield ../shared/datasets/cisi [--home /tmp/bench] [knobs]

Any `flywheel run` knob can follow (e.g. --max-chunks 500 --label-queries 300). Each dataset gets its own
home (<home>/<dataset>), so reruns reuse the cached LLM calls. Prints nDCG@10, recall@100 and reranking
latency of every retriever (first stages, reranked rows, distilled rows with --distill) on each human query
set and on the synthetic test split, the judge's agreement with the human labels, then the wall time of
every stage.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.evaluation.comparisons import reranker_verdict_markdown  # noqa: E402
from pipelines.cli import parser, run_flywheel  # noqa: E402

def main(argv: list[str]) -> int:
    argv = list(argv)
    base_home = Path("/tmp/flywheel-bench")
    if "--home" in argv:
        i = argv.index("--home")
        base_home = Path(argv[i + 1])
        del argv[i:i + 2]
    folders = [a for a in argv if not a.startswith("--") and Path(a).is_dir()]
    knobs = [a for a in argv if a not in folders]
    if not folders:
        print(__doc__)
        return 2
    rows, timings, judges, verdicts = [], {}, [], []
    for folder in folders:
        name = Path(folder).resolve().name
        args = parser().parse_args(["run", "--corpus", folder, "--home", str(base_home / name), *knobs])
        t0 = time.perf_counter()
        result, seconds = run_flywheel(args)
        timings[name] = {**seconds, "total": time.perf_counter() - t0}
        if not result.success:
            print(f"{name}: run failed; see the Dagster run under {base_home / name}", file=sys.stderr)
            continue
        report = result.output_for_node("evaluation_report")
        for set_name, qs in report["query_sets"].items():
            for r, m in qs["retrievers"].items():
                p50 = m.get("rerank_ms_p50")
                rows.append((name, set_name, qs["n_queries"], r, m["ndcg@10"], m["recall@100"],
                             "" if p50 is None else f"{p50:.0f} / {m['rerank_ms_p95']:.0f}"))
        judges += [(name, s, j) for s, j in report.get("judge_agreement", {}).items()]
        verdicts.append((name, reranker_verdict_markdown(report.get("reranker_verdict", {}))))
    print("\n| dataset | query set | n | retriever | nDCG@10 | recall@100 | rerank ms p50 / p95 |\n"
          "|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.3f} | {row[5]:.3f} | {row[6]} |")
    if judges:
        keys = ["pairs", "relevant_share", "roc_auc", "roc_auc_heldout", "threshold", "precision", "recall", "kappa"]
        print("\n| dataset | human query set | judge | " + " | ".join(keys) + " |\n|---|---|---|" + "---|" * len(keys))
        for name, set_name, j in judges:
            print(f"| {name} | {set_name} | {j['judge']} | " + " | ".join(str(j.get(k)) for k in keys) + " |")
    for name, table in verdicts:
        if table:
            print(f"\n{name}: {table}")
    stages = sorted({s for t in timings.values() for s in t}, key=lambda s: (s == "total", s))
    print("\n| stage | " + " | ".join(timings) + " |\n|---|" + "---|" * len(timings))
    for s in stages:
        print(f"| {s} | " + " | ".join(f"{t.get(s, 0):.0f}s" for t in timings.values()) + " |")
    print(f"\nrerun: .venv/bin/python bench/quality.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
