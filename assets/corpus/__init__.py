"""Corpus: a team's documents, read from a folder, a .jsonl/.parquet file or a BEIR folder, cut into chunks.

A BEIR folder also brings human-written queries with relevance judgments (qrels). Those are kept aside as
`human_queries`: only the evaluation reads them; neither the query generator nor the trainer ever sees them.
Chunks are token windows (the embedder's own tokenizer) with overlap, identified by a hash of their text,
so an unchanged chunk keeps its id (and its cached LLM calls) across runs.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from assets.common import preview, stable_hash
from assets.corpus.chunking import chunk_documents, load_tokenizer
from assets.corpus.manifest import chunk_changes, read_manifest, write_manifest
from assets.corpus.readers import is_beir_folder, read_beir_queries, read_documents
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
    max_tokens: int = 256       # all-MiniLM-L6-v2 reads 256 word pieces; longer chunks would be truncated
    overlap: int = 32           # ~1-2 sentences shared by neighbouring windows, so no fact is cut in two


@dg.multi_asset(
    outs={
        "documents": dg.AssetOut(description="The corpus's documents: doc_id, title, text, source."),
        "human_queries": dg.AssetOut(description="Human-labelled test query sets that came with the corpus (BEIR "
                                                 "qrels other than train/dev): only the evaluation reads them."),
        "qrels_feedback": dg.AssetOut(description="A BEIR folder's qrels/train.tsv and qrels/dev.tsv: judged feedback "
                                                  "that training may read."),
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
    all_sets = read_beir_queries(path) if is_beir_folder(path) else []
    query_sets = [s for s in all_sets if not is_training_qrels(s.name)]
    judged = [s for s in all_sets if is_training_qrels(s.name)]
    skipped = {f"skipped_{k}": dg.MetadataValue.int(v) for k, v in report.skipped.items()}
    yield dg.Output(
        docs,
        output_name="documents",
        metadata={
            "corpus": name,
            "corpus_path": str(path),
            "n_documents": len(docs),
            **skipped,
            "skipped_examples": dg.MetadataValue.json(report.examples),
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


@dg.asset(group_name="corpus", compute_kind="python")
def chunks(context: dg.AssetExecutionContext, documents: pd.DataFrame, config: ChunkingConfig,
           embedder: EmbedderResource, workspace: WorkspaceResource) -> dg.Output[pd.DataFrame]:
    """Token-window chunks of every document, with content-hash ids and duplicates removed."""
    tokenizer = load_tokenizer(embedder.base_model_path())
    out, stats = chunk_documents(documents, tokenizer=tokenizer, max_tokens=config.max_tokens, overlap=config.overlap)
    out.attrs["corpus_name"] = documents.attrs.get("corpus_name", "corpus")
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
            **changes,
            "corpus_hash": out.attrs["corpus_hash"],
            **{k: (float(v) if isinstance(v, float) else int(v)) for k, v in stats.items()},
            "preview": preview(out[["chunk_id", "doc_id", "n_tokens", "text"]]),
        },
    )
