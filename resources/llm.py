"""The LLM resources: write synthetic queries for chunks, and judge (query, passage) relevance.

`LLMResource` is the abstract base the assets depend on. It owns what every backend shares: the
sqlite cache of raw responses (resources/llm_cache.py; each response is committed before it is parsed,
so a crash or rerun never pays for a call twice; one that does not parse is asked again on later runs, up
to `parse_attempts` answers per call), parsing, the query filter (resources/prompts.py) and
the `CallStats` that assets put in their metadata. A backend only turns a list of calls into raw texts:

- `LocalGGUFLLMResource`, the offline default: the bundled Gemma 3 270M GGUF (a base model) run through
  transformers. Queries come from a few-shot completion prompt, one query per completion, batched with
  left padding; the first query of a (chunk, style) is greedy, further ones are sampled. The judge is
  query likelihood (UPR, Sachan et al. 2022, https://arxiv.org/abs/2204.07496): score = mean log P(query
  tokens | "Passage: ...\\nA question about this passage:"), turned into a 0..3 grade by `ql_grades`.

  Measured on 30 Cranfield abstracts x 3 styles (2 CPU cores): left alone, the 270M model copied a
  few-shot example for 14 of 60 keyword/claim queries and lifted a passage sentence for 16 more, so only
  60 of 90 queries survived the filter. Banning the examples' topic words (where the passage lacks them)
  and any repeat of a 5-token run of the prompt (`no_repeat_ngram_size=5`) kept 89 of 90 and raised how
  well MiniLM finds each query's own abstract among all 1,400 (MRR per abstract): keywords 0.23 -> 0.35,
  claims 0.41 -> 0.72, questions 0.47 -> 0.49 (4- and 6-token runs did worse). The 5-token rule also
  stops "Search query: c|python" from being re-typed after the label. Its cost: a passage term of 5+
  tokens cannot be copied whole ("freon-12" came out "freon-11"); 8 for keyword queries fixed that but
  let half-echoes through ("cpy turbulence"), so one setting it is.
  bf16 is the CPU default where the CPU has it: ~2.5x faster than fp32, the same greedy queries in 15
  of 16 cases, and query-likelihood scores within 0.02 nats/token of fp32 (Pearson 0.99995, 116 pairs).
- `OpenAICompatibleLLMResource`: any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, OpenAI),
  with structured output through instructor, bounded concurrency, and retries with exponential backoff on
  timeouts, connection errors, 429, 5xx and a 200 that is not JSON. A call that still fails is counted and
  skipped; a stage whose calls mostly gave nothing usable stops (`check_failure_share`, `max_failure_share`).

torch, transformers, openai and instructor are imported inside methods: loading the Definitions stays fast.
"""

# The base types live in resources/llm_base.py and each backend in its own module, so no module imports the
# one that imports it (llm_local and llm_openai import llm_base, never this facade).
from resources.llm_base import (  # noqa: F401
    CallStats, GeneratedQuery, JudgeRequest, Judgment, LLMResource, Progress, QueryRequest, Summary, TooManyLLMFailures,
    check_failure_share, failure_text)
from resources.llm_local import LocalGGUFLLMResource, choose_dtype, ql_grades  # noqa: F401
from resources.llm_openai import (  # noqa: F401
    OpenAICompatibleLLMResource, RelevanceGrade, WrittenQueries, is_transient)
