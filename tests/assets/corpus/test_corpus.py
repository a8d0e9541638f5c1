"""Tier 2: the corpus asset on a small .jsonl, and what its metadata shows in the UI."""
import json

import dagster as dg

from assets.corpus import corpus
from resources.workspace import WorkspaceResource
from tests.conftest import render_markdown

HOSTILE = "![x](http://evil/x.png) <img src=x onerror=alert(1)> [click](javascript:alert(1))"


def test_a_hostile_title_shows_as_text_in_the_documents_preview(tmp_path):
    docs = [{"_id": "evil", "title": HOSTILE, "text": "<script>alert(2)</script> see [here](http://evil) **now**"},
            {"_id": "wing-0", "title": "On lift", "text": "The lift of a wing depends on its angle of attack."}]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    result = dg.materialize([corpus], resources={"workspace": WorkspaceResource(home=str(tmp_path / "home"))},
                            run_config={"ops": {"corpus": {"config": {"path": str(path)}}}})
    assert result.success
    preview = next(m.metadata["preview"].value for m in result.asset_materializations_for_node("corpus")
                   if m.asset_key == dg.AssetKey("documents"))
    markup, html = render_markdown(preview)
    assert markup == set(), markup                           # no link, image, tag or formatting made it through
    assert "<img" not in html and "<script" not in html and "<a " not in html
    assert "![x](http://evil/x.png) &lt;img src=x onerror=alert(1)&gt;" in html   # shown as typed
    assert "&lt;script&gt;alert(2)&lt;/script&gt; see [here](http://evil) **now**" in html
    assert "<td>wing-0</td>\n<td>On lift</td>\n<td>The lift of a wing depends on its angle of attack.</td>" in html
