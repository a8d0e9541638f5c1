"""A simulated feedback log, for development only: the shared test collections have human queries and
relevance labels but no logs, so a BEIR folder's human queries are split by a stable hash of their id into

- a **logged** part, written as a feedback log in the public schema: for each query, its top-`shown_depth`
  documents by TF-IDF (scikit-learn) are `shown` at their rank, and every document the qrels judge relevant
  is `cited` (at its rank when it was shown); one file per simulated day;
- a **held-out** part, written as a BEIR folder (the corpus linked, not copied; only the held-out queries and
  their qrels in qrels/test.tsv): never logged, never trained on, never a few-shot example, and the only
  part a report may quote.

Real users bring their own log. Never tune defaults on the held-out part.
"""
from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from assets.common import stable_fraction
from assets.corpus.readers import read_beir_queries, read_documents


def split_queries(qids, logged_share: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(logged, held out) by a stable hash of the query id: the same split on every machine and every run."""
    logged = [q for q in qids if stable_fraction(str(q), seed + 101) < logged_share]
    return logged, [q for q in qids if q not in set(logged)]


def tfidf_ranker(docs):
    """rank(query, k) -> doc ids by TF-IDF cosine: the simulated production retriever that decides what is shown."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    ids = docs["doc_id"].tolist()
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english")
    mat = vec.fit_transform((docs["title"] + " " + docs["text"]).tolist())

    def rank(query: str, k: int) -> list[str]:
        scores = (mat @ vec.transform([query]).T).toarray().ravel()
        top = scores.argsort()[::-1][:k]
        return [ids[i] for i in top if scores[i] > 0]

    return rank


def simulate_log(beir: str | Path, out: str | Path, logged_share: float = 2 / 3, seed: int = 0, shown_depth: int = 10,
                 days: int = 28, start: date = date(2026, 11, 1)) -> dict:
    """Write <out>/log/<day>.jsonl and the held-out BEIR folder <out>/<name>_heldout; return what was written."""
    beir, out = Path(beir), Path(out)
    docs, _ = read_documents(beir)
    sets = [s for s in read_beir_queries(beir) if not s.name.endswith(("/train", "/dev"))]
    queries = {q: t for s in sets for q, t in s.queries.items()}
    qrels: dict[str, dict[str, int]] = {}
    for s in sets:
        for q, rel in s.qrels.items():
            qrels.setdefault(q, {}).update(rel)
    logged, held = split_queries(sorted(queries, key=str), logged_share, seed)
    rank = tfidf_ranker(docs)
    by_day: dict[str, list[dict]] = {}
    for q in logged:
        day = (start + timedelta(days=int(stable_fraction(q, seed + 202) * days))).isoformat()
        shown = rank(queries[q], shown_depth)
        position = {d: i + 1 for i, d in enumerate(shown)}
        base = {"query": queries[q], "query_id": str(q), "session_id": f"s-{q}", "timestamp": f"{day}T12:00:00Z"}
        rows = [{**base, "doc_id": d, "signal": "shown", "rank": position[d]} for d in shown if d not in qrels[q]]
        rows += [{**base, "doc_id": d, "signal": "cited", **({"rank": position[d]} if d in position else {})}
                 for d in sorted(qrels[q])]
        by_day.setdefault(day, []).extend(rows)
    log_dir = out / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    for day, rows in sorted(by_day.items()):
        (log_dir / f"{day}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    heldout = out / f"{beir.resolve().name}_heldout"
    (heldout / "qrels").mkdir(parents=True, exist_ok=True)
    link = heldout / "corpus.jsonl"
    if not link.exists():
        link.symlink_to((beir / "corpus.jsonl").resolve())
    (heldout / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in held))
    (heldout / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q in held for d, g in sorted(qrels[q].items())))
    return {"log": str(log_dir), "heldout": str(heldout), "logged_queries": len(logged), "heldout_queries": len(held),
            "log_rows": sum(map(len, by_day.values())), "days": len(by_day)}
