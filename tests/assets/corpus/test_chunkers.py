"""The chunkers by name, with the real all-MiniLM-L6-v2 tokenizer: budgets, overlap, whole sentences, coverage, ids."""
import random
import re

import pandas as pd
import pytest

from assets.corpus.chunkers import Chunker, chunker, parse_chunker, sentence_units
from assets.corpus.chunking import chunk_documents, content_hash, titled_documents


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["doc_id", "title", "text"])


def sentence(i: int, words: int = 6, doc: str = "") -> str:
    return f"Sentence {i} says " + " ".join(f"{doc}w{i}x{k}" for k in range(words)) + "."


def random_documents(seed: int, n: int = 12) -> pd.DataFrame:
    """Documents of paragraphs of sentences of random lengths, some far over any budget, some headings."""
    rng = random.Random(seed)
    rows = []
    for d in range(n):
        blocks, i = [], 0
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.3:
                blocks.append(f"## Part {i}")
            lengths = [rng.choice([2, 5, 12, 40]) for _ in range(rng.randint(1, 6))]
            blocks.append(" ".join(sentence(i := i + 1, n, f"d{d}") for n in lengths))
        rows.append((f"d{d}", rng.choice(["", f"Title of {d}"]), "\n\n".join(blocks)))
    return frame(*rows)


def located(text: str, chunks: list[str]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for chunk in chunks:
        start = text.index(chunk, pos)
        out.append((start, start + len(chunk)))
        pos = start + 1
    return out


def test_names_parse_to_the_chunkers_they_say_and_back():
    assert parse_chunker("tokens-128-16") == Chunker("tokens", 128, 16)
    assert parse_chunker(" sentences-256 ") == Chunker("sentences", 256, 0)
    for name in ("tokens-512-64", "sentences-100"):
        assert parse_chunker(name).name == name
    assert chunker("sentences", 256, overlap=32).name == "sentences-256"   # no overlap between whole sentences


@pytest.mark.parametrize("name,wording", [("windows-256", "unknown chunker 'windows-256': use 'tokens-"),
                                          ("tokens-64-64", "0 <= overlap < max_tokens"),
                                          ("sentences-0", "max_tokens >= 1")])
def test_a_bad_name_says_what_is_allowed(name, wording):
    with pytest.raises(ValueError, match=re.escape(wording)):
        parse_chunker(name)


def test_an_unknown_method_says_which_exist():
    with pytest.raises(ValueError, match="use 'tokens' .* or 'sentences'"):
        chunker("paragraphs", 256)


@pytest.mark.parametrize("name", ["tokens-32-8", "tokens-64-0", "sentences-32", "sentences-64"])
def test_every_chunk_fits_the_budget_counted_as_the_encoder_counts(tokenizer, name):
    spec = parse_chunker(name)
    chunks, stats = spec.chunk(random_documents(0), tokenizer)
    assert len(chunks) > 20 and stats["max_tokens_seen"] <= spec.max_tokens
    for text, n in zip(chunks["text"], chunks["n_tokens"]):
        assert n == n_tokens(tokenizer, text) <= spec.max_tokens


def test_token_windows_by_name_are_the_shipped_windows_with_their_overlap(tokenizer):
    docs = random_documents(1)
    by_name, _ = parse_chunker("tokens-48-12").chunk(docs, tokenizer)
    direct, _ = chunk_documents(docs, tokenizer=tokenizer, max_tokens=48, overlap=12)
    assert by_name.equals(direct)
    doc_ids, texts = titled_documents(docs)
    shared = 0
    for doc_id, text in zip(doc_ids, texts):
        spans = located(text, by_name.loc[by_name["doc_id"] == doc_id, "text"].tolist())
        for (s0, e0), (s1, _) in zip(spans, spans[1:]):
            assert s1 < e0 and n_tokens(tokenizer, text[s1:e0]) <= 12     # neighbours overlap, by at most 12
            shared += 1
    assert shared > 10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sentences_cover_every_token_once_and_split_only_a_sentence_over_the_budget(tokenizer, seed):
    docs = random_documents(seed)
    budget = 40
    chunks, stats = parse_chunker(f"sentences-{budget}").chunk(docs, tokenizer)
    doc_ids, texts = titled_documents(docs)
    assert stats["duplicates_removed"] == 0 and stats["too_short_dropped"] == 0
    long_split = 0
    for doc_id, text in zip(doc_ids, texts):
        mine = chunks[chunks["doc_id"] == doc_id]
        assert mine["chunk_index"].tolist() == list(range(len(mine)))
        spans = located(text, mine["text"].tolist())
        # covered, in order, without overlap: the chunks are the document's text, whitespace between them aside
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(e0 <= s1 and not text[e0:s1].strip() for (_, e0), (s1, _) in zip(spans, spans[1:]))
        assert sum(mine["n_tokens"]) == n_tokens(tokenizer, text)
        units = sentence_units(text)
        starts, ends = {s for s, _, _ in units}, {e for _, e, _ in units}
        for s, e in spans:
            inside = [u for u in units if u[0] < s < u[1] or u[0] < e < u[1]]   # a cut inside a sentence
            for u in inside:
                assert n_tokens(tokenizer, text[u[0]:u[1]]) > budget, f"split a sentence that fits: {text[u[0]:u[1]]!r}"
                long_split += 1
            if not inside:
                assert s in starts and e in ends
    assert long_split > 0   # the documents do have sentences over the budget (40-word ones)


def test_sentences_keep_abbreviations_and_whole_sentences_in_a_chunk(tokenizer):
    text = "Lift is measured, e.g. in tunnels. Fig. 3 shows the stall! Is it late? It is, cf. Smith et al. 2020."
    assert [text[s:e] for s, e, _ in sentence_units(text)] == [
        "Lift is measured, e.g. in tunnels.", "Fig. 3 shows the stall!", "Is it late?", "It is, cf. Smith et al. 2020."]
    chunks, _ = parse_chunker("sentences-14").chunk(frame(("d", "", text)), tokenizer)
    assert chunks["text"].tolist() == ["Lift is measured, e.g. in tunnels.", "Fig. 3 shows the stall! Is it late?",
                                       "It is, cf. Smith et al. 2020."]


def test_a_paragraph_that_fits_alone_is_not_split_and_a_heading_stays_with_its_text(tokenizer):
    p1 = " ".join(sentence(i, 2) for i in range(3))          # three sentences, ~20 tokens
    p2 = " ".join(sentence(i, 2) for i in range(3, 6))
    p3 = " ".join(sentence(i, 2) for i in range(6, 8))
    text = f"# Wings\n\n{p1}\n\n{p2}\n\n## Tails\n{p3}"
    chunks, _ = parse_chunker("sentences-40").chunk(frame(("d", "", text)), tokenizer)
    # p1 + p2 would exceed 40 tokens: p2 starts a chunk of its own rather than being cut after its first sentences;
    # the section "Tails" starts a chunk although it would fit after p2
    assert chunks["text"].tolist() == [f"# Wings\n\n{p1}", p2, f"## Tails\n{p3}"]
    titled, _ = parse_chunker("sentences-40").chunk(frame(("d", "Wing notes", f"{p1}\n\n{p2}")), tokenizer)
    assert titled["text"].iloc[0] == f"Wing notes\n\n{p1}"      # the title is a heading: never a chunk of its own


def test_ids_are_content_hashes_stable_across_runs_and_document_order(tokenizer):
    docs = random_documents(3)
    for name in ("sentences-48", "tokens-48-8"):
        first, _ = parse_chunker(name).chunk(docs, tokenizer)
        again, _ = parse_chunker(name).chunk(docs.iloc[::-1], tokenizer)
        assert first["chunk_id"].tolist() == [content_hash(t) for t in first["text"]] and first["chunk_id"].is_unique
        assert set(first["chunk_id"]) == set(again["chunk_id"])


def test_a_document_that_fits_is_one_chunk_with_the_same_id_under_every_chunker(tokenizer):
    docs = frame(("a", "On lift", "Lift depends on the angle of attack. It falls after the stall."), ("t", "", "Tiny."))
    ids = {}
    for name in ("tokens-256-32", "tokens-128-16", "sentences-256"):
        chunks, stats = parse_chunker(name).chunk(docs, tokenizer)
        assert chunks["doc_id"].tolist() == ["a"] and stats["too_short_dropped"] == 1   # "Tiny." < 8 tokens
        ids[name] = chunks["chunk_id"].iloc[0]
    assert len(set(ids.values())) == 1     # so its vector is embedded once for all of them


def test_the_shipped_chunker_is_a_chunking_config_choice():
    from assets.corpus import ChunkingConfig

    assert ChunkingConfig().chunker().name == "tokens-256-32"          # the default is unchanged
    assert ChunkingConfig(method="sentences", max_tokens=200).chunker() == Chunker("sentences", 200, 0)
    with pytest.raises(ValueError, match="chunking method 'words' is unknown"):
        ChunkingConfig(method="words").chunker()
