"""Adapter training cost: how long the query adapter takes to train on 3,000 triplets on a CPU.

    .venv/bin/python bench/adapter.py [--rows 3000] [--dim 384] [--kinds linear,mlp] [--threads 1]

1. Synthetic triplets at MiniLM's width (384): random unit document vectors, queries that are their positive
   under a partial random rotation plus noise (so the base cosine is a weak signal and a linear map can fix
   it), hard negatives close to the positive. `--rows` train rows, a fifth of that again for validation.
2. Train each adapter kind with the asset's defaults (assets/training/adapter.py: batch 64, lr 1e-3, up to 30
   epochs, patience 3), timed end to end (validation passes included).
3. Print one row per kind (seconds, epochs, steps, losses, validation recall@10 before/after) and the command
   to rerun. The target: well under a minute on one CPU thread.

The vectors are synthetic, so the recall numbers say only that training works at this size; what the adapter
does to real queries is in the evaluation report (dense_adapter / hybrid_adapter vs the base rows).
"""
import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from assets.training.adapter import AdapterSettings, train_adapter  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def synthetic_triplets(rows: int, dim: int, seed: int = 0, mix: float = 0.9, noise: float = 0.5):
    """(query, positive, negative) arrays: q = unit(mix * R d + (1 - mix) * d + noise), negatives near d."""
    rng = np.random.default_rng(seed)
    docs = _unit(rng.standard_normal((rows, dim)))
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    queries = _unit(mix * docs @ rotation.T + (1 - mix) * docs + noise * rng.standard_normal((rows, dim)) / np.sqrt(dim))
    negatives = _unit(docs + 1.2 * _unit(rng.standard_normal((rows, dim))))
    return queries, docs, negatives


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=3000, help="training triplets (validation: a fifth of that)")
    p.add_argument("--dim", type=int, default=384, help="vector width (all-MiniLM-L6-v2: 384)")
    p.add_argument("--kinds", default="linear,mlp", help="comma list of adapter kinds")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    n_val = max(2, args.rows // 5)
    q, pos, neg = synthetic_triplets(args.rows + n_val, args.dim)
    train, val = slice(0, args.rows), slice(args.rows, args.rows + n_val)
    header = ("| kind | train rows | val rows | dim | seconds | epochs (best) | steps | train loss first -> last | "
              "val loss identity -> best | val recall@10 identity -> best |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        r = train_adapter(q[train], pos[train], neg[train], (q[val], pos[val], neg[val]), AdapterSettings(kind=kind))
        losses = [h["train_loss"] for h in r.history]
        lines.append(f"| {kind} | {args.rows} | {n_val} | {args.dim} | {r.seconds:.1f} | {r.epochs} ({r.best_epoch}) | "
                     f"{r.steps} | {losses[0]:.3f} -> {losses[-1]:.3f} | {r.validation_identity['loss']:.3f} -> "
                     f"{r.validation_best['loss']:.3f} | {r.validation_identity['recall@10']:.3f} -> "
                     f"{r.validation_best['recall@10']:.3f} |")
    print(f"query adapter training on CPU ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s))\n")
    print("\n".join(lines))
    print(f"\nrerun: OMP_NUM_THREADS={args.threads} .venv/bin/python bench/adapter.py --rows {args.rows} "
          f"--dim {args.dim} --kinds {args.kinds} --threads {args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
