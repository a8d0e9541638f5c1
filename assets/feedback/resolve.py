"""From the log's aggregated pairs to what training and monitoring read: targets found in the corpus, test
queries removed, grades given. Pure functions, no Dagster.

- A target names a document (`doc_id`), a chunk (`chunk_id`), or a passage's text (`passage`), which is
  matched to a chunk: the chunk with the same text (spaces and case aside), else the chunk that holds most of
  the passage's 8-word shingles (at least half of them). A target not in the corpus is counted
  (`unknown_document`, `unknown_chunk`, `passage_not_found`, in interactions) and left out.
- **No leakage**: a logged query whose normalised text equals a query of any human test set is dropped
  (`test_query`), whatever it names: the test sets stay unseen by training and by the query writer.
- A BEIR folder's `qrels/train.tsv` and `qrels/dev.tsv` are judged feedback (`judged_rows`): a qrels score
  s > 0 becomes grade min(3, max(2, s)), a positive at the default threshold.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict

import pandas as pd

from assets.common import stable_hash
from assets.feedback.log import AGGREGATE_COLUMNS, SignalWeights, label_of, pair_grade
from resources.prompts import normalise_query

PAIR_COLUMNS = ["query_id", "doc_id", "chunk_id", "grade", "label", "weak", "n_interactions", "source"]
QUERY_COLUMNS = ["query_id", "text", "norm", "n_interactions", "n_sessions", "first_seen", "last_seen", "daily",
                 "n_positive", "n_negative", "source"]
SHINGLE = 8
_WORD = re.compile(r"\w+")


def logged_query_id(norm: str) -> str:
    """The same id for the same normalised text, in every file and on every night."""
    return "log-" + stable_hash([norm])


class PassageMatcher:
    """Passage text -> chunk id: the same text, else the chunk holding most of its shingles (>= half)."""

    def __init__(self, chunks: pd.DataFrame):
        self.ids = chunks["chunk_id"].astype(str).tolist()
        self.texts = chunks["text"].tolist()
        self.exact = {" ".join(_WORD.findall(t.lower())): c for c, t in zip(self.ids, self.texts)}
        self._shingles: dict[tuple, list[int]] | None = None

    @staticmethod
    def shingles(words: list[str]) -> set[tuple]:
        return {tuple(words[i:i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}

    def match(self, passage: str) -> str | None:
        words = _WORD.findall(passage.lower())
        if not words:
            return None
        if (hit := self.exact.get(" ".join(words))) is not None:
            return hit
        if self._shingles is None:   # built on the first passage that is not an exact copy
            self._shingles = defaultdict(list)
            for i, text in enumerate(self.texts):
                for s in self.shingles(_WORD.findall(text.lower())):
                    self._shingles[s].append(i)
        mine = self.shingles(words)
        votes = Counter(i for s in mine for i in self._shingles.get(s, ()))
        if not votes:
            return None
        best, n = votes.most_common(1)[0]
        return self.ids[best] if n >= 0.5 * len(mine) else None


def judged_rows(query_sets: list, source_of) -> pd.DataFrame:
    """Aggregate rows (AGGREGATE_COLUMNS) for qrels used as judged feedback; `source_of(set) -> "qrels/train"`."""
    rows = []
    for qs in query_sets:
        for qid, rel in qs.qrels.items():
            text = qs.queries.get(qid)
            if not text or not normalise_query(text):
                continue
            for doc_id, score in rel.items():
                rows.append({"norm": normalise_query(text), "text": " ".join(text.split()), "query_id": qid,
                             "target_kind": "doc_id", "target": str(doc_id), "cited": 0, "clicked": 0,
                             "thumbs_up": 0, "thumbs_down": 0, "shown": 0, "skipped_above": 0,
                             "max_grade": min(3, max(2, int(score))), "n_interactions": 1,
                             "source": source_of(qs)})
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)


def resolve_targets(agg: pd.DataFrame, documents: pd.DataFrame, chunks: pd.DataFrame,
                    skipped: Counter) -> pd.DataFrame:
    """agg with `doc_id` and `chunk_id` (None for a document-level target); unknown targets dropped, counted."""
    doc_ids = set(documents["doc_id"].astype(str))
    chunk_doc = dict(zip(chunks["chunk_id"].astype(str), chunks["doc_id"].astype(str)))
    matcher = PassageMatcher(chunks) if (agg["target_kind"] == "passage").any() else None
    docs, chunk_ids, keep = [], [], []
    for kind, target, n in zip(agg["target_kind"], agg["target"], agg["n_interactions"]):
        doc = chunk = None
        if kind == "doc_id":
            doc = target if target in doc_ids else None
            reason = "unknown_document"
        elif kind == "chunk_id":
            chunk = target if target in chunk_doc else None
            reason = "unknown_chunk"
        else:
            chunk = matcher.match(target)
            reason = "passage_not_found"
        if chunk is not None:
            doc = chunk_doc[chunk]
        if doc is None:
            skipped[reason] += int(n)
        docs.append(doc)
        chunk_ids.append(chunk)
        keep.append(doc is not None)
    out = agg.assign(doc_id=docs, chunk_id=chunk_ids)
    return out[pd.Series(keep, index=out.index, dtype=bool)].reset_index(drop=True)


def feedback_frames(agg: pd.DataFrame, daily: pd.DataFrame, documents: pd.DataFrame, chunks: pd.DataFrame,
                    test_queries: set[str], weights: SignalWeights) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(feedback_pairs, logged_queries, counts). `test_queries` are normalised texts of every human test set."""
    counts: Counter = Counter()
    leaked = agg["norm"].isin(test_queries)
    counts["test_query"] = int(agg.loc[leaked, "n_interactions"].sum())
    counts["test_queries_dropped"] = int(agg.loc[leaked, "norm"].nunique())
    agg = agg[~leaked]
    daily = daily[~daily["norm"].isin(test_queries)]
    resolved = resolve_targets(agg, documents, chunks, counts)
    graded = [pair_grade(r, weights) for r in resolved.to_dict("records")]
    resolved = resolved.assign(grade=[g for g, _ in graded], weak=[w for _, w in graded])
    counts["shown_only"] = int(resolved["grade"].isna().sum())
    labelled = resolved[resolved["grade"].notna()].copy()
    labelled["grade"] = labelled["grade"].astype(int)
    labelled["query_id"] = labelled["norm"].map(logged_query_id)
    labelled["label"] = [label_of(g, weights.relevant_grade) for g in labelled["grade"]]
    # Two targets can name one chunk (its id and its text): keep the pair once, at its highest grade.
    labelled = labelled.sort_values(["grade", "weak"], ascending=[False, True], kind="stable")
    labelled["chunk_key"] = labelled["chunk_id"].fillna("")
    pairs = labelled.drop_duplicates(["query_id", "doc_id", "chunk_key"])[PAIR_COLUMNS] \
        .sort_values(["query_id", "doc_id"], kind="stable").reset_index(drop=True)
    queries = logged_queries_frame(agg, daily, pairs)
    return pairs, queries, dict(counts)


def logged_queries_frame(agg: pd.DataFrame, daily: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per logged query (QUERY_COLUMNS): its traffic, its days and its labelled pairs."""
    if agg.empty:
        return pd.DataFrame(columns=QUERY_COLUMNS)
    first = agg.groupby("norm", sort=True).agg(text=("text", "first"),
                                               source=("source", lambda s: "+".join(sorted(set("+".join(s).split("+"))))),
                                               pair_rows=("n_interactions", "sum"))
    by_label = pairs.groupby(["query_id", "label"]).size().unstack(fill_value=0) if len(pairs) else pd.DataFrame()
    dated = daily[daily["date"] != ""]
    days = {n: dict(zip(g["date"], g["n"].astype(int))) for n, g in dated.groupby("norm")}
    traffic = daily.groupby("norm")[["n", "sessions"]].sum() if len(daily) else pd.DataFrame(columns=["n", "sessions"])
    rows = []
    for norm, r in first.iterrows():
        qid = logged_query_id(norm)
        d = days.get(norm, {})
        n = int(traffic["n"].get(norm, r["pair_rows"])) if len(traffic) else int(r["pair_rows"])
        rows.append({"query_id": qid, "text": r["text"], "norm": norm, "n_interactions": n,
                     "n_sessions": int(traffic["sessions"].get(norm, 0)) if len(traffic) else 0,
                     "first_seen": pd.Timestamp(min(d), tz="UTC") if d else pd.NaT,
                     "last_seen": pd.Timestamp(max(d), tz="UTC") if d else pd.NaT, "daily": d,
                     "n_positive": int(by_label.loc[qid, "positive"]) if "positive" in by_label and qid in by_label.index else 0,
                     "n_negative": int(by_label.loc[qid, "negative"]) if "negative" in by_label and qid in by_label.index else 0,
                     "source": r["source"]})
    out = pd.DataFrame(rows, columns=QUERY_COLUMNS)
    out["first_seen"] = pd.to_datetime(out["first_seen"], utc=True)
    out["last_seen"] = pd.to_datetime(out["last_seen"], utc=True)
    return out
