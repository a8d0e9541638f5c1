"""Corpus: a team's documents, read from a folder, a .jsonl/.parquet file or a BEIR folder, cut into chunks.

A BEIR folder also brings human-written queries with relevance judgments (qrels). Those are kept aside as
`human_queries`: only the evaluation reads them; neither the query generator nor the trainer ever sees them.
Chunks are token windows (the embedder's own tokenizer; a provider's is not local, so then the bundled MiniLM's
word pieces count the tokens) with overlap, or whole sentences packed up to a token budget
(ChunkingConfig.method), identified by a hash of their text, so an unchanged chunk keeps its id (and its
cached LLM calls) across runs.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import md_text, preview, stable_hash
from assets.corpus.chunkers import Chunker, chunker
from assets.corpus.chunking import load_tokenizer
from assets.corpus.manifest import chunk_changes, read_manifest, write_manifest
from assets.corpus.readers import is_beir_folder, read_beir_queries, read_documents, restrict_to_corpus
from assets.corpus.sample import sample_corpus_path
from resources.embedder import EmbedderResource
from resources.workspace import WorkspaceResource


TRAINING_QRELS = ("train", "dev")   # qrels files that are feedback to learn from; every other one is a test set


def is_training_qrels(set_name: str) -> bool:
    return set_name.rsplit("/", 1)[-1] in TRAINING_QRELS


class CorpusConfig(dg.Config):
    path: str = ""              # folder / .jsonl / .parquet / BEIR folder; "" -> the bundled sample corpus
    name: str = ""              # names the MLflow experiment; "" -> the folder or file name
    max_doc_mb: float = 20.0    # larger files are skipped and counted, never read whole


class ChunkingConfig(dg.Config):
    method: str = "tokens"      # "tokens": overlapping token windows; "sentences": whole sentences packed up to
    #   max_tokens (assets/corpus/chunkers.py). chunker_baselines scores others against this one on human queries
    max_tokens: int = 256       # all-MiniLM-L6-v2 reads 256 word pieces; longer chunks would be truncated
    overlap: int = 32           # ~1-2 sentences shared by neighbouring windows, so no fact is cut in two (tokens only)

    def chunker(self) -> Chunker:
        return chunker(self.method, self.max_tokens, self.overlap)


@dg.multi_asset(
    outs={
        "documents": dg.AssetOut(description="The corpus's documents: doc_id, title, text, source."),
        "human_queries": dg.AssetOut(description="Human-labelled test query sets that came with the corpus (BEIR "
                                                 "qrels other than train/dev): only the evaluation reads them."),
        "qrels_feedback": dg.AssetOut(description="A BEIR folder's qrels/train.tsv and qrels/dev.tsv: judged feedback "
                                                  "that training may read."),
        "corpus_report": dg.AssetOut(description="What reading the corpus skipped, by reason, and the judgments left "
                                                 "out because they name a document the corpus lacks: the CLI's final "
                                                 "summary and evaluation.md show it."),
    },
    group_name="corpus",
    compute_kind="python",
)
def corpus(context: dg.AssetExecutionContext, config: CorpusConfig, workspace: WorkspaceResource):
    path = Path(config.path).expanduser() if config.path else sample_corpus_path(Path(workspace.home))
    docs, report = read_documents(path, max_bytes=int(config.max_doc_mb * 1_000_000))
    if docs.empty:
        raise ValueError(f"no readable documents under {path}: skipped {report.skipped}; point corpus.path at a "
                         "folder of .md/.txt/.html files, a .jsonl/.parquet of documents, or a BEIR folder")
    name = config.name or path.resolve().name.removesuffix(path.suffix) or "corpus"
    docs.attrs["corpus_name"] = name
    all_sets, qrels_dropped = restrict_to_corpus(read_beir_queries(path) if is_beir_folder(path) else [],
                                                 docs["doc_id"])
    for set_name, d in qrels_dropped.items():
        context.log.warning(f"{set_name}: {d['qrels_missing_document']} judgments name a document the corpus lacks "
                            f"(e.g. {', '.join(d['examples'][:3])}); left out, and {d['queries_dropped']} queries "
                            "with no relevant document left were dropped")
    query_sets = [s for s in all_sets if not is_training_qrels(s.name)]
    judged = [s for s in all_sets if is_training_qrels(s.name)]
    yield dg.Output(
        docs,
        output_name="documents",
        metadata={
            "corpus": name,
            "corpus_path": str(path),
            "n_documents": len(docs),
            "documents_skipped": report.n_skipped,   # by reason, with examples: corpus_report
            "preview": preview(docs[["doc_id", "title", "text"]]),
        },
    )
    yield dg.Output(
        query_sets,
        output_name="human_queries",
        metadata={
            "n_sets": len(query_sets),
            "sets": dg.MetadataValue.json({s.name: {"queries": len(s.queries), "qrels": sum(map(len, s.qrels.values()))}
                                           for s in query_sets}),
            "preview": preview(pd.DataFrame(
                [{"set": s.name, "query_id": q, "text": s.queries.get(q, ""),
                  "relevant_docs": sum(g > 0 for g in rel.values())} for s in query_sets for q, rel in s.qrels.items()],
                columns=["set", "query_id", "text", "relevant_docs"])),
        },
    )
    yield dg.Output(judged, output_name="qrels_feedback", metadata={
        "n_sets": len(judged),
        "sets": dg.MetadataValue.json({s.name: {"queries": len(s.queries), "qrels": sum(map(len, s.qrels.values()))}
                                       for s in judged}),
    })
    summary = corpus_summary(len(docs), report, qrels_dropped)
    yield dg.Output(summary, output_name="corpus_report", metadata={
        "documents_read": len(docs), "documents_skipped": report.n_skipped,
        **{f"skipped_{k}": dg.MetadataValue.int(v) for k, v in report.skipped.items()},
        **{f"decoded_as_{k}": dg.MetadataValue.int(v) for k, v in report.decoded_as.items()},
        "qrels_missing_document": sum(d["qrels_missing_document"] for d in qrels_dropped.values()),
        "human_queries_dropped": sum(d["queries_dropped"] for d in qrels_dropped.values()),
        "summary": dg.MetadataValue.json(summary),
    })


def corpus_summary(n_read: int, report, qrels_dropped: dict[str, dict]) -> dict:
    """The corpus_report value: what was read, what was skipped by reason (with examples), what was decoded
    from a legacy encoding, and per query set the judgments of missing documents and the queries dropped."""
    return {"documents_read": n_read, "skipped": dict(report.skipped), "examples": dict(report.examples),
            "decoded_as": dict(report.decoded_as), "qrels_dropped": qrels_dropped}


def corpus_report_lines(summary: dict) -> list[str]:
    """One line per skip reason and per query set that lost judgments (empty when nothing was skipped)."""
    lines = [f"- documents skipped, {reason}: {n} (e.g. {md_text(', '.join(summary['examples'].get(reason, [])[:3]))})"
             for reason, n in sorted(summary.get("skipped", {}).items())]
    lines += [f"- documents decoded as {enc} (not UTF-8): {n}" for enc, n in sorted(summary.get("decoded_as", {}).items())]
    lines += [f"- {md_text(name)}: {d['qrels_missing_document']} judgments name a document the corpus lacks, left out; "
              f"{d['queries_dropped']} queries dropped (no relevant document left)"
              for name, d in sorted(summary.get("qrels_dropped", {}).items())]
    return lines


@dg.asset(group_name="corpus", compute_kind="python")
def chunks(context: dg.AssetExecutionContext, documents: pd.DataFrame, config: ChunkingConfig,
           embedder: EmbedderResource, workspace: WorkspaceResource) -> dg.Output[pd.DataFrame]:
    """Chunks of every document (token windows by default), with content-hash ids and duplicates removed."""
    tokenizer = load_tokenizer(embedder.tokenizer_path())   # a provider's is not local: the bundled MiniLM's
    context.log.info(f"chunks: tokens counted with {embedder.tokenizer_note()}")
    shipped = config.chunker()
    out, stats = shipped.chunk(documents, tokenizer)
    out.attrs["corpus_name"] = documents.attrs.get("corpus_name", "corpus")
    out.attrs["chunker"] = shipped.name      # chunker_baselines compares other chunkers with this one
    out.attrs["corpus_hash"] = stable_hash(sorted(out["chunk_id"]))
    manifest = workspace.path("state") / "chunks_manifest.parquet"
    changes = chunk_changes(read_manifest(manifest), out)
    write_manifest(manifest, out)
    context.log.info(f"chunks: {changes['chunks_new']} new, {changes['chunks_removed']} removed, "
                     f"{changes['chunks_unchanged']} unchanged since the last run")
    return dg.Output(
        out,
        metadata={
            "n_chunks": len(out),
            "chunker": shipped.name,
            **changes,
            "corpus_hash": out.attrs["corpus_hash"],
            "tokenizer": embedder.tokenizer_note(),
            **{k: (float(v) if isinstance(v, float) else int(v)) for k, v in stats.items()},
            "preview": preview(out[["chunk_id", "doc_id", "n_tokens", "text"]]),
        },
    )
