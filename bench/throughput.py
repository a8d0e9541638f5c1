"""Throughput, measured side by side: one table, each row a ratio of two things timed in the same run.

    OMP_NUM_THREADS=2 .venv/bin/python bench/throughput.py [--quick] [--corpus ../shared/datasets/cranfield]

1. Endpoint calls. A local fake OpenAI-compatible server (tests/fake_endpoint.py) that takes `--latency` (200 ms)
   to answer each request. The same judge calls through OpenAICompatibleLLMResource.judge with its default
   `max_concurrency` against the same calls with max_concurrency=1 (a sequential loop through the same code:
   retries, cache writes and parsing included), calls/s. Then the concurrent run again with 1 prompt in 5
   answered first with a 429 and Retry-After 1 s: every call must still be answered, and the shortest wait
   after a 429 must be >= its Retry-After (the server records when each prompt's requests arrive).
2. Embedding. The same chunks of the corpus (`--chunks`: 2,000, or all cranfield has: 1,778; `--quick` 300)
   through our index path (EmbedderResource.encode, as baseline_index calls it: one call over every new chunk,
   batch 64, which sentence-transformers sorts by length across the whole call) against plain
   SentenceTransformer.encode (fp32, batch 32), in tokens/s (word pieces after truncation to 256, [CLS] and
   [SEP] included). Candidates, each measured rather than assumed: no length sorting (batches in corpus order),
   one thread instead of all, bf16 autocast (only when the CPU has AVX512-BF16 or AMX: ATen's
   `torch.backends.cpu.get_cpu_capability()` stops at "AVX512", so /proc/cpuinfo's flags decide), and ONNX
   Runtime fp32 / int8 (dynamic quantization of the weights) when onnxruntime and onnx are importable (the model
   is exported locally with torch.onnx; nothing is downloaded). A candidate that changes the vectors gets the
   nDCG@10 change of dense retrieval on the corpus's human queries (every chunk embedded, a document ranks at
   its best chunk; `--quick`: the first 40 queries over their judged documents' chunks and as many others), the
   target being >= 1.5x at <= 0.005 nDCG@10 lost.
3. The physical limit: MiniLM-L6's FLOPs a token (2 x the non-embedding weights, plus attention at the mean
   length) x the measured tokens/s, against the cores' peak (AVX-512: 2 FMA units x 16 fp32 lanes x 2 = 64 FLOPs
   a cycle a core; AMX bf16: 1,024) at the clock /proc/cpuinfo reports.
4. Query writing. The bundled Gemma 3 270M writer through LocalGGUFLLMResource.write_queries (the synthetic_queries
   asset's path: prompts, generation, parsing, the filter), `--writer-queries` chunks (96) with an empty cache, at
   each `--writer-batches` size (1, 4, 8, 16; each in its own process, so its peak RSS is its own), queries/s against
   batch 1. Then, when llama-cpp-python is importable, the same prompts through llama.cpp on the bundled Q4_K_M GGUF
   itself (greedy, one at a time), with the share its answers keep after the same filter, and whether its one-time
   compile (`--llama-compile-s`, measured by timing `pip install llama-cpp-python` on this machine) pays for itself
   on a corpus of `--corpus-chunks` chunks (9,755: a 5,000-document SciFact-sized corpus).

The machine is shared, so absolute numbers move from run to run; the ratios, timed side by side, are what count.
Each embedding configuration is timed `--repeats` times (1 in quick mode) and its best time kept.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

ROWS: list[tuple[str, str, str, str]] = []   # (row, measured, ratio, note)
CMD = "OMP_NUM_THREADS=2 .venv/bin/python bench/throughput.py"


def row(name: str, measured: str, ratio: str, note: str = "") -> None:
    ROWS.append((name, measured, ratio, note))
    print(f"  {name}: {measured} | {ratio} | {note}", flush=True)


# -- 1. endpoint calls

def endpoint_rows(n_calls: int, latency: float) -> None:
    from resources.llm import JudgeRequest
    from resources.llm_openai import OpenAICompatibleLLMResource
    from tests.fake_endpoint import FaultyChatEndpoint

    requests = [JudgeRequest(query=f"what limits the lift of wing {i}", chunk_id=f"c{i}",
                             passage=f"Passage {i}: the lift of a wing in a slipstream grows with its angle.")
                for i in range(n_calls)]
    default = OpenAICompatibleLLMResource.model_fields["max_concurrency"].default

    def run(concurrency: int, plan=lambda prompt: []):
        server = FaultyChatEndpoint(plan=plan, latency_s=latency, retry_after=1.0)
        try:
            with tempfile.TemporaryDirectory() as tmp:   # a fresh cache: every call is paid for
                llm = OpenAICompatibleLLMResource(cache_path=f"{tmp}/cache.sqlite", base_url=server.url,
                                                  model="fake-chat", max_concurrency=concurrency)
                t0 = time.perf_counter()
                judgments, stats = llm.judge(requests)
                return time.perf_counter() - t0, len(judgments), stats, server
        finally:
            server.close()

    import logging

    logging.getLogger("instructor").setLevel(logging.CRITICAL)   # each 429 is logged as a failed attempt: expected
    seq_s, seq_n, _, _ = run(1)
    par_s, par_n, _, server = run(default)
    assert seq_n == par_n == n_calls, (seq_n, par_n)
    row(f"endpoint calls, {latency * 1000:.0f} ms a request ({n_calls} judge calls)",
        f"{n_calls / par_s:.1f} calls/s at max_concurrency={default} (peak {server.max_in_flight} in flight) vs "
        f"{n_calls / seq_s:.1f} sequential", f"{seq_s / par_s:.1f}x", "target >= 10x")

    def one_in_five_429(prompt: str) -> list[str]:
        return ["429"] if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 5 == 0 else []

    f_s, f_n, stats, server = run(default, one_in_five_429)
    faulted = [t for t in server.arrivals.values() if len(t) > 1]
    waits = [t[1] - t[0] - latency for t in faulted]   # from the 429's answer to the retry
    assert f_n == n_calls and faulted and min(waits) >= server.retry_after - 0.05, (f_n, waits[:5])
    row(f"same, 1 prompt in 5 answered 429 + Retry-After {server.retry_after:.0f} s first",
        f"{n_calls / f_s:.1f} calls/s; {len(faulted)} 429s, all retried and answered; shortest wait after a 429 "
        f"{min(waits):.2f} s", f"{seq_s / f_s:.1f}x vs sequential without faults", "Retry-After honoured")


# -- 2. embedding

def load_corpus(corpus: Path, max_tokens: int = 256):
    from assets.corpus import is_training_qrels
    from assets.corpus.chunking import chunk_documents, load_tokenizer
    from assets.corpus.readers import read_beir_queries, read_documents, restrict_to_corpus
    from resources.embedder import bundled_minilm_path

    docs, _ = read_documents(corpus)
    chunks, _ = chunk_documents(docs, tokenizer=load_tokenizer(bundled_minilm_path()), max_tokens=max_tokens)
    sets, _ = restrict_to_corpus(read_beir_queries(corpus), docs["doc_id"]) if (corpus / "qrels").is_dir() else ([], {})
    human = [s for s in sets if not is_training_qrels(s.name)]
    return chunks, (human[0] if human else None)


def ndcg_of(chunk_vectors: np.ndarray, query_vectors: np.ndarray, chunk_ids, chunk_doc, qset) -> float:
    from assets.evaluation.metrics import aggregate_to_documents, ndcg_at_k

    scores = query_vectors @ chunk_vectors.T
    out = []
    for row_scores, qid in zip(scores, qset.queries):
        top = np.argsort(-row_scores)[:200]
        ranked = aggregate_to_documents([(chunk_ids[i], float(row_scores[i])) for i in top], chunk_doc)
        out.append(ndcg_at_k(ranked, qset.qrels[qid], 10))
    return float(np.mean(out))


def has_bf16_hardware() -> tuple[bool, str]:
    import torch

    from resources.device import cpu_has_native_bf16

    return cpu_has_native_bf16(), f"capability {torch.backends.cpu.get_cpu_capability()}"


def onnx_encoders(model, batch: int):
    """(fp32, int8) encode functions over an ONNX export of the model's transformer, or None when onnxruntime
    or onnx is not installed."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="throughput-onnx-"))
    transformer, tokenizer = model[0].auto_model, model.tokenizer
    sample = tokenizer(["a sample"], return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names} | {"last_hidden_state": {0: "batch", 1: "sequence"}}

    class Body(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).last_hidden_state

    fp32 = tmp / "model.onnx"
    torch.onnx.export(Body(transformer).eval(), tuple(sample[n] for n in names), str(fp32), input_names=names,
                      output_names=["last_hidden_state"], dynamic_axes=dynamic, opset_version=17, dynamo=False)
    int8 = tmp / "model.int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    max_len = model.max_seq_length

    def encoder(path: Path):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def encode(texts: list[str]) -> np.ndarray:
            order = np.argsort([-len(t) for t in texts])   # as sentence-transformers does: by length, longest first
            out = np.zeros((len(texts), transformer.config.hidden_size), dtype="float32")
            for start in range(0, len(texts), batch):
                idx = order[start:start + batch]
                enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                                return_tensors="np")
                hidden = session.run(None, {n: enc[n].astype("int64") for n in names})[0]
                mask = enc["attention_mask"][..., None].astype("float32")
                pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
                out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
            return out

        return encode

    return encoder(fp32), encoder(int8)


def sub_corpus(qset, n_queries: int, chunk_ids: list[str], chunk_doc: dict[str, str]):
    """The first n queries of `qset`, and the chunk positions of a sub-corpus: every chunk of a document judged for
    them, then as many other chunks again (in corpus order), so that retrieval still has distractors."""
    from dataclasses import replace

    qids = list(qset.queries)[:n_queries]
    judged = {d for q in qids for d in qset.qrels[q]}
    inside = [i for i, c in enumerate(chunk_ids) if chunk_doc[c] in judged]
    others = [i for i, c in enumerate(chunk_ids) if chunk_doc[c] not in judged][:len(inside)]
    return (replace(qset, queries={q: qset.queries[q] for q in qids}, qrels={q: qset.qrels[q] for q in qids}),
            sorted(inside + others))


def embedding_rows(corpus: Path, n_chunks: int, repeats: int, ndcg_queries: int = 0) -> None:
    import torch

    from resources.embedder import EmbedderResource

    chunks, qset = load_corpus(corpus)
    chunk_ids, all_texts = chunks["chunk_id"].astype(str).tolist(), chunks["text"].tolist()
    chunk_doc = dict(zip(chunk_ids, chunks["doc_id"].astype(str)))
    texts = all_texts[:n_chunks]
    embedder = EmbedderResource(device="cpu", precision="fp32")    # our path in fp32: the same vectors as plain
    default = EmbedderResource(device="cpu")                         # what a run uses: precision "auto"
    model = embedder.load()
    tokens = sum(min(len(ids), model.max_seq_length) for ids in model.tokenizer(texts)["input_ids"])
    threads = torch.get_num_threads()

    def plain(t):
        return model.encode(t, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    def ours(t):
        return embedder.encode(t)

    def unsorted(t):   # batches of 64 in corpus order: each call sorts only its own batch
        return np.concatenate([embedder.encode(t[i:i + 64]) for i in range(0, len(t), 64)])

    def one_thread(t):
        torch.set_num_threads(1)
        try:
            return embedder.encode(t)
        finally:
            torch.set_num_threads(threads)

    def bf16(t):   # the embedder's own bf16 path (precision "bf16": torch.autocast around encode)
        return EmbedderResource(device="cpu", precision="bf16").encode(t)

    configs = [("plain SentenceTransformer.encode, fp32, batch 32", plain, False),
               ("our index path in fp32: EmbedderResource.encode (batch 64, sorted by length over the call)", ours, False),
               ("candidate: no length sorting (64-chunk calls in corpus order)", unsorted, False),
               (f"candidate: 1 thread instead of {threads}", one_thread, False)]
    bf16_ok, why = has_bf16_hardware()
    if bf16_ok:
        configs.append((f"bf16 autocast (precision auto picks it here: {default.inference_precision()})", bf16, True))
    else:
        row("candidate: bf16 autocast", "not run", "-", f"no AVX512-BF16/AMX ({why})")
    onnx = onnx_encoders(model, 64)
    if onnx:
        configs += [("candidate: ONNX Runtime fp32 (batch 64, sorted)", onnx[0], True),
                    ("candidate: ONNX Runtime int8 (dynamic quantization)", onnx[1], True)]
    else:
        row("candidate: ONNX Runtime fp32 / int8", "not run", "-", "onnxruntime/onnx not installed (pip install "
            "onnxruntime onnx); OpenVINO not tried")
    rates = {}
    for name, encode, _ in configs:
        encode(texts[:8])   # warm-up: first-call allocations, the ONNX session's first run
        best = min(_timed(encode, texts) for _ in range(repeats))
        rates[name] = tokens / best
        print(f"    {name}: {tokens / best:,.0f} tokens/s ({best:.1f} s)", flush=True)
    base_name, ours_name = configs[0][0], configs[1][0]
    row(f"embedding, {len(texts):,} chunks of {corpus.name} ({tokens:,} tokens): {ours_name}",
        f"{rates[ours_name]:,.0f} vs {rates[base_name]:,.0f} tokens/s (plain, fp32, batch 32)",
        f"{rates[ours_name] / rates[base_name]:.2f}x", "same vectors")
    reference = None
    if qset is not None and any(changes for *_, changes in configs):
        if ndcg_queries:   # quick: the first queries, over their judged documents' chunks and as many others
            qset, keep = sub_corpus(qset, ndcg_queries, chunk_ids, chunk_doc)
            chunk_ids, all_texts = [chunk_ids[i] for i in keep], [all_texts[i] for i in keep]
        queries = list(qset.queries.values())
        reference = ndcg_of(ours(all_texts), ours(queries), chunk_ids, chunk_doc, qset)
    notes = {}
    for name, encode, changes in configs[2:]:
        note = "same vectors"
        if changes and reference is not None:
            ndcg = ndcg_of(encode(all_texts), encode(queries), chunk_ids, chunk_doc, qset)
            note = (f"nDCG@10 on {qset.name} ({len(qset.queries)} human queries, {len(all_texts):,} chunks): "
                    f"{reference:.4f} -> {ndcg:.4f} ({ndcg - reference:+.4f})")
        notes[name] = note
        row(name, f"{rates[name]:,.0f} tokens/s", f"{rates[name] / rates[ours_name]:.2f}x vs our index path in fp32", note)
    auto = default.inference_precision()
    auto_name = next(n for n, *_ in configs if n.startswith("bf16")) if auto == "bf16" else ours_name
    row(f"embedding, what a run uses (EmbedderResource, precision auto = {auto}) vs {base_name}",
        f"{rates[auto_name]:,.0f} vs {rates[base_name]:,.0f} tokens/s", f"{rates[auto_name] / rates[base_name]:.2f}x",
        notes.get(auto_name, "same vectors"))
    physical_limit(model, tokens / len(texts), max(rates.values()), rates[ours_name], threads)


# -- 3. training

TRAIN_CONFIGS = {   # name -> (recipe, settings); each is trained in its own process so its peak RSS is its own
    "bi-encoder: MNRL, batch 32, max_seq_length 256 (before)": ("bi", {}),
    "bi-encoder: CachedMNRL (GradCache), mini-batch 8": ("bi", {"cached": 8}),
    "bi-encoder: CachedMNRL (GradCache), mini-batch 4 (the default)": ("bi", {"cached": 4}),
    "bi-encoder: gradient checkpointing": ("bi", {"checkpointing": True}),
    "bi-encoder: max_seq_length 128 (queries and passages)": ("bi", {"seq": 128}),
    "bi-encoder: query max_seq_length 32, passages 256": ("bi", {"query_seq": 32}),
    "cross-encoder: BCE, batch 16, max_length 256, at once (before)": ("cross", {}),
    "cross-encoder: micro-batches of 8, gradients summed (now the default)": ("cross", {"accum": 2}),
    "cross-encoder: micro-batches of 4, gradients summed": ("cross", {"accum": 4}),
    "cross-encoder: gradient checkpointing": ("cross", {"checkpointing": True}),
    "cross-encoder: max_length 128": ("cross", {"seq": 128}),
}


def train_child(name: str, corpus: str, steps: int) -> None:
    """One training configuration: `steps` optimizer steps on real chunks; prints one JSON line."""
    import resource

    import torch
    from datasets import Dataset

    from resources.embedder import bundled_minilm_path

    recipe, cfg = TRAIN_CONFIGS[name]
    chunks, qset = load_corpus(Path(corpus))
    texts = chunks["text"].tolist()
    queries = list(qset.queries.values()) if qset is not None else [t[:80] for t in texts]
    rng = np.random.default_rng(0)
    batch = 32 if recipe == "bi" else 16
    n = batch * (steps + 1)
    anchors = [queries[i % len(queries)] for i in range(n)]
    pos, neg = rng.choice(texts, n).tolist(), rng.choice(texts, n).tolist()
    times: list[float] = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            times[-1] = time.perf_counter() - times[-1]

    out = tempfile.mkdtemp(prefix="train-bench-")
    accum = cfg.get("accum", 1)   # the batch as `accum` passes whose gradients are summed (crossencoder.accumulation)
    common = dict(output_dir=out, max_steps=steps + 1, per_device_train_batch_size=batch // accum,
                  gradient_accumulation_steps=accum, learning_rate=1e-5,
                  report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
                  dataloader_num_workers=0, gradient_checkpointing=bool(cfg.get("checkpointing")), logging_steps=1000)
    if recipe == "bi":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer import (SentenceTransformerTrainer,
                                                                SentenceTransformerTrainingArguments)
        from sentence_transformers.sentence_transformer.losses import (CachedMultipleNegativesRankingLoss,
                                                                       MultipleNegativesRankingLoss)

        model = SentenceTransformer(bundled_minilm_path(), device="cpu")
        model.max_seq_length = cfg.get("seq", 256)
        if cfg.get("query_seq"):   # queries are tokenized as their own column: truncate them before training
            tok = model.tokenizer
            anchors = [tok.convert_tokens_to_string(tok.tokenize(a)[:cfg["query_seq"] - 2]) for a in anchors]
        loss = (CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg["cached"]) if cfg.get("cached")
                else MultipleNegativesRankingLoss(model))
        ds = Dataset.from_dict({"anchor": anchors, "positive": pos, "negative": neg})
        trainer = SentenceTransformerTrainer(model=model, args=SentenceTransformerTrainingArguments(**common),
                                             train_dataset=ds, loss=loss, callbacks=[Clock()])
        tokens = sum(min(len(ids), model.max_seq_length) for ids in model.tokenizer(anchors + pos + neg)["input_ids"])
        examples_per_step = batch   # (query, positive, negative) rows
    else:
        from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

        model = CrossEncoder(bundled_minilm_path(), num_labels=1, max_length=cfg.get("seq", 256), device="cpu")
        ds = Dataset.from_dict({"query": anchors, "passage": pos, "label": rng.integers(0, 2, n).astype(float).tolist()})
        trainer = CrossEncoderTrainer(model=model, args=CrossEncoderTrainingArguments(**common), train_dataset=ds,
                                      loss=BinaryCrossEntropyLoss(model), callbacks=[Clock()])
        tokens = sum(min(len(ids), cfg.get("seq", 256)) for ids in model.tokenizer(anchors, pos)["input_ids"])
        examples_per_step = batch
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trainer.train()
    step_s = float(np.median(times[1:])) if len(times) > 1 else float("nan")   # the first step warms up
    print("TRAIN " + json.dumps({"step_s": step_s, "examples_per_s": examples_per_step / step_s,
                                 "tokens_per_step": tokens / n * examples_per_step * (3 if recipe == "bi" else 1),
                                 "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                                 "loaded_rss": loaded, "threads": torch.get_num_threads()}), flush=True)


def run_child(flag: list[str], corpus: Path, tag: str, *extra: str):
    """This script again, in its own process (so its peak RSS is its own, and a crash is its own): the JSON after
    the child's `<tag> ` line, or None, and the finished process (for why it printed none)."""
    import subprocess

    proc = subprocess.run([sys.executable, __file__, *flag, "--corpus", str(corpus), *extra],
                          capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(tag + " ")), None)
    return (None if line is None else json.loads(line[len(tag) + 1:])), proc


def child_failure(proc) -> str:
    return (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]


def training_rows(corpus: Path, steps: int, only: str = "") -> None:
    """One row per TRAIN_CONFIGS entry (those whose name contains one of `only`'s comma-separated words, when
    given); the ratios are against the first row of the same model that ran."""
    results = {}
    words = [w.strip() for w in only.split(",") if w.strip()]
    for name in TRAIN_CONFIGS:
        if words and not any(w in name for w in words):
            continue
        result, proc = run_child(["--train-child", name], corpus, "TRAIN", "--train-steps", str(steps))
        if result is None:
            row(name, "failed", "-", child_failure(proc))
            continue
        results[name] = result
    for name, r in results.items():
        base = results.get(next(n for n in results if TRAIN_CONFIGS[n][0] == TRAIN_CONFIGS[name][0]))
        ratio = (f"{base['step_s'] / r['step_s']:.2f}x speed, {r['peak_rss'] / base['peak_rss']:.2f}x peak RSS"
                 if base and base is not r else "1.00x (reference)")
        row(name, f"{r['step_s']:.2f} s/step, {r['examples_per_s']:.1f} examples/s, peak RSS "
            f"{r['peak_rss'] / 2**30:.2f} GiB ({(r['peak_rss'] - r['loaded_rss']) / 2**30:.2f} over the loaded model)",
            ratio, f"median of {steps} steps after a warm-up one, ~{r['tokens_per_step']:,.0f} tokens a step, "
            f"{r['threads']} threads")


# -- 4. query writing

WRITER_BATCHES = "1,4,8,16"
LLAMA_COMPILE_S = 0.0   # --llama-compile-s default: not given, so no pay-back verdict


def writer_requests(corpus: Path, n: int):
    """The query writer's requests for a stable sample of `n` chunks, planned as `synthetic_queries` plans them."""
    from assets.queries import QueryGenConfig, plan_requests

    chunks, _ = load_corpus(corpus)
    return plan_requests(chunks, QueryGenConfig(max_chunks=n))


def writer_child(batch: int, corpus: str, n: int) -> None:
    """One batch size in its own process (so its peak RSS is its own): `n` queries written by the bundled writer
    through LocalGGUFLLMResource.write_queries (prompt building, generation, parsing, filtering), no cache hits."""
    import resource

    import torch

    from resources.llm_local import LocalGGUFLLMResource

    requests = writer_requests(Path(corpus), n + 16)
    warm, timed = requests[n:], requests[:n]
    with tempfile.TemporaryDirectory() as tmp:
        llm = LocalGGUFLLMResource(cache_path=str(Path(tmp) / "llm.sqlite"), batch_size=batch)
        llm.load()
        llm.write_queries(warm[:batch])   # first-call overheads (kernels, the banned-word table) not timed
        t0 = time.perf_counter()
        got, stats = llm.write_queries(timed)
        seconds = time.perf_counter() - t0
    print("WRITE " + json.dumps({"seconds": seconds, "queries": len(timed), "kept": len(got), "calls": stats.calls,
                                 "hits": stats.cache_hits, "dtype": str(llm._model.dtype) if llm._model is not None
                                 else "", "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                                 "threads": torch.get_num_threads()}), flush=True)


# Why a llama.cpp child died, by signal: both seen here, each with the build that fixes it (README, "Speed and memory")
SIGNAL_CAUSES = {
    4: "SIGILL: the build uses an instruction this CPU lacks; compare its GGML_* CMAKE_ARGS with the flags in "
       "/proc/cpuinfo (seen: GGML_AVX_VNNI=ON on an AMD EPYC that has avx512_vnni but not avx_vnni)",
    11: "SIGSEGV: seen in ggml_backend_amx_mul_mat in a VM that lists AMX but refuses it; build with "
        "-DGGML_NATIVE=OFF and -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF",
}


def llama_cpp_rate(corpus: Path, n: int, max_new_tokens: int) -> dict | None:
    """The same prompts through llama.cpp (llama-cpp-python, when importable) on the bundled Q4_K_M GGUF itself:
    greedy, up to the first newline. llama.cpp has no no-repeat-n-gram rule and no banned words, so its kept share
    after the same filter is reported beside the speed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from resources import prompts
    from resources.llm_local import LocalGGUFLLMResource

    folder, name = LocalGGUFLLMResource(cache_path="")._resolve_source()
    model = Llama(model_path=str(Path(folder) / name), n_ctx=2048, n_threads=torch_threads(), n_batch=512,
                  verbose=False)
    requests = writer_requests(corpus, n + 2)
    max_chars = LocalGGUFLLMResource.model_fields["max_passage_chars"].default
    prompt = lambda r: prompts.build_fewshot_query_prompt(r.text, r.style, max_chars, r.examples)  # noqa: E731
    for r in requests[n:]:
        model(prompt(r), max_tokens=max_new_tokens, temperature=0.0, stop=["\n"])
    kept, t0 = 0, time.perf_counter()
    for r in requests[:n]:
        text = model(prompt(r), max_tokens=max_new_tokens, temperature=0.0, stop=["\n"])["choices"][0]["text"]
        kept += bool(prompts.filter_queries([text.strip()], r.text, r.style, r.examples)[0])
    return {"seconds": time.perf_counter() - t0, "queries": n, "kept": kept}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def query_writing_rows(corpus: Path, n: int, batches: list[int], compile_s: float, corpus_chunks: int) -> None:
    from resources.llm_local import LocalGGUFLLMResource

    default = LocalGGUFLLMResource.model_fields["batch_size"].default
    results = {}
    for b in batches:
        result, proc = run_child(["--writer-child", str(b)], corpus, "WRITE", "--writer-queries", str(n))
        if result is None:
            row(f"query writing: batch {b}", "failed", "-", child_failure(proc))
            continue
        results[b] = result
    base = results.get(batches[0])
    for b, r in results.items():
        rate = r["queries"] / r["seconds"]
        ratio = "1.00x (reference)" if r is base else (f"{rate / (base['queries'] / base['seconds']):.2f}x of batch "
                                                        f"{batches[0]}" if base else "-")
        row(f"query writing: local writer, batch {b}{' (the default)' if b == default else ''}",
            f"{rate:.2f} queries/s ({r['seconds'] / r['queries']:.2f} s a query), peak RSS "
            f"{r['peak_rss'] / 2**30:.2f} GiB", ratio,
            f"{r['queries']} chunks, {r['kept']} queries kept by the filter, {r['dtype']}, {r['threads']} threads")
    ours = results.get(default)
    # in its own process too: a llama.cpp build whose kernels the CPU (or the VM) refuses dies of a signal
    llama, proc = run_child(["--llama-child"], corpus, "LLAMA", "--writer-queries", str(n))
    if proc.returncode != 0 or "LLAMA " not in proc.stdout:
        why = (f"died of signal {-proc.returncode} ({SIGNAL_CAUSES.get(-proc.returncode, 'see its stderr')})"
               if proc.returncode < 0 else child_failure(proc))
        row("query writing: llama.cpp", "failed", "-", why)
        return
    if llama is None:
        row("query writing: llama.cpp", "not measured", "-", "llama-cpp-python is not installed (pip install "
            "llama-cpp-python compiles llama.cpp from source)")
        return
    rate = llama["queries"] / llama["seconds"]
    note = f"the Q4_K_M GGUF itself, greedy, {llama['kept']} of {llama['queries']} kept by the same filter"
    if ours:
        our_rate = ours["queries"] / ours["seconds"]
        saved = corpus_chunks * (1 / our_rate - 1 / rate)   # seconds a corpus of that many chunks saves
        verdict = (f"on {corpus_chunks:,} chunks it saves {saved / 60:.1f} min against a {compile_s / 60:.1f}-min "
                   f"compile: {'pays' if saved > compile_s else 'does not pay'} for itself"
                   if compile_s else "compile time not given (--llama-compile-s)")
        row("query writing: llama.cpp (llama-cpp-python)", f"{rate:.2f} queries/s ({1 / rate:.2f} s a query)",
            f"{rate / our_rate:.2f}x of the local writer at batch {default}", f"{note}; {verdict}")
    else:
        row("query writing: llama.cpp (llama-cpp-python)", f"{rate:.2f} queries/s", "-", note)


def _timed(encode, texts) -> float:
    t0 = time.perf_counter()
    encode(texts)
    return time.perf_counter() - t0


def physical_limit(model, mean_tokens: float, best_rate: float, our_rate: float, threads: int) -> None:
    cfg = model[0].auto_model.config
    d, layers, ffn = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    weights = layers * (4 * d * d + 2 * d * ffn)           # Q, K, V, O and the two FFN matrices
    flops = 2 * weights + layers * 4 * mean_tokens * d      # + QK^T and AV at the mean length
    try:
        mhz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        mhz = 2000.0
    cores = os.cpu_count() or 1
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    # a cycle a core: fp32 AVX-512, 2 FMA units x 16 lanes x 2 = 64; AVX512-BF16's dot products twice that; AMX 1,024
    bf16_per_cycle, bf16_unit = (1024, "AMX") if "amx_bf16" in flags else (128, "AVX512-BF16") \
        if "avx512_bf16" in flags else (0, "")
    peak_fp32, peak_bf16 = cores * mhz * 1e6 * 64, cores * mhz * 1e6 * bf16_per_cycle
    bf16_note = (f", {bf16_unit} bf16 peak {peak_bf16 / 1e9:,.0f} (best candidate at "
                 f"{flops * best_rate / peak_bf16:.0%} of it)") if peak_bf16 else ", no native bf16"
    row("physical limit (MiniLM-L6)",
        f"{flops / 1e6:.1f} MFLOPs a token x {our_rate:,.0f} tokens/s = {flops * our_rate / 1e9:.1f} GFLOP/s "
        f"(best candidate {flops * best_rate / 1e9:.1f})",
        f"{flops * our_rate / peak_fp32:.1%} of fp32 peak", f"{cores} cores x {mhz / 1000:.2f} GHz: fp32 AVX-512 "
        f"peak {peak_fp32 / 1e9:,.0f} GFLOP/s{bf16_note}; {threads} torch threads")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a smaller sample: 64 endpoint calls, 300 chunks, 1 repeat, nDCG on 40 queries")
    p.add_argument("--calls", type=int, help="endpoint calls per run (default 200; quick 64)")
    p.add_argument("--latency", type=float, default=0.2, help="seconds the fake endpoint takes per request")
    p.add_argument("--corpus", default="", help="a BEIR folder (default ../shared/datasets/cranfield, else the "
                                                "bundled sample corpus: no human queries, so no nDCG)")
    p.add_argument("--chunks", type=int, help="chunks timed per configuration (default 2000; quick 300)")
    p.add_argument("--repeats", type=int, help="timings per configuration, best kept (default 2; quick 1)")
    p.add_argument("--ndcg-queries", type=int, help="nDCG@10 on the first n human queries over their judged "
                   "documents' chunks and as many others (default 0 = every query, the whole corpus; quick 40)")
    p.add_argument("--skip", default="", help="comma list: endpoint, embedding, training, writing")
    p.add_argument("--train-steps", type=int, help="training steps timed per configuration (default 8; quick 3)")
    p.add_argument("--train-configs", default="", help="comma list of words: only the training configurations "
                   "whose name contains one (e.g. 'mini-batch,micro-batches')")
    p.add_argument("--train-child", help=argparse.SUPPRESS)   # one training configuration, in its own process
    p.add_argument("--writer-queries", type=int, help="chunks the query writer writes for per configuration "
                   "(default 96; quick 24)")
    p.add_argument("--writer-batches", default=WRITER_BATCHES, help="the local writer's batch sizes, comma list "
                   "(default 1,4,8,16; the first is the reference)")
    p.add_argument("--llama-compile-s", type=float, default=LLAMA_COMPILE_S,
                   help="seconds `pip install llama-cpp-python` took to compile on this machine, for the pay-back "
                        "verdict")
    p.add_argument("--corpus-chunks", type=int, default=9755,
                   help="the corpus the llama.cpp verdict is for (default 9,755 chunks: a 5,000-document "
                        "SciFact-sized corpus)")
    p.add_argument("--writer-child", type=int, help=argparse.SUPPRESS)   # one writer batch size, in its own process
    p.add_argument("--llama-child", action="store_true", help=argparse.SUPPRESS)   # llama.cpp, in its own process
    args = p.parse_args()
    skip = set(args.skip.split(","))
    corpus = Path(args.corpus) if args.corpus else ROOT.parent / "shared" / "datasets" / "cranfield"
    if not corpus.exists():
        from assets.corpus.sample import sample_corpus_path

        corpus = sample_corpus_path(Path(tempfile.mkdtemp(prefix="throughput-")))
    if args.train_child:
        train_child(args.train_child, str(corpus), args.train_steps or 3)
        return 0
    n_written = args.writer_queries or (24 if args.quick else 96)
    if args.writer_child:
        writer_child(args.writer_child, str(corpus), n_written)
        return 0
    if args.llama_child:
        from resources.llm_local import LocalGGUFLLMResource

        result = llama_cpp_rate(corpus, n_written, LocalGGUFLLMResource.model_fields["max_new_tokens"].default)
        print("LLAMA " + json.dumps(result), flush=True)
        return 0
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    if "endpoint" not in skip:
        endpoint_rows(args.calls or (64 if args.quick else 200), args.latency)
    if "embedding" not in skip:
        embedding_rows(corpus, args.chunks or (300 if args.quick else 2000), args.repeats or (1 if args.quick else 2),
                       args.ndcg_queries if args.ndcg_queries is not None else (40 if args.quick else 0))
    if "training" not in skip:
        training_rows(corpus, args.train_steps or (3 if args.quick else 8), args.train_configs)
    if "writing" not in skip:
        query_writing_rows(corpus, n_written, [int(b) for b in args.writer_batches.split(",") if b],
                           args.llama_compile_s, args.corpus_chunks)
    print("\n| row | measured | ratio | note |\n|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    print(f"\nrerun: {CMD} {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
