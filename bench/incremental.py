"""Incremental-cost benchmark: what a rerun and a 1% corpus growth cost, measured by run_stats.json.

    .venv/bin/python bench/incremental.py ../shared/datasets/cranfield --home /tmp/incr [--new-fraction 0.01] [knobs]

1. Copy the BEIR folder to <home>.corpus/<name>, holding back a stable `--new-fraction` of its documents.
2. `flywheel run` on it (run 1, cold), then again on the same files (run 2: should pay for nothing).
3. Add the held-back documents, run again (run 3: should pay for about `--new-fraction` of run 1).
4. Look each new document up by its title (or its first 12 words) in every index, BM25, dense and hybrid:
   is one of its chunks in the top 10?

Any `flywheel run` knob can follow (e.g. --max-chunks 1000 --offtheshelf-query-kinds human). Prints one row
per run from run_stats.json, run 3 as a share of run 1, the findability table, and the command to rerun.
"""
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.common import stable_fraction  # noqa: E402
from pipelines.cli import parser, run_flywheel  # noqa: E402

STATS = ["llm_calls", "llm_cache_hits", "chunks_total", "chunks_new", "chunks_removed", "chunks_embedded",
         "retrained"]


def split_corpus(folder: Path, out: Path, fraction: float) -> list[dict]:
    """Write `folder` to `out` without a stable `fraction` of its non-empty documents; return those held back."""
    out.mkdir(parents=True, exist_ok=True)
    for part in folder.iterdir():
        if part.name != "corpus.jsonl":
            (shutil.copytree if part.is_dir() else shutil.copy)(part, out / part.name)
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines() if line.strip()]
    held = [d for d in docs if d.get("text", "").strip() and stable_fraction(str(d["_id"]), seed=7) < fraction]
    held_ids = {d["_id"] for d in held}
    write_jsonl(out / "corpus.jsonl", [d for d in docs if d["_id"] not in held_ids])
    return held


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def findability(home: Path, new_docs: list[dict], k: int = 10) -> dict[str, float]:
    """Share of new documents with a chunk in the top k of each (table, retriever), searched by title."""
    import pandas as pd

    from pipelines.definitions import default_resources
    from resources.embedder import EmbedderResource

    resources = default_resources(home)
    lance, embedder = resources["lancedb"], EmbedderResource()
    chunks = pd.read_pickle(home / "storage" / "chunks")
    chunk_doc = dict(zip(chunks["chunk_id"], chunks["doc_id"].astype(str)))
    queries = [d.get("title") or " ".join(d["text"].split()[:12]) for d in new_docs]
    model_paths = {"chunks_base": None,
                   "chunks_finetuned": pd.read_pickle(home / "storage" / "finetuned_biencoder")["model_path"]}
    out = {}
    for table, path in model_paths.items():
        index, vectors = lance.open(table), embedder.encode(queries, path)
        for retriever in ("bm25", "dense", "hybrid"):
            found = [any(chunk_doc.get(c) == str(d["_id"]) for c, _ in index.search(retriever, q, v, k))
                     for d, q, v in zip(new_docs, queries, vectors)]
            out[f"{table}/{retriever}"] = sum(found) / max(1, len(found))
    return out


def main(argv: list[str]) -> int:
    argv = list(argv)
    home, fraction = Path("/tmp/flywheel-incremental"), 0.01
    for flag in ("--home", "--new-fraction"):
        if flag in argv:
            i = argv.index(flag)
            home, fraction = (Path(argv[i + 1]), fraction) if flag == "--home" else (home, float(argv[i + 1]))
            del argv[i:i + 2]
    folders = [a for a in argv if not a.startswith("--") and Path(a).is_dir()]
    knobs = [a for a in argv if a not in folders]
    if len(folders) != 1:
        print(__doc__)
        return 2
    source = Path(folders[0]).resolve()
    corpus = home.parent / f"{home.name}.corpus" / source.name
    if corpus.exists():
        shutil.rmtree(corpus)
    held = split_corpus(source, corpus, fraction)
    rows = []
    for label in ("1: cold", "2: same corpus", f"3: +{len(held)} documents"):
        if label.startswith("3"):
            with (corpus / "corpus.jsonl").open("a") as f:
                f.write("".join(json.dumps(d) + "\n" for d in held))
        args = parser().parse_args(["run", "--corpus", str(corpus), "--home", str(home), *knobs])
        t0 = time.perf_counter()
        result, _ = run_flywheel(args)
        if not result.success:
            print(f"run {label} failed; see `flywheel ui --home {home}`", file=sys.stderr)
            return 1
        stats = json.loads((home / "reports" / "run_stats.json").read_text())
        rows.append((label, stats, time.perf_counter() - t0))
    print(f"\n{source.name}: {len(held)} of its documents held back, then added ({fraction:.1%})\n")
    print("| run | " + " | ".join(STATS) + " | wall s |\n|---|" + "---|" * (len(STATS) + 1))
    for label, stats, seconds in rows:
        print(f"| {label} | " + " | ".join(str(stats.get(k)) for k in STATS) + f" | {seconds:.0f} |")
    first, third = rows[0][1], rows[2][1]
    for key in ("llm_calls", "chunks_embedded"):
        print(f"run 3 / run 1 {key}: {third[key]} / {first[key]} = {third[key] / max(1, first[key]):.2%}")
    print("\n| index/retriever | new documents found in the top 10 by their title |\n|---|---|")
    for name, share in findability(home, held).items():
        print(f"| {name} | {share:.0%} |")
    print(f"\nrerun: .venv/bin/python bench/incremental.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
