"""Tier 1: the pure prompt, parsing and filtering functions of resources/prompts.py."""

import pytest

from resources import prompts
from resources.prompts import (
    QUERY_STYLES,
    build_chat_judge_messages,
    build_chat_query_messages,
    build_fewshot_query_prompt,
    build_ql_judge_prefix,
    filter_queries,
    parse_generated_query,
    parse_judge_json,
    parse_written_queries,
    truncate_passage,
)

PASSAGE = (
    "The boundary layer on a flat plate becomes turbulent at a Reynolds number of about five hundred"
    " thousand, after which skin friction rises sharply and heat transfer to the wall increases."
)


@pytest.mark.parametrize("style,label", [("question", "Question:"), ("keywords", "Search query:"), ("claim", "Claim:")])
def test_fewshot_prompt_ends_with_the_passage_and_an_open_label(style, label):
    prompt = build_fewshot_query_prompt(PASSAGE, style)
    assert prompt.endswith(f"Passage: {PASSAGE}\n{label}")
    assert prompt.count("Passage: ") == 4  # three examples, then ours
    assert prompt.count(label) == 4


def test_fewshot_examples_differ_per_style():
    assert len({build_fewshot_query_prompt(PASSAGE, s) for s in QUERY_STYLES}) == 3


def test_unknown_style_names_the_valid_ones():
    with pytest.raises(ValueError, match="question, keywords, claim"):
        build_fewshot_query_prompt(PASSAGE, "poem")


def test_truncate_passage_cuts_at_a_word_boundary_and_collapses_space():
    text = "alpha  beta\ngamma " * 100
    cut = truncate_passage(text, 50)
    assert len(cut) <= 50
    assert cut.split()[-1] in {"alpha", "beta", "gamma"}  # no half word
    assert "  " not in cut and "\n" not in cut
    assert truncate_passage("short text", 50) == "short text"


def test_prompts_truncate_huge_passages():
    huge = "word " * 100_000
    for prompt in (
        build_fewshot_query_prompt(huge, "question", max_passage_chars=300),
        build_ql_judge_prefix(huge, max_passage_chars=300),
        build_chat_query_messages(huge, "claim", 2, max_passage_chars=300)[-1]["content"],
        build_chat_judge_messages("q", huge, max_passage_chars=300)[-1]["content"],
    ):
        assert len(prompt) < 1500


def test_chat_query_messages_ask_for_n_queries_as_json():
    system, user = build_chat_query_messages(PASSAGE, "keywords", 3)
    assert system["role"] == "system" and user["role"] == "user"
    assert '{"queries"' in system["content"]
    assert user["content"].startswith("Write 3 short keyword queries")
    assert PASSAGE in user["content"]
    with pytest.raises(ValueError, match="n must be at least 1"):
        build_chat_query_messages(PASSAGE, "question", 0)


def test_chat_judge_messages_carry_the_scale_query_and_passage():
    system, user = build_chat_judge_messages("  when does transition happen ", PASSAGE)
    assert "3 = highly relevant" in system["content"] and '"grade"' in system["content"]
    assert user["content"].startswith("Query: when does transition happen\n")
    assert PASSAGE in user["content"]


def test_ql_prefix_puts_the_passage_before_the_question_cue():
    assert build_ql_judge_prefix(PASSAGE) == f"Passage: {PASSAGE}\nA question about this passage:"


def test_prompt_versions_are_distinct():
    versions = [
        prompts.FEWSHOT_QUERY_PROMPT_VERSION,
        prompts.QL_JUDGE_PROMPT_VERSION,
        prompts.CHAT_QUERY_PROMPT_VERSION,
        prompts.CHAT_JUDGE_PROMPT_VERSION,
    ]
    assert len(set(versions)) == 4 and all(versions)


@pytest.mark.parametrize(
    "raw,expected",
    [
        (" What is skin friction?\n\nPassage: next one", "What is skin friction?"),
        ("\n\n  Query: turbulent boundary layer  ", "turbulent boundary layer"),
        ('"Why does heat transfer rise?"', "Why does heat transfer rise?"),
        ("1. how fast is transition", "how fast is transition"),
        ("2) Question: what is a flat plate?", "what is a flat plate?"),
        ("- Claim: Skin friction rises after transition.", "Skin friction rises after transition."),
        ("Search query: flat plate transition", "flat plate transition"),
        ("“curly quotes”", "curly quotes"),
        ('what is a "slipstream"', 'what is a "slipstream"'),  # quotes inside the query stay
        ('what is a slipstream?"', "what is a slipstream?"),  # a dangling closing quote goes
        ("results of the engineers'", "results of the engineers'"),  # a possessive, not a quote
        ("Q1: what", "what"),
        ("Questions about query languages", "Questions about query languages"),  # a word, not a label
        ("", None),
        ("   \n  \n", None),
        ('""', None),
        (None, None),
    ],
)
def test_parse_generated_query(raw, expected):
    assert parse_generated_query(raw) == expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('{"grade": 2, "reason": "partly"}', 2),
        ('```json\n{"grade": 3}\n```', 3),
        ('{"grade": "1", "reason": "trunc', 1),  # truncated JSON
        ("{'grade': 0}", 0),  # python-ish quotes
        ("2", 2),
        ("3.0", 3),
        ("Grade: 1 - on topic only", 1),
        ('{"reason": "no grade here"}', None),
        ('{"grade": 7}', None),
        ("{\"grade\": 2.5}", None),
        ("I cannot judge this.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_judge_json(raw, expected):
    assert parse_judge_json(raw) == expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('{"queries": ["a b c", "Query: d e f"]}', ["a b c", "d e f"]),
        ('Sure! ```json\n{"queries": ["one two"]}\n```', ["one two"]),
        ('["x y", "z w"]', ["x y", "z w"]),
        ('{"queries": ["complete one", "complete two", "cut of', ["complete one", "complete two"]),
        ('{"queries": ["bad \\x escape", "it\'s \\"quoted\\"", "cut', ["bad \\x escape", 'it\'s "quoted"']),
        ('{"queries": []}', None),
        ("no json at all", None),
        ("", None),
    ],
)
def test_parse_written_queries(raw, expected):
    assert parse_written_queries(raw) == expected


def test_filter_keeps_good_queries_in_order():
    queries = ["when does a boundary layer become turbulent", "skin friction after transition"]
    kept, reasons = filter_queries(queries, PASSAGE)
    assert kept == queries and sum(reasons.values()) == 0


@pytest.mark.parametrize(
    "query,style,reason",
    [
        (None, "question", "empty"),
        ("   ", "question", "empty"),
        ("ab", "keywords", "too_short"),
        ("turbulence", "question", "too_short"),
        (" ".join(["word"] * 65), "claim", "too_long"),
        ("c4 photosynthesis bundle sheath photorespiration", "keywords", "fewshot_echo"),
        ("cpython airfoils", "keywords", "fewshot_echo"),
        ("The Hanese League controlled trade for about four hundred year.", "claim", "fewshot_echo"),
        ("The Hanseatic League controlled Baltic trade for about four hundred years.", "claim", "fewshot_echo"),
        # lifted from the passage with one word changed: still a copy
        ("after which skin friction rises quickly and heat transfer to the wall increases", "claim", "near_copy"),
        ("the boundary layer on a flat plate becomes turbulent", "claim", "near_copy"),
    ],
)
def test_filter_drops_with_a_reason(query, style, reason):
    kept, reasons = filter_queries([query], PASSAGE, style)
    assert kept == []
    assert reasons == {reason: 1}


def test_filter_allows_one_word_keyword_queries_and_short_phrases_from_the_text():
    kept, _ = filter_queries(["turbulence", "skin friction"], PASSAGE, "keywords")
    assert kept == ["turbulence", "skin friction"]


def test_filter_drops_case_and_space_duplicates_but_keeps_the_first():
    kept, reasons = filter_queries(["Why is friction high?", "why  is FRICTION high", "other question here"], PASSAGE)
    assert kept == ["Why is friction high?", "other question here"]
    assert reasons == {"duplicate": 1}


def test_filter_drops_a_query_that_restates_a_short_passage_whole():
    kept, reasons = filter_queries(["so: tiny passage about wings?"], "Tiny passage about wings.")
    assert kept == [] and reasons == {"near_copy": 1}


def test_filter_keeps_a_query_about_as_long_as_a_short_passage_in_other_words():
    kept, _ = filter_queries(["query about the first"], "The first passage text here.")
    assert kept == ["query about the first"]


def test_filter_allows_example_topic_words_that_the_passage_itself_uses():
    passage = "CPython releases memory by reference counting; a cycle collector handles the rest."
    kept, _ = filter_queries(["how does cpython release memory"], passage)
    assert kept == ["how does cpython release memory"]


def test_every_fewshot_example_query_would_be_caught_as_an_echo():
    for _, queries in prompts._FEWSHOT_EXAMPLES:
        for style, query in queries.items():
            assert filter_queries([query], PASSAGE, style)[1] == {"fewshot_echo": 1}, query
