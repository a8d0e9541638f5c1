"""Run profiles: named sets of `flywheel run` knobs. A knob given on the command line always wins.

`full` is the stages' own defaults (their Config classes). `demo` is what `make demo` runs: every stage
with a real result on the bundled sample corpus in a few minutes on 2 CPU cores, so a new user sees the
whole loop before deciding to spend an hour on their own corpus. What it gives up, and why its table still
says something true:
- queries for 100 of the sample's ~600 chunks, 40 of them judged: the synthetic test split keeps ~20
  queries, enough for the paired CIs to be honest about being wide;
- one validation pass while training instead of four, over 200 chunks instead of 1,000 (each pass embeds them);
- the reranker trains 10 steps instead of its 300-step floor: it stays near chance, and the reranker
  verdict and the gate say so (assets/training/crossencoder.py, MIN_STEPS_WHY);
- the learning curve at two small points (16 and 32 rows: one small step each) and one seed; UPR reorders the top 10, not 20.
"""
from __future__ import annotations

import argparse

PROFILES: dict[str, dict[str, object]] = {
    "full": {},
    "demo": {
        "max_chunks": 100,
        "label_queries": 40,
        "judge_queries": 10,
        "reranker_steps": 10,
        "rerank_depth": 10,
        "curve_sizes": "16,32",
        "curve_seeds": "0",
        "evals_per_run": 1,
        "validation_corpus": 200,
    },
}


def apply_profile(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the knobs the command line left unset (None) from args.profile; idempotent."""
    name = getattr(args, "profile", None) or "full"
    if name not in PROFILES:
        raise SystemExit(f"unknown profile {name!r}: use one of {', '.join(PROFILES)}")
    for knob, value in PROFILES[name].items():
        if getattr(args, knob, None) is None:
            setattr(args, knob, value)
    return args
