"""Document and query readers: turn what a user points at into one table of documents.

Three inputs are understood:

- a folder of ``.md`` / ``.txt`` / ``.html`` / ``.htm`` files, read recursively in sorted order; the
  ``doc_id`` is the path relative to the folder (``guides/install.md``), so it stays stable between runs;
- a ``.jsonl`` or ``.parquet`` file, one document a row, with an id field (``id``, ``_id`` or ``doc_id``),
  a text field (``text``, ``contents`` or ``body``) and an optional ``title``;
- a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), the layout of the human-labelled
  test collections; its queries and relevance labels come from :func:`read_beir_queries`.

Real corpora hold junk: empty files, images that slipped in, a 2 GB log, a half-written line, a symlink
that points at itself. Each such item is skipped and *counted* in a :class:`ReadReport` (reason -> count,
with a few examples) that the asset shows as metadata; nothing here crashes on one bad document. Files over
``max_bytes`` are skipped from their size on disk, without being read. A text file that is not UTF-8 is
not junk: it is decoded as Windows-1252 (a superset of Latin-1's printable range), else Latin-1, and counted
under ``decoded_as`` (a note, not a skip); only bytes with NULs or mostly control characters are binary.
"""

from __future__ import annotations

import csv
import errno
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

TEXT_SUFFIXES = {".md", ".txt", ".html", ".htm"}
ID_FIELDS = ("id", "_id", "doc_id")
TEXT_FIELDS = ("text", "contents", "body")
COLUMNS = ["doc_id", "title", "text", "source"]
MAX_EXAMPLES = 5
EXPECTED = (
    "expected a folder of .md/.txt/.html/.htm files, a .jsonl or .parquet file of documents "
    "(fields: id/_id/doc_id, text/contents/body, optional title), or a BEIR folder holding corpus.jsonl"
)


@dataclass
class ReadReport:
    """What was read and what was skipped, and why."""

    n_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> up to 5 paths / ids
    decoded_as: dict[str, int] = field(default_factory=dict)  # non-UTF-8 encoding -> files read with it

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


@dataclass
class HumanQuerySet:
    """Human-written queries with their relevance labels, one split of one collection."""

    name: str  # "<folder>/<split>", e.g. "cranfield/test"
    queries: dict[str, str]  # qid -> text, only queries that have relevant documents
    qrels: dict[str, dict[str, int]]  # qid -> {doc_id: grade > 0}


# ---------------------------------------------------------------------------------------------------
# HTML -> visible text


class _VisibleText(HTMLParser):
    """Collects the text a browser would show; block elements become line / paragraph breaks."""

    HIDDEN = {"script", "style", "noscript", "template", "head", "svg"}
    BLOCK = {"p", "div", "section", "article", "header", "footer", "li", "ul", "ol", "table", "tr",
             "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "br", "hr", "dt", "dd", "main"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag in self.HIDDEN:
            self._hidden += 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag, attrs):
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self._in_title:
            self.title_parts.append(data)
        elif not self._hidden:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page; paragraphs separated by blank lines."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    paragraphs = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
    text = "\n\n".join(p for p in paragraphs if p)
    return " ".join("".join(parser.title_parts).split()), text


_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _markdown_title(text: str) -> str:
    match = _MD_TITLE.search(text[:2000])
    return match.group(1) if match else ""


# ---------------------------------------------------------------------------------------------------
# folders of files


_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 12, 13))


def decode_text(data: bytes) -> tuple[str | None, str]:
    """(text, encoding) of a file's bytes; (None, "binary") for bytes no text file holds.

    UTF-8 first (a BOM is dropped); else Windows-1252, the encoding most legacy "Latin-1" files really
    use; else Latin-1, which decodes any byte. Binary: a NUL byte, or over 5% control characters."""
    if b"\x00" in data or (data and sum(data.count(c) for c in _CONTROL) > 0.05 * len(data)):
        return None, "binary"
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:   # cp1252 leaves 5 bytes undefined
        return data.decode("latin-1"), "latin-1"


def _read_text_file(path: Path, root: Path, max_bytes: int, report: ReadReport) -> dict | None:
    doc_id = path.relative_to(root).as_posix() if path != root else path.name
    try:
        if path.stat().st_size > max_bytes:
            report.skip("too_large", doc_id)
            return None
        data = path.read_bytes()
    except OSError:
        report.skip("unreadable", doc_id)
        return None
    raw, encoding = decode_text(data)
    if raw is None:
        report.skip("binary", doc_id)
        return None
    if encoding != "utf-8":
        report.decoded_as[encoding] = report.decoded_as.get(encoding, 0) + 1
    if path.suffix.lower() in {".html", ".htm"}:
        title, text = html_to_text(raw)
    else:
        text = raw.strip()
        title = _markdown_title(text) if path.suffix.lower() == ".md" else ""
    if not text.strip():
        report.skip("empty", doc_id)
        return None
    return {"doc_id": doc_id, "title": title, "text": text, "source": str(path)}


def _walk(root: Path, report: ReadReport) -> list[Path]:
    """Every visible file under root. A symlink that loops (or points nowhere) is counted, never followed;
    symlinked folders are not descended into, so a link to an ancestor cannot loop either."""
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink():
            try:
                p.resolve(strict=True)
            except RuntimeError:   # a symlink loop (Python < 3.13)
                report.skip("symlink_loop", rel.as_posix())
                continue
            except OSError as e:   # ELOOP on newer Pythons; a dangling link
                report.skip("symlink_loop" if e.errno == errno.ELOOP else "broken_symlink", rel.as_posix())
                continue
        if p.is_file():
            files.append(p)
    return sorted(files)


def _read_folder(root: Path, max_bytes: int, report: ReadReport) -> Iterator[dict]:
    files = _walk(root, report)
    supported = [p for p in files if p.suffix.lower() in TEXT_SUFFIXES]
    if not supported:
        raise UnreadableCorpus(f"corpus {root} holds no supported document ({len(files)} other files): {EXPECTED}")
    for p in files:
        if p.suffix.lower() not in TEXT_SUFFIXES:
            report.skip("unsupported", p.relative_to(root).as_posix())
    for p in supported:
        row = _read_text_file(p, root, max_bytes, report)
        if row is not None:
            yield row


# ---------------------------------------------------------------------------------------------------
# record files: jsonl, parquet, BEIR corpus.jsonl


def _first(record: dict, names: tuple[str, ...]):
    for name in names:
        if record.get(name) is not None:
            return record[name]
    return None


def _record_to_row(record, where: str, source: str, max_bytes: int, report: ReadReport) -> dict | None:
    if not isinstance(record, dict):
        report.skip("bad_json", where)
        return None
    doc_id, text = _first(record, ID_FIELDS), _first(record, TEXT_FIELDS)
    if doc_id is None:
        report.skip("no_id_field", where)
        return None
    if text is None:
        report.skip("no_text_field", f"{where} ({doc_id})")
        return None
    if not isinstance(text, str):
        report.skip("bad_json", where)  # a text that is not a string
        return None
    doc_id = str(doc_id)
    text = text.strip()
    if len(text) > max_bytes:
        report.skip("too_large", doc_id)
        return None
    if not text:
        report.skip("empty", doc_id)
        return None
    title = record.get("title")
    title = " ".join(title.split()) if isinstance(title, str) else ""
    return {"doc_id": doc_id, "title": title, "text": text, "source": source}


def _iter_jsonl_lines(path: Path, max_bytes: int, report: ReadReport):
    """Yields (line number, decoded line); an over-long line is skipped without being held in memory."""
    with path.open("rb") as f:
        lineno = 0
        while True:
            line = f.readline(max_bytes + 1)
            if not line:
                return
            lineno += 1
            if len(line) > max_bytes and not line.endswith(b"\n"):
                report.skip("too_large", f"{path.name}:{lineno}")
                while line and not line.endswith(b"\n"):  # drain the rest of the line in pieces
                    line = f.readline(1 << 20)
                continue
            try:
                yield lineno, line.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                report.skip("bad_json", f"{path.name}:{lineno}")


def _read_jsonl(path: Path, source: str, max_bytes: int, report: ReadReport) -> Iterator[dict]:
    for lineno, line in _iter_jsonl_lines(path, max_bytes, report):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            report.skip("bad_json", where)
            continue
        row = _record_to_row(record, where, source, max_bytes, report)
        if row is not None:
            yield row


def _read_parquet(path: Path, max_bytes: int, report: ReadReport) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise UnreadableCorpus(f"corpus {path} cannot be read as parquet ({e}): {EXPECTED}") from e
    names = set(pf.schema_arrow.names)
    if not names & set(ID_FIELDS) or not names & set(TEXT_FIELDS):
        raise UnreadableCorpus(f"corpus {path} has columns {sorted(names)}: {EXPECTED}")
    wanted = [c for c in (*ID_FIELDS, *TEXT_FIELDS, "title") if c in names]
    n = 0
    for batch in pf.iter_batches(columns=wanted, batch_size=10_000):
        for record in batch.to_pylist():
            n += 1
            row = _record_to_row(record, f"{path.name}:row {n}", str(path), max_bytes, report)
            if row is not None:
                yield row


class UnreadableCorpus(ValueError):
    """A corpus path that does not exist or holds no readable document."""


def _rows(path: Path, max_bytes: int, report: ReadReport) -> Iterator[dict]:
    """The documents under ``path``, one row at a time, by the kind of path: the one dispatch both readers use."""
    if not path.exists():
        raise UnreadableCorpus(f"corpus {path} does not exist: {EXPECTED}")
    suffix = path.suffix.lower()
    if is_beir_folder(path):
        return _read_jsonl(path / "corpus.jsonl", f"beir:{path.name}", max_bytes, report)
    if path.is_dir():
        return _read_folder(path, max_bytes, report)
    if suffix == ".jsonl":
        return _read_jsonl(path, str(path), max_bytes, report)
    if suffix == ".parquet":
        return _read_parquet(path, max_bytes, report)
    if suffix in TEXT_SUFFIXES:
        return (r for r in [_read_text_file(path, path, max_bytes, report)] if r is not None)
    raise UnreadableCorpus(f"corpus {path} is not a supported file: {EXPECTED}")


# ---------------------------------------------------------------------------------------------------
# public API


def is_beir_folder(path: str | Path) -> bool:
    """True for a folder in the BEIR layout (it holds corpus.jsonl)."""
    path = Path(path)
    return path.is_dir() and (path / "corpus.jsonl").is_file()


def read_documents(path: str | Path, *, max_bytes: int = 20_000_000) -> tuple[pd.DataFrame, ReadReport]:
    """Documents under ``path`` as a frame (doc_id, title, text, source) and a report of what was skipped.

    Raises UnreadableCorpus (a ValueError) when ``path`` does not exist or holds nothing this reader understands.
    """
    report = ReadReport()
    docs = pd.DataFrame(list(_rows(Path(path).expanduser(), max_bytes, report)), columns=COLUMNS).astype(str)
    duplicated = docs["doc_id"].duplicated()
    for doc_id in docs.loc[duplicated, "doc_id"]:
        report.skip("duplicate_id", doc_id)  # keep the first document with a given id
    docs = docs.loc[~duplicated].reset_index(drop=True)
    report.n_read = len(docs)
    return docs, report


def check_documents(path: str | Path, *, max_bytes: int = 20_000_000) -> None:
    """Raises UnreadableCorpus, in a sentence, when ``path`` does not exist or holds no readable document.

    Cheap: it stops at the first document that reads, so the CLI can refuse a wrong --corpus in a second,
    before Dagster starts or a home is created."""
    path = Path(path).expanduser()
    report = ReadReport()
    if next(_rows(path, max_bytes, report), None) is not None:
        return
    why = ", ".join(f"{n} {reason}" for reason, n in report.skipped.items()) or "nothing in it"
    raise UnreadableCorpus(f"corpus {path} holds no readable document ({why}): {EXPECTED}")


def _read_queries(path: Path) -> dict[str, str]:
    queries = {}
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                queries[str(record["_id"])] = str(record["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno} is not a BEIR query line {{\"_id\", \"text\"}}: {e}") from e
    return queries


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or (lineno == 1 and row[0].strip().lower() in {"query-id", "query_id", "qid"}):
                continue
            try:
                qid, doc_id, grade = row[0].strip(), row[1].strip(), int(float(row[2]))
            except (IndexError, ValueError) as e:
                raise ValueError(
                    f"{path}:{lineno} is not a qrels row 'query-id<TAB>corpus-id<TAB>score': {row!r}"
                ) from e
            if grade > 0:
                qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def read_beir_queries(path: str | Path) -> list[HumanQuerySet]:
    """One HumanQuerySet per qrels/<split>.tsv of a BEIR folder, in split-name order."""
    path = Path(path)
    if not is_beir_folder(path):
        raise ValueError(f"{path} is not a BEIR folder: expected corpus.jsonl, queries.jsonl and qrels/*.tsv.")
    queries_file = path / "queries.jsonl"
    if not queries_file.is_file():
        raise ValueError(f"{path} has no queries.jsonl: a BEIR folder needs it to evaluate on human queries.")
    texts = _read_queries(queries_file)
    sets = []
    for qrels_file in sorted((path / "qrels").glob("*.tsv")):
        qrels = {qid: rel for qid, rel in _read_qrels(qrels_file).items() if qid in texts}
        queries = {qid: texts[qid] for qid in qrels}
        sets.append(HumanQuerySet(name=f"{path.name}/{qrels_file.stem}", queries=queries, qrels=qrels))
    return sets


def restrict_to_corpus(sets: list[HumanQuerySet], doc_ids) -> tuple[list[HumanQuerySet], dict[str, dict]]:
    """The query sets with every judgment of a document the corpus lacks left out, and what was left out.

    A query whose relevant documents are all missing is dropped: it is not a query every retriever fails,
    it is a query no retriever could answer. Returns (sets, {set name: {"qrels_missing_document",
    "queries_dropped", "examples"}}) for the sets that lost anything."""
    known = set(doc_ids)
    kept, dropped = [], {}
    for s in sets:
        qrels, missing, lost, examples = {}, 0, 0, []
        for qid, rel in s.qrels.items():
            present = {d: g for d, g in rel.items() if d in known}
            missing += len(rel) - len(present)
            if len(examples) < MAX_EXAMPLES:
                examples += [f"{qid} -> {d}" for d in rel if d not in known][:MAX_EXAMPLES - len(examples)]
            if present:
                qrels[qid] = present
            else:
                lost += 1
        if missing:
            dropped[s.name] = {"qrels_missing_document": missing, "queries_dropped": lost, "examples": examples}
        kept.append(HumanQuerySet(name=s.name, queries={q: s.queries[q] for q in qrels}, qrels=qrels))
    return kept, dropped
