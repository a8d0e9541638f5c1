"""Prompts, output parsing and query filtering for the LLM resources: pure functions, no Dagster, no torch.

Two families of prompts live here:

- Few-shot completion prompts for the bundled *base* model (Gemma 3 270M is not instruction-tuned, so it
  is shown three short, generic passage -> query pairs and asked to continue the pattern), and the
  query-likelihood prefix used to judge relevance with it (UPR, Sachan et al. 2022: a passage is relevant
  to a query when the model finds the query likely after reading the passage).
- Chat prompts for an OpenAI-compatible endpoint, answered as JSON (`{"queries": [...]}` and
  `{"grade": 0..3, "reason": "..."}`).

Every prompt family has a `*_PROMPT_VERSION`; it is part of every cache key, so bump it whenever the
wording of a prompt changes, and cached responses to the old wording are no longer reused.

`filter_queries` is the gate every generated query passes; its rules are documented on the function.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter

QUERY_STYLES: tuple[str, ...] = ("question", "keywords", "claim")
USER_STYLE = "user"   # the team's own users' style, learnt from logged queries shown as the few-shot examples
ALL_STYLES: tuple[str, ...] = (*QUERY_STYLES, USER_STYLE)
EXAMPLE_PASSAGE_CHARS = 400   # a logged example's passage in the prompt: 4 examples stay under ~500 prompt tokens

FEWSHOT_QUERY_PROMPT_VERSION = "fewshot-query-v1"  # local base model, one query per completion
QL_JUDGE_PROMPT_VERSION = "ql-judge-v1"  # local query-likelihood judge (the prefix below)
CHAT_QUERY_PROMPT_VERSION = "chat-query-v1"  # OpenAI-compatible endpoint, JSON list of queries
CHAT_JUDGE_PROMPT_VERSION = "chat-judge-v1"  # OpenAI-compatible endpoint, JSON grade 0..3
CHAT_TOPIC_PROMPT_VERSION = "chat-topic-v1"  # OpenAI-compatible endpoint, JSON name of a group of user queries
FEWSHOT_SUMMARY_PROMPT_VERSION = "fewshot-summary-v1"  # local base model, a one-line summary per completion
CHAT_SUMMARY_PROMPT_VERSION = "chat-summary-v1"  # OpenAI-compatible endpoint, JSON summary of a document

DEFAULT_MAX_PASSAGE_CHARS = 2000  # ~450 Gemma tokens of English: a whole prompt stays well under 1k tokens

# The label that introduces the query in the few-shot prompt, per style.
_FEWSHOT_LABELS = {"question": "Question", "keywords": "Search query", "claim": "Claim", USER_STYLE: "Query"}

# Three short, varied, generic passages (science, software, history) and one query per style for each.
_FEWSHOT_EXAMPLES: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "C4 plants such as maize and sugarcane first fix carbon dioxide in mesophyll cells and then release"
        " it around the enzyme RuBisCO in bundle-sheath cells. Concentrating CO2 this way suppresses"
        " photorespiration, which makes C4 plants more efficient in hot, dry climates.",
        {
            "question": "Why are C4 plants more efficient than other plants in hot, dry climates?",
            "keywords": "c4 photosynthesis bundle sheath photorespiration",
            "claim": "Concentrating CO2 around RuBisCO lets C4 plants avoid most photorespiration.",
        },
    ),
    (
        "CPython frees most objects as soon as their reference count drops to zero. Objects that refer to"
        " each other in a cycle never reach zero, so a separate generational garbage collector periodically"
        " searches for unreachable cycles and reclaims them.",
        {
            "question": "how does python free objects that reference each other",
            "keywords": "cpython garbage collector reference cycles",
            "claim": "Reference counting alone cannot reclaim objects that form a cycle in CPython.",
        },
    ),
    (
        "The Hanseatic League was a confederation of merchant guilds and market towns that dominated trade"
        " in the Baltic Sea from the 13th to the 17th century. Lübeck, its leading city, hosted the diets"
        " where member towns agreed on common trade policy.",
        {
            "question": "Which city led the Hanseatic League?",
            "keywords": "hanseatic league baltic trade lübeck",
            "claim": "The Hanseatic League controlled Baltic trade for about four hundred years.",
        },
    ),
)

# Words of the examples' own topics. A 270M base model sometimes copies an example instead of writing
# about its passage (measured: 5% of queries on Cranfield, mostly keyword queries, e.g. "cpython
# airfoils"); filter_queries drops a query that uses one of these words when its passage does not.
# Keep in step with the examples above.
FEWSHOT_MARKERS = frozenset(
    "c4 maize sugarcane mesophyll rubisco photosynthesis photorespiration bundle sheath cpython python"
    " hanseatic lübeck lubeck baltic guilds".split()
)

_CHAT_STYLE_INSTRUCTIONS = {
    "question": "natural-language questions that a person might ask and that this passage answers",
    "keywords": "short keyword queries (2 to 6 words, no full sentence) that a person might type into a"
    " search engine to find this passage",
    "claim": "one-sentence factual claims that this passage supports, as a person might state them to"
    " fact-check",
    USER_STYLE: "search queries written the way this team's users write theirs (the examples below are real ones)",
}

_QL_PREFIX = "Passage: {passage}\nA question about this passage:"


def _check_style(style: str) -> None:
    if style not in ALL_STYLES:
        raise ValueError(f"Unknown query style {style!r}: use one of {', '.join(ALL_STYLES)}.")


Examples = tuple[tuple[str, str], ...]   # (passage, query) pairs: logged queries and a passage they cited


def examples_version(examples: Examples) -> str:
    """A short hash of the few-shot examples: part of the prompt version, so new examples are new cache keys."""
    import hashlib

    h = hashlib.sha256(json.dumps([list(e) for e in examples]).encode()).hexdigest()[:12]
    return f"ex-{h}"


def versioned(version: str, examples: Examples) -> str:
    """A prompt family's version, with the examples' hash when logged examples replace the generic ones."""
    return f"{version}+{examples_version(examples)}" if examples else version


def truncate_passage(passage: str, max_chars: int = DEFAULT_MAX_PASSAGE_CHARS) -> str:
    """Collapse whitespace and cut to at most `max_chars` characters, at a word boundary when there is one."""
    text = " ".join(passage.split())
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space > max_chars // 2:  # a word boundary that does not throw away half the budget
        cut = cut[:space]
    return cut.rstrip()


def build_fewshot_query_prompt(
    passage: str, style: str, max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS, examples: Examples = ()
) -> str:
    """A completion prompt for a base model: three generic examples (or the given logged (passage, query)
    examples, which replace them), then the passage and the open label.

    The model is expected to continue with ` <query>\\n`; `parse_generated_query` takes the first line.
    """
    _check_style(style)
    label = _FEWSHOT_LABELS[style]
    if examples:
        blocks = [f"Passage: {truncate_passage(text, EXAMPLE_PASSAGE_CHARS)}\n{label}: {' '.join(q.split())}"
                  for text, q in examples]
    elif style == USER_STYLE:
        raise ValueError("the 'user' style needs logged examples: it writes in the style they show")
    else:
        blocks = [f"Passage: {text}\n{label}: {queries[style]}" for text, queries in _FEWSHOT_EXAMPLES]
    blocks.append(f"Passage: {truncate_passage(passage, max_passage_chars)}\n{label}:")
    return "\n\n".join(blocks)


def build_ql_judge_prefix(passage: str, max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS) -> str:
    """The query-likelihood prefix: the judge scores log P(" " + query | this prefix)."""
    return _QL_PREFIX.format(passage=truncate_passage(passage, max_passage_chars))


def build_chat_query_messages(
    passage: str, style: str, n: int, max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS, examples: Examples = ()
) -> list[dict[str, str]]:
    """Chat messages asking for `n` queries of one style, answered as {"queries": [...]}."""
    _check_style(style)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    system = (
        "You write realistic search queries for training and evaluating a search engine. "
        'Reply with JSON only, in the form {"queries": ["...", "..."]}.'
    )
    user = (
        f"Write {n} {_CHAT_STYLE_INSTRUCTIONS[style]}.\n"
        "Each must be answerable from the passage alone, must not copy a sentence from it, and must differ"
        " from the others in wording and focus.\n\n"
        f"Passage:\n{truncate_passage(passage, max_passage_chars)}"
    )
    if examples:
        shown = "\n".join(f"- {' '.join(q.split())}" for _, q in examples)
        user += f"\n\nReal queries from this team's users, for their style (not their topics):\n{shown}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_chat_judge_messages(
    query: str, passage: str, max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS
) -> list[dict[str, str]]:
    """Chat messages asking for a TREC-style 0..3 relevance grade, answered as {"grade": g, "reason": "..."}."""
    system = (
        "You judge how relevant a passage is to a search query, on this scale:\n"
        "3 = highly relevant: the passage is dedicated to the query and answers it fully;\n"
        "2 = relevant: the passage answers the query, partly or with extra material;\n"
        "1 = marginally relevant: the passage is on the topic but does not answer the query;\n"
        "0 = not relevant.\n"
        'Reply with JSON only, in the form {"grade": <0, 1, 2 or 3>, "reason": "<one short sentence>"}.'
    )
    user = f"Query: {query.strip()}\n\nPassage:\n{truncate_passage(passage, max_passage_chars)}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# One-sentence summaries of the three example passages, for the base model's summary prompt: what each is about,
# in other words than the passage's own (a summary that copies the first sentence adds nothing to the index).
_FEWSHOT_SUMMARIES = (
    "How C4 plants such as maize concentrate carbon dioxide to avoid photorespiration in hot climates.",
    "Python's memory management: reference counting, and a cycle-collecting garbage collector for the rest.",
    "The medieval Baltic trade alliance of merchant towns led by Lübeck.",
)


def build_fewshot_summary_prompt(passage: str, max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS) -> str:
    """A completion prompt for a base model: the three generic passages with a one-line summary each, then the
    document and the open label. The model continues with ` <summary>\n`; `parse_summary` takes the first line."""
    blocks = [f"Passage: {text}\nSummary: {summary}" for (text, _), summary in zip(_FEWSHOT_EXAMPLES, _FEWSHOT_SUMMARIES)]
    blocks.append(f"Passage: {truncate_passage(passage, max_passage_chars)}\nSummary:")
    return "\n\n".join(blocks)


def build_chat_summary_messages(passage: str, max_passage_chars: int = DEFAULT_MAX_PASSAGE_CHARS,
                                max_words: int = 60) -> list[dict[str, str]]:
    """Chat messages asking for a short summary of a document, answered as {"summary": "..."}."""
    system = ("You summarise documents for a search engine: the summary is indexed beside the document, so it says "
              "what the document is about, in the words a searcher would use. "
              f'Reply with JSON only, in the form {{"summary": "<at most {max_words} words>"}}.')
    user = f"Summarise this document.\n\nDocument:\n{truncate_passage(passage, max_passage_chars)}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_chat_topic_messages(queries: list[str], max_words: int = 5) -> list[dict[str, str]]:
    """Chat messages asking for a short name of what a group of users' search queries is about, as {"name": "..."}."""
    system = (
        "You name groups of search queries that users typed into a document search engine. "
        f'Reply with JSON only, in the form {{"name": "<at most {max_words} words>"}}.'
    )
    user = "What are these queries about? Name the topic they share.\n\n" + "\n".join(f"- {q.strip()}" for q in queries)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# ----------------------------------------------------------------------------------------------- parsing

_PREFIX_RE = re.compile(
    r"^\s*(?:(?:\d{1,2}|[a-z])[.)]\s+|[-*•]\s+)?"  # numbering or a bullet: "1. ", "2) ", "- "
    r"(?:(?:search\s+)?query|question|claim|keywords?|q)\s*\d*\s*[:\-]\s*",  # a label: "Query:", "Q1:"
    re.IGNORECASE,
)
_NUMBERING_RE = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_QUOTES = "\"'`“”‘’«»"


def parse_generated_query(raw: str | None) -> str | None:
    """The query in a model's raw output: its first non-empty line, without label, numbering or quotes.

    Returns None when nothing is left.
    """
    if not raw:
        return None
    line = next((ln for ln in raw.splitlines() if ln.strip()), "")
    line = _PREFIX_RE.sub("", line, count=1)
    line = _NUMBERING_RE.sub("", line, count=1)
    line = " ".join(_strip_quotes(line.strip()).split())
    return line or None


def _strip_quotes(line: str) -> str:
    """Drop quotes around the query, and a dangling closing quote, but keep quotes inside it."""
    quoted = line[:1] in _QUOTES
    line = line.lstrip(_QUOTES)
    while line and line[-1] in _QUOTES:
        mark = line[-1]
        dangling = mark in "”’»" or (mark in '"`' and line.count(mark) % 2 == 1)
        if not (quoted or dangling):
            break
        line = line[:-1]
    return line.strip()


def _first_json_value(raw: str):
    """json.loads of `raw`, or of the first {...} or [...] block inside it (code fences, chatter)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        pass
    for open_, close in (("{", "}"), ("[", "]")):
        start, end = raw.find(open_), raw.rfind(close)
        if 0 <= start < end:
            try:
                return json.loads(raw[start : end + 1])
            except json.JSONDecodeError:
                continue
    return None


_GRADE_KEY_RE = re.compile(r"""["']?grade["']?\s*[:=]\s*["']?(\d+(?:\.0+)?)""", re.IGNORECASE)
_LEADING_GRADE_RE = re.compile(r"^\s*(?:grade\s*[:=]?\s*)?(\d+(?:\.0+)?)\b", re.IGNORECASE)


def parse_judge_json(raw: str | None) -> int | None:
    """A 0..3 grade from a judge's raw output: JSON, broken or truncated JSON, or a plain digit.

    Accepts `{"grade": 2, ...}`, `{"grade": "2"`, `grade: 2`, `2`, `2.0`, `Grade: 2 - because ...`.
    Returns None when no grade in 0..3 can be read (a grade of 7 is a failure, not a 3).
    """
    if raw is None:
        return None
    text = str(raw).strip()
    candidates: list[str] = []
    value = _first_json_value(text)
    if isinstance(value, dict) and "grade" in value:
        candidates.append(str(value["grade"]))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        candidates.append(str(value))
    if not candidates:
        match = _GRADE_KEY_RE.search(text) or _LEADING_GRADE_RE.match(text)
        if match:
            candidates.append(match.group(1))
    for candidate in candidates:
        try:
            number = float(candidate)
        except ValueError:
            continue
        if number.is_integer() and 0 <= number <= 3:
            return int(number)
    return None


_QUOTED_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _unescape(json_string_body: str) -> str:
    try:
        return json.loads(f'"{json_string_body}"')
    except json.JSONDecodeError:
        return json_string_body


def parse_written_queries(raw: str | None) -> list[str] | None:
    """The queries in a chat model's `{"queries": [...]}` answer, tolerant of fences and truncation.

    Returns None when no query can be read; each query goes through `parse_generated_query`.
    """
    if not raw:
        return None
    value = _first_json_value(raw)
    items: list = []
    if isinstance(value, dict) and isinstance(value.get("queries"), list):
        items = value["queries"]
    elif isinstance(value, list):
        items = value
    elif value is None:  # truncated JSON: take the complete strings after "queries"
        key = raw.find('"queries"')
        if key >= 0:
            bracket = raw.find("[", key)
            if bracket >= 0:
                items = [_unescape(m) for m in _QUOTED_STRING_RE.findall(raw[bracket:])]
    queries = [q for q in (parse_generated_query(str(item)) for item in items if item is not None) if q]
    return queries or None


# --------------------------------------------------------------------------------------------- filtering

MIN_QUERY_CHARS = 3
MIN_QUERY_WORDS = 2  # except for the keywords style, where one rare word can be a real query
MAX_QUERY_WORDS = 64
COPY_SPAN_FRACTION = 0.9  # a query this much of which is copied runs of the passage is a copy
COPY_MIN_RUN = 3  # ... counting only runs of 3+ consecutive passage tokens, in order
COPY_MIN_TOKENS = 6  # ... for queries of 6+ tokens: short phrases taken from the text are fine
COPY_PASSAGE_FRACTION = 0.8  # a query whose copied runs cover this much of the passage restates it

_TOKEN_RE = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def normalise_query(query: str) -> str:
    """Lower case, single spaces, no trailing punctuation: the form duplicates are compared in."""
    return " ".join(query.lower().split()).strip(" .?!;:,")


def filter_queries(
    queries: list[str | None], passage: str, style: str = "question", examples: Examples = ()
) -> tuple[list[str], Counter]:
    """Keep the usable queries written for one passage; count why the others were dropped.

    Rules, in order (the first that applies names the reason):
    - `empty`: None or blank.
    - `too_short`: under 3 characters, or under 2 words unless the style is `keywords`.
    - `too_long`: over 64 words (a paragraph, not a query).
    - `fewshot_echo`: copied from the prompt's examples, not written about the passage: it uses a word
      of the examples' topics (FEWSHOT_MARKERS) that the passage does not, or at least 3 tokens and half
      of its tokens come from one example query and not from the passage ("The Hanese League
      controlled trade for about four hundred year"). With logged examples, against those examples' queries.
    - `near_copy`: the query restates the passage instead of asking for it, which makes the pair
      trivially easy: at least 90% of its tokens lie in runs of 3+ consecutive tokens copied, in
      order, from the passage (a sentence lifted with a word dropped or changed still counts; only for
      queries of 6+ tokens, so short keyword phrases taken from the text survive), or those copied
      runs cover at least 80% of the passage's tokens (the query restates a short passage whole).
    - `duplicate`: equal, after lower-casing and collapsing spaces and end punctuation, to a query
      already kept.
    Returns the kept queries (stripped, in input order) and a Counter of reasons.
    """
    reasons: Counter = Counter()
    kept: list[str] = []
    seen: set[str] = set()
    passage_tokens = _tokens(passage)
    for query in queries:
        text = " ".join((query or "").split())
        words = text.split()
        if not text:
            reasons["empty"] += 1
        elif len(text) < MIN_QUERY_CHARS or (style not in ("keywords", USER_STYLE) and len(words) < MIN_QUERY_WORDS):
            reasons["too_short"] += 1
        elif len(words) > MAX_QUERY_WORDS:
            reasons["too_long"] += 1
        elif _echoes_example(_tokens(text), set(passage_tokens), examples):
            reasons["fewshot_echo"] += 1
        elif _is_near_copy(_tokens(text), passage_tokens):
            reasons["near_copy"] += 1
        elif normalise_query(text) in seen:
            reasons["duplicate"] += 1
        else:
            seen.add(normalise_query(text))
            kept.append(text)
    return kept, reasons


_EXAMPLE_QUERY_TOKENS = [set(_tokens(q)) for _, queries in _FEWSHOT_EXAMPLES for q in queries.values()]


def _echoes_example(query_tokens: list[str], passage_tokens: set[str], examples: Examples = ()) -> bool:
    if not examples and (FEWSHOT_MARKERS & set(query_tokens)) - passage_tokens:
        return True
    if examples and " ".join(query_tokens) in {" ".join(_tokens(q)) for _, q in examples}:
        return True   # a logged example copied word for word
    for example in [set(_tokens(q)) for _, q in examples] if examples else _EXAMPLE_QUERY_TOKENS:
        borrowed = sum(1 for t in query_tokens if t in example and t not in passage_tokens)
        if borrowed >= 3 and borrowed >= 0.5 * len(query_tokens):
            return True
    return False


def _is_near_copy(query_tokens: list[str], passage_tokens: list[str]) -> bool:
    if not query_tokens or not passage_tokens:
        return False
    matcher = difflib.SequenceMatcher(None, query_tokens, passage_tokens, autojunk=False)
    copied = sum(block.size for block in matcher.get_matching_blocks() if block.size >= COPY_MIN_RUN)
    if copied and copied >= COPY_PASSAGE_FRACTION * len(passage_tokens):
        return True
    return len(query_tokens) >= COPY_MIN_TOKENS and copied >= COPY_SPAN_FRACTION * len(query_tokens)


MIN_SUMMARY_WORDS = 4
MAX_SUMMARY_CHARS = 600
_SUMMARY_LABEL_RE = re.compile(r"^\s*summary\s*[:\-]\s*", re.IGNORECASE)


def parse_summary(raw: str | None, chat: bool = False) -> str | None:
    """A summary from an answer: a chat endpoint's {"summary": "..."}, or a base model's first line. None when
    there is none, it has fewer than MIN_SUMMARY_WORDS words, or it is an example's summary repeated."""
    if not raw:
        return None
    if chat:
        value = _first_json_value(raw)
        text = value.get("summary") if isinstance(value, dict) else None
        text = " ".join(str(text).split()) if text is not None else ""
    else:
        text = next((line for line in raw.strip().splitlines() if line.strip()), "")
        text = " ".join(_SUMMARY_LABEL_RE.sub("", text).split())
    text = text.strip(_QUOTES + " ")[:MAX_SUMMARY_CHARS]
    if len(text.split()) < MIN_SUMMARY_WORDS or text in _FEWSHOT_SUMMARIES:
        return None
    return text


def parse_topic_name(raw: str | None, max_chars: int = 60) -> str | None:
    """The name from a topic answer ({"name": "..."}), stripped and cut to `max_chars`; None if there is none."""
    value = _first_json_value(raw) if raw else None
    name = value.get("name") if isinstance(value, dict) else None
    name = " ".join(str(name).split()).strip(_QUOTES + " .") if name is not None else ""
    return name[:max_chars] or None
