"""Chunkers by name: the shipped token windows at any size, and sentences packed up to a token budget.

A chunker is named by what it does, so a report row says how its chunks were cut:

- ``tokens-<max>-<overlap>`` (e.g. ``tokens-256-32``, the shipped default): the token windows of chunking.py.
- ``sentences-<max>`` (e.g. ``sentences-256``): whole sentences packed into chunks of at most ``max`` tokens
  (the encoder's own tokens, counted as chunking.py counts them), no overlap. Its rules:

  - a sentence ends at ``.``, ``!`` or ``?`` (closing quotes and brackets included) followed by whitespace,
    unless the word before is an abbreviation (``e.g.``, ``Fig.``, ``et al.``, a capital initial); a
    paragraph (blank line) and a Markdown heading line always end one;
  - a heading (a Markdown heading line, or a one-line block that is no sentence, e.g. a title) starts a new
    chunk and stays with the text after it: sections are not mixed, and a chunk is a lone heading only when the
    heading and the sentence after it do not fit together;
  - a paragraph that fits in a chunk of its own is never split: when it does not fit in what is left of the
    current chunk, the chunk ends before it; a longer paragraph is packed sentence by sentence;
  - a sentence is split only when it alone exceeds the budget, then into token windows (no overlap) that
    break at the best word boundary, as chunking.py's windows do.

  Every token of a document is in exactly one chunk; only a document shorter than ``min_tokens`` is
  dropped (as the token windows drop it). Ids are content hashes, as for every chunker, so a chunk that two
  chunkers cut alike (a short document kept whole) is the same row with the same vector.
"""
from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass

import pandas as pd

from assets.corpus.chunking import (PARAGRAPH, SENTENCE, _windows, chunk_documents, chunk_frame, content_hash,
                                    titled_documents, tokenized)

SECTION = PARAGRAPH + 1            # a Markdown heading: a stronger break than a paragraph
_NAME = re.compile(r"^(?:tokens-(\d+)-(\d+)|sentences-(\d+))$")
_BLOCK = re.compile(r"\n[ \t\r\f\v]*\n")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]}\u201d\u2019]*(?=\s)")
HEADING_WORDS = 20           # a one-line block of at most this many words, without a sentence end, is a heading
ABBREVIATIONS = {"e.g", "i.e", "etc", "vs", "fig", "figs", "eq", "eqs", "ref", "refs", "al", "cf", "approx",
                 "dr", "mr", "mrs", "ms", "prof", "no", "nos", "vol", "pp", "sec", "ch"}


@dataclass(frozen=True)
class Chunker:
    method: str          # "tokens" | "sentences"
    max_tokens: int
    overlap: int = 0     # token windows only: tokens shared with the next window

    @property
    def name(self) -> str:
        return f"tokens-{self.max_tokens}-{self.overlap}" if self.method == "tokens" else f"sentences-{self.max_tokens}"

    def chunk(self, docs: pd.DataFrame, tokenizer, min_tokens: int = 8) -> tuple[pd.DataFrame, dict]:
        """(chunk_id, doc_id, chunk_index, text, n_tokens) of ``docs`` + stats, as chunk_documents returns them."""
        if self.method == "tokens":
            return chunk_documents(docs, tokenizer=tokenizer, max_tokens=self.max_tokens, overlap=self.overlap,
                                   min_tokens=min_tokens)
        return chunk_sentences(docs, tokenizer=tokenizer, max_tokens=self.max_tokens, min_tokens=min_tokens)


def chunker(method: str, max_tokens: int, overlap: int = 0) -> Chunker:
    """A checked Chunker (the shipped one comes from ChunkingConfig through here)."""
    if method not in ("tokens", "sentences"):
        raise ValueError(f"chunking method {method!r} is unknown: use 'tokens' (overlapping token windows) or "
                         "'sentences' (whole sentences packed up to max_tokens)")
    if max_tokens < 1 or (method == "tokens" and not 0 <= overlap < max_tokens):
        raise ValueError(f"Need max_tokens >= 1 and 0 <= overlap < max_tokens, got max_tokens={max_tokens}, "
                         f"overlap={overlap}: lower overlap (32 is usual for 256-token chunks).")
    return Chunker(method, max_tokens, overlap if method == "tokens" else 0)


def parse_chunker(name: str) -> Chunker:
    """The chunker a name such as "tokens-128-16" or "sentences-256" stands for."""
    m = _NAME.match(name.strip())
    if not m:
        raise ValueError(f"unknown chunker {name!r}: use 'tokens-<max tokens>-<overlap>' (e.g. tokens-128-16), "
                         "'sentences-<max tokens>' (e.g. sentences-256), or 'shipped' (the chunks asset's own)")
    if m.group(3):
        return chunker("sentences", int(m.group(3)))
    return chunker("tokens", int(m.group(1)), int(m.group(2)))


def _is_abbreviation(piece: str, dot: int) -> bool:
    tail = piece[max(0, dot - 10):dot]          # the longest abbreviation is 6 characters
    word = "" if not tail or tail[-1].isspace() else tail.split()[-1].lstrip("([{\"'")
    return word.casefold() in ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _looks_like_heading(line: str) -> bool:
    """A one-line block that is no sentence: a Markdown heading, a document title, a plain-text heading."""
    line = line.strip()
    return "\n" not in line and len(line.split()) <= HEADING_WORDS and not line.endswith((".", "!", "?", ";", ","))


def _spans(text: str, separator: re.Pattern) -> list[tuple[int, int]]:
    cuts = [(m.start(), m.end()) for m in separator.finditer(text)]
    return list(zip([0, *(e for _, e in cuts)], [*(s for s, _ in cuts), len(text)]))


def sentence_units(text: str) -> list[tuple[int, int, int]]:
    """(start, end, break before) of every sentence of ``text``, in order: character spans without surrounding
    whitespace. The break is SECTION before a heading (a Markdown heading line, or a one-line block that is no
    sentence, such as a title), PARAGRAPH at any other block start, else SENTENCE."""
    units = []
    for block_start, block_end in _spans(text, _BLOCK):
        block = text[block_start:block_end]
        cuts = {0, len(block)}
        for m in _HEADING.finditer(block):   # a heading line is a piece of its own
            nl = block.find("\n", m.start())
            cuts |= {m.start(), len(block) if nl < 0 else nl + 1}
        cuts = sorted(cuts)
        for a, b in zip(cuts, cuts[1:]):
            piece = block[a:b]
            if not piece.strip():
                continue
            level = SECTION if _HEADING.match(piece) or _looks_like_heading(piece) else PARAGRAPH
            ends = [m.end() for m in _SENTENCE_END.finditer(piece) if not _is_abbreviation(piece, m.start())]
            for s, e in zip([0, *ends], [*ends, len(piece)]):
                sentence = piece[s:e]
                if sentence.strip():
                    lead = len(sentence) - len(sentence.lstrip())
                    start = block_start + a + s + lead
                    units.append((start, start + len(sentence.strip()), level))
                    level = SENTENCE
    return units


def _token_units(text: str, offsets) -> list[tuple[int, int, int]]:
    """Sentence units as [first token, end token) ranges, with their break level."""
    starts = [o[0] for o in offsets]
    units = [(bisect_left(starts, s), bisect_left(starts, e), level) for s, e, level in sentence_units(text)]
    return [u for u in units if u[1] > u[0]]      # a unit without tokens: only characters the tokenizer drops


def pack_units(units: list[tuple[int, int, int]], max_tokens: int, split) -> list[tuple[int, int]]:
    """[start, end) token ranges of the chunks: ``units`` packed under the rules in the module docstring.
    ``split(start, end)`` cuts an over-budget token range into windows. A chunk holding only headings so far
    ends only before a sentence that fits the budget alone but not after them (a sentence is never split to
    keep a heading company); an over-budget sentence is split with the headings before it in its first window."""
    bounds = [k for k, u in enumerate(units) if u[2] >= PARAGRAPH] + [len(units)]
    paragraph_end = {a: units[b - 1][1] for a, b in zip(bounds, bounds[1:])}   # a block's first unit -> its end
    spans, start, end, has_text, in_heading = [], None, None, False, False
    for k, (s, e, level) in enumerate(units):
        if level >= PARAGRAPH:
            in_heading = level == SECTION
        if start is not None:
            block_end = paragraph_end.get(k)
            if ((has_text and (e - start > max_tokens                         # the unit does not fit
                               or level == SECTION                            # a new section
                               or (block_end is not None                      # a block that fits alone but
                                   and block_end - start > max_tokens >= block_end - s)))   # not here
                    or e - start > max_tokens >= e - s):      # headings + a sentence that fits only alone
                spans.append((start, end))
                start, has_text = None, False
        if start is None:
            start = s
        if e - start > max_tokens:           # a sentence over the budget (with the headings before it, if any)
            *full, (start, e) = split(start, e)
            spans += full
        end = e
        has_text = has_text or not in_heading
    if start is not None:
        spans.append((start, end))
    return spans


def chunk_sentences(docs: pd.DataFrame, *, tokenizer, max_tokens: int = 256,
                    min_tokens: int = 8) -> tuple[pd.DataFrame, dict]:
    """Chunks of ``docs`` (doc_id, title, text) of whole sentences, at most ``max_tokens`` tokens each, + stats."""
    if max_tokens < 1:
        raise ValueError(f"Need max_tokens >= 1, got {max_tokens}")
    doc_ids, texts = titled_documents(docs)
    rows, too_short = [], 0
    for doc_id, (text, offsets) in zip(doc_ids, tokenized(texts, tokenizer)):
        if len(offsets) < min_tokens:
            too_short += bool(offsets)       # as the token windows count it: a piece dropped, not a blank text
            continue
        def split(start, end, text=text, offsets=offsets):   # no overlap: the windows are one long sentence
            return [(start + a, start + b) for a, b in _windows(text, offsets[start:end], max_tokens, 0)]

        for index, (s, e) in enumerate(pack_units(_token_units(text, offsets), max_tokens, split)):
            chunk = text[offsets[s][0]:offsets[e - 1][1]]
            rows.append((content_hash(chunk), doc_id, index, chunk, e - s))
    return chunk_frame(rows, len(docs), too_short)
