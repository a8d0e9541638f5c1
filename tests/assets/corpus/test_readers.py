"""Readers: every supported input, every counted skip, the errors' wording, the sample corpus."""

import json
from pathlib import Path

import pandas as pd
import pytest

from assets.corpus.readers import (ReadReport, UnreadableCorpus, check_documents, decode_text, is_beir_folder,
                                   read_beir_queries, read_documents, restrict_to_corpus)
from assets.corpus.sample import sample_corpus_path, write_sample_corpus

DATASETS = Path(__file__).resolve().parents[4] / "shared" / "datasets"  # /work/main/tests/.. -> /work/shared

HTML = """<html><head><title>Install  guide</title><style>body {color: red}</style>
<script>var hidden = "do not index me";</script></head>
<body><h1>Installing</h1><p>Run pip&nbsp;install &amp; wait.</p><div>Then restart.</div></body></html>"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# Alpha title\n\nAlpha body text.")
    (tmp_path / "b.txt").write_text("Plain text document.\n")
    (tmp_path / "sub" / "c.html").write_text(HTML)
    (tmp_path / "sub" / "d.HTM").write_text("<p>Upper-case suffix</p>")
    (tmp_path / "empty.txt").write_text("  \n\t \n")
    (tmp_path / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))  # not UTF-8
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.md").write_text("editor swap file")  # dot files are not the user's documents
    with open(tmp_path / "huge.txt", "wb") as f:
        f.truncate(50_000_000)  # sparse: 50 MB on paper, nothing on disk, and must never be read
    return tmp_path


def test_folder_reads_supported_files_sorted_with_relative_ids(folder):
    docs, report = read_documents(folder)
    assert list(docs.columns) == ["doc_id", "title", "text", "source"]
    assert docs["doc_id"].tolist() == ["a.md", "b.txt", "latin1.md", "sub/c.html", "sub/d.HTM"]
    assert docs.set_index("doc_id").loc["b.txt", "text"] == "Plain text document."
    assert docs.set_index("doc_id").loc["a.md", "title"] == "Alpha title"
    assert docs.set_index("doc_id").loc["b.txt", "source"] == str(folder / "b.txt")
    assert report.n_read == 5


def test_a_latin1_file_is_decoded_and_counted_not_dropped_as_binary(folder):
    docs, report = read_documents(folder)
    assert docs.set_index("doc_id").loc["latin1.md", "text"] == "café"
    assert report.decoded_as == {"cp1252": 1}
    assert decode_text("naïve “quotes”".encode("cp1252")) == ("naïve “quotes”", "cp1252")
    assert decode_text(b"\x81\x8d caf\xe9") == ("\x81\x8d café", "latin-1")   # bytes cp1252 leaves undefined
    assert decode_text(b"\x01\x02\x03\x04 mostly control bytes")[0] is None


def test_symlink_loops_and_dangling_links_are_counted_never_followed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("a real document")
    (tmp_path / "loop.txt").symlink_to("loop.txt")
    (tmp_path / "dangling.txt").symlink_to("nowhere.txt")
    (tmp_path / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)   # a folder loop
    docs, report = read_documents(tmp_path)
    assert docs["doc_id"].tolist() == ["a.txt"]
    assert report.skipped == {"symlink_loop": 1, "broken_symlink": 1}
    assert report.examples == {"symlink_loop": ["loop.txt"], "broken_symlink": ["dangling.txt"]}


def test_folder_counts_every_skip_by_reason(folder):
    _, report = read_documents(folder)
    assert report.skipped == {"unsupported": 1, "empty": 1, "binary": 1, "too_large": 1}
    assert report.examples["too_large"] == ["huge.txt"]
    assert report.examples["binary"] == ["binary.txt"]
    assert report.examples["unsupported"] == ["image.png"]


def test_max_bytes_is_configurable(folder):
    _, report = read_documents(folder, max_bytes=10)
    assert report.skipped["too_large"] >= 4  # every real document is over 10 bytes now


def test_html_keeps_visible_text_only(folder):
    docs, _ = read_documents(folder)
    page = docs.set_index("doc_id").loc["sub/c.html"]
    assert page["title"] == "Install guide"
    assert page["text"] == "Installing\n\nRun pip install & wait.\n\nThen restart."
    assert "hidden" not in page["text"] and "color" not in page["text"]


def test_single_text_file(tmp_path):
    (tmp_path / "one.md").write_text("Just one document.")
    docs, _ = read_documents(tmp_path / "one.md")
    assert docs["doc_id"].tolist() == ["one.md"]


def test_jsonl_field_aliases_and_bad_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"id": 1, "title": "One", "text": "first"}),
        json.dumps({"_id": "2", "contents": "second"}),
        "",
        '{"doc_id": "3", "body": "third"',  # cut short
        json.dumps({"doc_id": "4", "body": "fourth"}),
        json.dumps({"text": "no id"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "5", "text": "   "}),
        json.dumps({"id": "1", "text": "same id again"}),
        json.dumps({"id": "6", "title": "a title and no text field"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    docs, report = read_documents(path)
    assert docs["doc_id"].tolist() == ["1", "2", "4"]
    assert docs["text"].tolist() == ["first", "second", "fourth"]
    assert docs["title"].tolist() == ["One", "", ""]
    assert report.skipped == {"bad_json": 2, "no_id_field": 1, "no_text_field": 1, "empty": 1, "duplicate_id": 1}
    assert report.examples["bad_json"][0] == "docs.jsonl:4"
    assert report.examples["no_id_field"] == ["docs.jsonl:6"]
    assert report.examples["no_text_field"] == ["docs.jsonl:10 (6)"]


def test_jsonl_overlong_line_is_skipped_not_read(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": "big", "text": "x" * 5000}) + "\n" + json.dumps({"id": "ok", "text": "y"}))
    docs, report = read_documents(path, max_bytes=1000)
    assert docs["doc_id"].tolist() == ["ok"]
    assert report.skipped == {"too_large": 1}


def test_parquet(tmp_path):
    path = tmp_path / "docs.parquet"
    table = {"doc_id": ["a", "b", "c"], "text": ["alpha", "", "gamma"], "title": ["A", None, "C"]}
    pd.DataFrame(table).to_parquet(path)
    docs, report = read_documents(path)
    assert docs["doc_id"].tolist() == ["a", "c"]
    assert docs["title"].tolist() == ["A", "C"]
    assert report.skipped == {"empty": 1}


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "title": "", "text": ""},
            {"_id": "d3", "title": "T3", "text": "three"}]
    (root / "corpus.jsonl").write_text("\n".join(map(json.dumps, docs)))
    queries = [{"_id": "q1", "text": "first?"}, {"_id": "q2", "text": "second?"}, {"_id": "q3", "text": "none?"}]
    (root / "queries.jsonl").write_text("\n".join(map(json.dumps, queries)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t0\nq2\td3\t1\nq3\td1\t0\n")
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\nq9\td1\t1\n")
    return root


def test_beir_folder_documents(beir):
    assert is_beir_folder(beir) and not is_beir_folder(beir / "qrels")
    docs, report = read_documents(beir)
    assert docs["doc_id"].tolist() == ["d1", "d3"]
    assert set(docs["source"]) == {"beir:tiny"}
    assert report.skipped == {"empty": 1} and report.examples["empty"] == ["d2"]


def test_beir_queries_one_set_per_split_relevant_only(beir):
    sets = {s.name: s for s in read_beir_queries(beir)}
    assert list(sets) == ["tiny/dev", "tiny/test"]
    test = sets["tiny/test"]
    assert test.qrels == {"q1": {"d1": 2}, "q2": {"d3": 1}}  # grade 0 rows dropped, q3 has none left
    assert test.queries == {"q1": "first?", "q2": "second?"}
    assert sets["tiny/dev"].qrels == {"q2": {"d1": 1}}  # q9 has no query text


@pytest.mark.parametrize("make", [
    lambda p: p / "missing",
    lambda p: (p / "notes.csv").write_text("a,b") and p / "notes.csv",
    lambda p: (p / "pic.png").write_bytes(b"x") and p,
])
def test_nothing_readable_raises_saying_what_was_expected(tmp_path, make):
    with pytest.raises(ValueError, match=r"expected a folder of \.md/\.txt/\.html/\.htm files, a \.jsonl"):
        read_documents(make(tmp_path))


def test_read_beir_queries_rejects_a_plain_folder(tmp_path):
    with pytest.raises(ValueError, match="not a BEIR folder"):
        read_beir_queries(tmp_path)


def test_report_keeps_at_most_five_examples():
    report = ReadReport()
    for i in range(7):
        report.skip("empty", str(i))
    assert report.skipped == {"empty": 7} and report.examples["empty"] == ["0", "1", "2", "3", "4"]


def test_sample_corpus_is_deterministic_and_readable(tmp_path):
    first = write_sample_corpus(tmp_path / "a")
    second = write_sample_corpus(tmp_path / "b")
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert "PSF License" in (first / "README").read_text()
    docs, report = read_documents(first)
    assert len(docs) == len(files) - 1 >= 70 and "assignment.txt" in set(docs["doc_id"])
    assert report.skipped == {"unsupported": 1}  # the README, deliberately without a .txt suffix


def test_sample_corpus_path_writes_once(tmp_path):
    path = sample_corpus_path(tmp_path)
    assert path == tmp_path / "sample_corpus" and (path / "assignment.txt").is_file()
    (path / "assignment.txt").write_text("edited")
    assert sample_corpus_path(tmp_path) == path
    assert (path / "assignment.txt").read_text() == "edited"  # present -> not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["sample_corpus"]  # no temporary folder left behind


def test_cranfield():
    root = DATASETS / "cranfield"
    if not root.is_dir():
        pytest.skip(f"{root} is absent (development data, not part of the repository)")
    docs, report = read_documents(root)
    assert len(docs) == 1398 and report.skipped == {"empty": 2}
    assert sorted(report.examples["empty"]) == ["471", "995"]
    (test,) = read_beir_queries(root)
    assert test.name == "cranfield/test"
    assert len(test.queries) == 225 and set(test.queries) == set(test.qrels)
    assert sum(map(len, test.qrels.values())) == 1612
    assert set().union(*test.qrels.values()) <= set(docs["doc_id"]) | {"471", "995"}


def test_check_documents_refuses_a_missing_or_unreadable_corpus_in_one_sentence(tmp_path, folder):
    check_documents(folder)                                   # stops at the first readable document
    with pytest.raises(UnreadableCorpus, match="does not exist"):
        check_documents(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.md").write_text("   ")
    with pytest.raises(UnreadableCorpus, match=r"no readable document \(1 empty\)"):
        check_documents(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no id"}\n{"id": "1"}\n')
    with pytest.raises(UnreadableCorpus, match="1 no_id_field, 1 no_text_field"):
        check_documents(bad)
    with pytest.raises(UnreadableCorpus, match="not a supported file"):
        check_documents(folder / "image.png")


def test_judgments_of_documents_missing_from_the_corpus_are_counted_and_left_out():
    from assets.corpus.readers import HumanQuerySet

    qs = HumanQuerySet("c/test", {"q1": "a", "q2": "b", "q3": "c"},
                       {"q1": {"d1": 2, "gone": 1}, "q2": {"gone": 2, "lost": 1}, "q3": {"d2": 1}})
    (kept,), dropped = restrict_to_corpus([qs], ["d1", "d2"])
    assert kept.qrels == {"q1": {"d1": 2}, "q3": {"d2": 1}}
    assert kept.queries == {"q1": "a", "q3": "c"}     # q2 is answerable by no retriever: not a query at all
    assert dropped == {"c/test": {"qrels_missing_document": 3, "queries_dropped": 1,
                                  "examples": ["q1 -> gone", "q2 -> gone", "q2 -> lost"]}}
    assert restrict_to_corpus([qs], ["d1", "d2", "gone", "lost"])[1] == {}
