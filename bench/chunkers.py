"""Chunker benchmark: the corpus cut by each chunker, scored on its human queries, before anything is trained.

    OMP_NUM_THREADS=1 .venv/bin/python bench/chunkers.py ../shared/datasets/cranfield [--home /tmp/bench-chunkers]
        [--chunkers shipped,tokens-128-16,tokens-512-64,sentences-256] [--base-model PATH_OR_HUB_ID]

Materializes only what the comparison needs (corpus, chunks, baseline_index, chunker_baselines: no LLM, no
training) in <home>/<dataset>, so a rerun reuses every vector. Prints, per dataset, the chunker table of
evaluation.md (BM25, dense and hybrid on the base model; each chunker against the shipped one with a paired
bootstrap 95% CI), the cost of each chunker, the wall time, and the command that reruns it.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from assets.corpus import chunks, corpus  # noqa: E402
from assets.evaluation.chunkers import chunker_baselines, chunkers_markdown  # noqa: E402
from assets.indices import baseline_index  # noqa: E402
from resources.embedder import EmbedderResource  # noqa: E402
from resources.lance import LanceDBResource  # noqa: E402
from resources.workspace import WorkspaceResource  # noqa: E402

DEFAULT_CHUNKERS = "shipped,tokens-128-16,tokens-512-64,sentences-256"


def run(folder: Path, home: Path, chunkers: list[str], base_model: str) -> tuple[dict, float]:
    home.mkdir(parents=True, exist_ok=True)
    resources = {"io_manager": dg.FilesystemIOManager(base_dir=str(home / "storage")),
                 "workspace": WorkspaceResource(home=str(home)), "embedder": EmbedderResource(model=base_model),
                 "lancedb": LanceDBResource(uri=str(home / "lancedb"))}
    config = {"ops": {"corpus": {"config": {"path": str(folder.resolve())}},
                      "chunker_baselines": {"config": {"chunkers": chunkers}}},
              "loggers": {"console": {"config": {"log_level": "INFO"}}}}
    t0 = time.perf_counter()
    result = dg.materialize([corpus, chunks, baseline_index, chunker_baselines], resources=resources,
                            run_config=config, instance=dg.DagsterInstance.ephemeral())
    return result.output_for_node("chunker_baselines"), time.perf_counter() - t0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="BEIR folders (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--home", type=Path, default=Path("/tmp/flywheel-bench-chunkers"))
    p.add_argument("--chunkers", default=DEFAULT_CHUNKERS, help=f"comma list (default {DEFAULT_CHUNKERS})")
    p.add_argument("--base-model", default="", help="hub id or local folder (default: bundled all-MiniLM-L6-v2)")
    args = p.parse_args(argv)
    chunkers = [c.strip() for c in args.chunkers.split(",") if c.strip()]
    for folder in args.folders:
        value, seconds = run(folder, args.home / folder.resolve().name, chunkers, args.base_model)
        print(f"\n## {folder.resolve().name}\n\n{chunkers_markdown(value)}\n")
        for name, s in value["stats"].items():
            print(f"- {name}: {s['n_chunks']} chunks (mean {s['mean_tokens']} tokens, {s['over_encoder_limit']} over "
                  f"the encoder's limit), {s['chunks_embedded']} embedded, {s['chunks_reused']} reused, "
                  f"depth {s['depth']}, {s['seconds']:.0f}s")
        print(f"\nwall time {seconds:.0f}s (corpus, chunks, baseline index and every chunker)")
    print(f"\nrerun: OMP_NUM_THREADS=1 .venv/bin/python bench/chunkers.py {' '.join(argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
