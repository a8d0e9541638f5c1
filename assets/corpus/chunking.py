"""Token-aware chunking: documents -> retrieval units an encoder can read whole.

A bi-encoder sees at most its max sequence length (256 word pieces for all-MiniLM-L6-v2) and silently
drops the rest, so documents are cut into windows counted in the *encoder's own tokens*, not in words or
characters. Each window:

- holds at most ``max_tokens`` tokens (counted without [CLS]/[SEP]);
- ends at the best break in its second half: a paragraph end, else a sentence end, else a space between
  words; only a run of ``max_tokens // 2`` tokens without any whitespace (a URL, CJK text) is cut hard;
- shares up to ``overlap`` tokens with the next window, which starts at a word boundary, so a sentence cut
  in two is still whole in one of them;
- is cut from the ORIGINAL text through the tokenizer's character offsets: no detokenisation artefacts
  (lower-casing, ``##`` pieces, lost accents).

The document title is prepended to the first window ("Title\n\ntext") unless the text already opens with
it (BEIR corpora and Markdown headings often do). A chunk's id is the hash of its normalised text, so ids
are stable across runs and machines and identical chunks (boilerplate, copied pages) collapse into one.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import pandas as pd

_WS = re.compile(r"\s+")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
_SENTENCE_END = ".!?:;"
_CLOSERS = "\"')]}\u201d\u2019"
BATCH = 512  # documents per tokenizer call: the Rust tokenizer parallelises inside one batch

# break quality before a token, best last
HARD, WORD, SENTENCE, PARAGRAPH = 0, 1, 2, 3


def _normalise(text: str) -> str:
    return _WS.sub(" ", text.strip())


def content_hash(text: str, n: int = 16) -> str:
    """First ``n`` hex digits of the sha256 of ``text`` with whitespace stripped and collapsed."""
    return hashlib.sha256(_normalise(text).encode("utf-8")).hexdigest()[:n]


def load_tokenizer(model_path: str | Path):
    """The Hugging Face tokenizer saved with the encoder at ``model_path`` (a local folder)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def _untruncated(tokenizer):
    """A bare `tokenizers.Tokenizer` loaded from tokenizer.json often truncates (MiniLM's at 128) and pads:
    a copy without either, so the caller's tokenizer is left as it was. Others are returned as they are."""
    if hasattr(tokenizer, "encode_batch") and (tokenizer.truncation or tokenizer.padding):
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.no_truncation()
        tokenizer.no_padding()
    return tokenizer


def _offsets(tokenizer, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Character offsets of each text's tokens, without special tokens, batched."""
    if hasattr(tokenizer, "encode_batch"):  # a bare `tokenizers.Tokenizer`, see _untruncated
        return [enc.offsets for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]
    enc = tokenizer(
        texts,
        add_special_tokens=False,  # [CLS]/[SEP] are added by the encoder, not part of the budget here
        return_offsets_mapping=True,  # needs a fast (Rust) tokenizer
        return_attention_mask=False,
        return_token_type_ids=False,
        truncation=False,  # a 10,000-token document must be seen whole to be chunked
        verbose=False,  # silences "sequence longer than the model maximum": that is why we chunk
    )
    return enc["offset_mapping"]


def _with_title(title: str, text: str) -> str:
    title = title.strip()
    if not title:
        return text
    t = _normalise(title).casefold()
    if t in _normalise(text[: len(title) + 200]).casefold()[: len(t) + 8]:
        return text  # already opens with its title (e.g. "# Title" or a BEIR abstract)
    return f"{title}\n\n{text}"


def _break_quality(text: str, prev_end: int, start: int) -> int:
    """How good a cut is between a token ending at ``prev_end`` and the next starting at ``start``."""
    gap = text[prev_end:start]
    if not gap or not gap.isspace():
        return HARD  # inside a word, or between a word and its punctuation
    if _PARAGRAPH.search(gap):
        return PARAGRAPH
    before = text[max(0, prev_end - 3):prev_end].rstrip(_CLOSERS)
    if before and before[-1] in _SENTENCE_END:
        return SENTENCE
    return WORD


def _windows(text: str, offsets, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token ranges covering ``offsets`` under the rules in the module docstring."""
    n = len(offsets)
    spans = []
    start = 0
    while start < n:
        if n - start <= max_tokens:
            spans.append((start, n))
            break
        limit = start + max_tokens
        lowest = start + max(overlap + 1, max_tokens // 2)  # never end so early that the next window stalls
        end, best = limit, HARD
        for i in range(limit, lowest - 1, -1):  # break before token i; latest of the best quality wins
            q = _break_quality(text, offsets[i - 1][1], offsets[i][0])
            if q > best:
                end, best = i, q
                if q == PARAGRAPH:
                    break
        spans.append((start, end))
        # the next window starts inside the overlap: at its earliest sentence start, else earliest word start
        nxt, nxt_q = end, HARD
        for i in range(max(end - overlap, start + 1), end):
            q = min(_break_quality(text, offsets[i - 1][1], offsets[i][0]), SENTENCE)
            if q > nxt_q:
                nxt, nxt_q = i, q
                if q == SENTENCE:
                    break
        start = nxt
    return spans


def titled_documents(docs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(doc ids, texts with their titles prepended as in the module docstring) of ``docs`` (doc_id, title, text)."""
    titles = docs["title"].fillna("").astype(str) if "title" in docs else pd.Series("", index=docs.index)
    texts = [_with_title(t, x) for t, x in zip(titles, docs["text"].fillna("").astype(str))]
    return docs["doc_id"].astype(str).tolist(), texts


def tokenized(texts: list[str], tokenizer):
    """(text, character offsets of its non-empty tokens) for every text, tokenized BATCH at a time."""
    tokenizer = _untruncated(tokenizer)
    for b in range(0, len(texts), BATCH):
        batch = texts[b:b + BATCH]
        for text, offsets in zip(batch, _offsets(tokenizer, batch)):
            yield text, [o for o in offsets if o[1] > o[0]]  # zero-width tokens carry no text


def chunk_frame(rows: list[tuple[str, str, int, str, int]], n_docs: int, too_short: int) -> tuple[pd.DataFrame, dict]:
    """The chunks table from (chunk_id, doc_id, chunk_index, text, n_tokens) rows, duplicates dropped, + stats."""
    chunks = pd.DataFrame(rows, columns=["chunk_id", "doc_id", "chunk_index", "text", "n_tokens"])
    n_before = len(chunks)
    chunks = chunks.drop_duplicates("chunk_id", keep="first").reset_index(drop=True)
    chunks = chunks.astype({"chunk_index": "int64", "n_tokens": "int64"})
    stats = {
        "n_docs": n_docs,
        "n_chunks": len(chunks),
        "duplicates_removed": n_before - len(chunks),
        "too_short_dropped": too_short,
        "mean_tokens": float(chunks["n_tokens"].mean()) if len(chunks) else 0.0,
        "max_tokens_seen": int(chunks["n_tokens"].max()) if len(chunks) else 0,
    }
    return chunks, stats


def chunk_documents(
    docs: pd.DataFrame,
    *,
    tokenizer,
    max_tokens: int = 256,
    overlap: int = 32,
    min_tokens: int = 8,
) -> tuple[pd.DataFrame, dict]:
    """Chunks of ``docs`` (doc_id, title, text) as (chunk_id, doc_id, chunk_index, text, n_tokens) + stats."""
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError(
            f"Need max_tokens >= 1 and 0 <= overlap < max_tokens, got max_tokens={max_tokens}, "
            f"overlap={overlap}: lower overlap (32 is usual for 256-token chunks)."
        )
    doc_ids, texts = titled_documents(docs)
    rows, too_short = [], 0
    for doc_id, (text, offsets) in zip(doc_ids, tokenized(texts, tokenizer)):
        for index, (s, e) in enumerate(_windows(text, offsets, max_tokens, overlap)):
            if e - s < min_tokens:
                too_short += 1
                continue
            chunk = text[offsets[s][0]:offsets[e - 1][1]]
            rows.append((content_hash(chunk), doc_id, index, chunk, e - s))
    return chunk_frame(rows, len(docs), too_short)
