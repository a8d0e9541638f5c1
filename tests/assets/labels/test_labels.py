import pandas as pd

from assets.labels import LabelConfig, labels_frame, plan_judgements
from resources.llm import Judgment

QUERIES = pd.DataFrame({"query_id": ["q1", "q2"], "chunk_id": ["c1", "c2"], "doc_id": ["d1", "d2"],
                        "style": "question", "text": ["what is lift", "what is drag"]})
TEXT = {f"c{i}": f"text {i}" for i in range(6)}


def test_plan_judges_the_source_first_then_other_candidates():
    reqs = plan_judgements(QUERIES, {"q1": ["c3", "c1", "c4", "c5"], "q2": []}, TEXT, LabelConfig(candidates_per_query=2))
    assert [(r.query, r.chunk_id) for r in reqs] == [("what is lift", "c1"), ("what is lift", "c3"),
                                                    ("what is lift", "c4"), ("what is drag", "c2")]
    assert all(r.source_chunk_id == {"what is lift": "c1", "what is drag": "c2"}[r.query] for r in reqs)


def test_labels_frame_maps_judgments_back_to_query_ids():
    js = [(Judgment("what is lift", "c1", 3, -1.0, "j", False), "c1"),
          (Judgment("what is lift", "c3", 0, -4.0, "j", True), "c1"),
          (Judgment("unknown query", "c3", 2, -1.0, "j", False), "c9")]
    df = labels_frame(js, QUERIES)
    assert list(df["query_id"]) == ["q1", "q1"]
    assert list(df["is_source"]) == [True, False] and list(df["grade"]) == [3, 0]
