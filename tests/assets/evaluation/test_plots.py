"""Tier 1: the before/after chart is a real PNG per query set, under a file-safe name."""
from assets.evaluation.plots import family, report_charts, safe_name


def _entry(kind: str, n: int) -> dict:
    return {"kind": kind, "n_queries": n, "retrievers": {
        "bm25": {"ndcg@10": 0.4},
        "dense_base": {"ndcg@10": 0.5, "baseline": "bm25", "delta_ndcg@10": 0.1, "ci95": [0.02, 0.18], "p_value": 0.01},
        "dense_finetuned": {"ndcg@10": 0.48, "baseline": "dense_base", "delta_ndcg@10": -0.02,
                            "ci95": [-0.05, 0.01], "p_value": 0.3},
        "dense_finetuned+rerank_finetuned": {"ndcg@10": 0.6, "baseline": "dense_finetuned",
                                             "delta_ndcg@10": 0.12, "ci95": [0.05, 0.2], "p_value": 0.0001}}}


def test_one_png_per_query_set(tmp_path):
    report = {"query_sets": {"synthetic/test": _entry("synthetic", 40), "human/cran field/test": _entry("human", 6)}}
    charts = report_charts(report, tmp_path / "plots")
    assert {n: p.name for n, p in charts.items()} == {"synthetic/test": "synthetic_test.png",
                                                      "human/cran field/test": "human_cran_field_test.png"}
    for path in charts.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_names_and_colour_families():
    assert safe_name("human/../x") == "human_.._x" and "/" not in safe_name("a/b")
    assert [family(r) for r in ("bm25", "hybrid_base", "dense_distilled", "bm25+rerank_offtheshelf")] == [
        "baseline", "baseline", "trained", "reranked"]
