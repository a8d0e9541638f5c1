import pandas as pd

from assets.common import markdown_table, stable_fraction, stable_hash, stable_sample


def test_markdown_table_escapes_pipes_and_cuts_long_cells():
    md = markdown_table(pd.DataFrame({"a": ["x|y", "z" * 300], "b": [0.123456, 2]}), max_chars=20)
    assert "x\\|y" in md and "0.1235" in md and "…" in md
    assert md.count("\n") == 3
    assert markdown_table(pd.DataFrame()) == "_(no rows)_"


def test_stable_sample_is_stable_and_sized():
    df = pd.DataFrame({"k": [str(i) for i in range(100)]})
    a, b = stable_sample(df, "k", 10, seed=1), stable_sample(df, "k", 10, seed=1)
    assert list(a["k"]) == list(b["k"]) and len(a) == 10
    assert list(stable_sample(df, "k", 10, seed=2)["k"]) != list(a["k"])
    assert len(stable_sample(df, "k", 0)) == 100
    # a new row can displace at most one chosen row: reruns keep paying only for what is new
    bigger = pd.concat([df, pd.DataFrame({"k": ["new"]})], ignore_index=True)
    assert len(set(stable_sample(bigger, "k", 10, seed=1)["k"]) & set(a["k"])) >= 9


def test_hashes_are_stable():
    assert stable_hash(["a", "b"]) == stable_hash(["a", "b"]) != stable_hash(["ab"])
    assert 0 <= stable_fraction("x") < 1 and stable_fraction("x") == stable_fraction("x")


def test_image_metadata_embeds_the_png(tmp_path):
    import base64

    from assets.common import image

    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    md = image(png, alt="curve").value
    assert md.startswith("![curve](data:image/png;base64,")
    assert base64.b64decode(md.split(",", 1)[1].rstrip(")")) == png.read_bytes()


HOSTILE = "![x](http://evil/x.png) <img src=x onerror=alert(1)> [click](javascript:alert(1))"


def test_hostile_text_in_a_table_cell_renders_as_the_text_itself():
    from assets.common import markdown_table
    from tests.conftest import render_markdown

    md = markdown_table(pd.DataFrame({"title": [HOSTILE, "On lift: *the* `wing`_tip # 2 | 3\nnext line"],
                                      "n": [1, 2]}))
    markup, html = render_markdown(md)
    assert markup == set(), markup
    assert "<img" not in html and "<a " not in html and html.count("<tr>") == 3   # header + 2 rows, no cell split
    # what was typed is what is shown: the markup characters come out as characters
    assert "![x](http://evil/x.png) &lt;img src=x onerror=alert(1)&gt; [click](javascript:alert(1))" in html
    assert "On lift: *the* `wing`_tip # 2 | 3 next line" in html


def test_md_text_escapes_every_markup_character_and_keeps_plain_words():
    from assets.common import md_text

    assert md_text("what is the lift of a wing") == "what is the lift of a wing"
    assert md_text("a\\b `c` *d* _e_ [f](g) !h #i |j ~k <l> &m") == (
        "a\\\\b \\`c\\` \\*d\\* \\_e\\_ \\[f\\]\\(g\\) \\!h \\#i \\|j \\~k &lt;l&gt; &amp;m")
    assert md_text("two\n\n# lines") == "two \\# lines"   # one line: no heading, list or block can start


def test_a_long_hostile_cell_is_cut_before_it_is_escaped():
    from assets.common import markdown_table

    md = markdown_table(pd.DataFrame({"t": ["x" * 18 + "<img src=x>"]}), max_chars=20)
    assert md.splitlines()[-1] == "| " + "x" * 18 + "&lt;…" + " |"   # never half an escape: "&l…" or "\…"
