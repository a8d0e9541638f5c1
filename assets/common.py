"""Small helpers every stage uses to describe what it produced in the Dagster UI."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import dagster as dg
import pandas as pd


# Markdown that would turn a document's title, a query or an LLM's answer into markup (a link, an image, HTML,
# code, emphasis, a heading, a table cell): backslash-escaped, except <, > and &, which become entities
# (CommonMark escapes any ASCII punctuation with a backslash, but other renderers do not escape "<").
_MD_ESCAPES = str.maketrans({**{c: "\\" + c for c in "\\`*_[]()!#|~"}, "<": "&lt;", ">": "&gt;", "&": "&amp;"})


def md_text(value, max_chars: int | None = None) -> str:
    """Untrusted text as one line of literal markdown: it shows as typed and renders no link, image, HTML tag
    or formatting. Cut to `max_chars` (with …) before escaping, so a cut never splits an escape."""
    s = " ".join(str(value).split())
    cut = max_chars is not None and len(s) > max_chars
    return (s[: max_chars - 1] if cut else s).translate(_MD_ESCAPES) + ("…" if cut else "")


def markdown_table(df: pd.DataFrame, max_rows: int = 5, max_chars: int = 120) -> str:
    """A GitHub-flavoured markdown table of the first rows, long cells cut, every cell escaped (md_text): cells
    hold documents, queries and LLM answers."""
    if df.empty:
        return "_(no rows)_"
    head = df.head(max_rows)

    def cell(v) -> str:
        return md_text(f"{v:.4f}" if isinstance(v, float) else v, max_chars)

    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]   # ours
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.itertuples(index=False)]
    return "\n".join(lines)


def preview(df: pd.DataFrame, max_rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(df, max_rows))


def image(path, alt: str = "plot") -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI (markdown with a data URI: the UI renders it, no file server needed)."""
    import base64
    from pathlib import Path

    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def save_figure(fig, path, dpi: int = 100):
    """Write a matplotlib figure as PNG (folders made as needed), close it, and return the path."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def stable_hash(items: Iterable[str], n: int = 16) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode())
        h.update(b"\0")
    return h.hexdigest()[:n]


def stable_fraction(key: str, seed: int = 0) -> float:
    """A deterministic number in [0, 1) for a key: sampling and splitting that do not move between runs."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12


def stable_sample(df: pd.DataFrame, key: str, n: int, seed: int = 0) -> pd.DataFrame:
    """The same `n` rows on every run (ordered by a hash of `key`); n = 0 or n >= len(df) keeps all rows.

    Stable samples keep reruns cheap: the rows chosen last time are chosen again, and their LLM calls are cached.
    """
    if not n or len(df) <= n:
        return df
    order = df[key].map(lambda k: stable_fraction(str(k), seed))
    return df.loc[order.sort_values(kind="stable").index[:n]]


def progress_logger(context, stage: str, every_fraction: float = 0.1):
    """A progress(done, total) callback that logs about ten lines per stage, so long stages show life."""
    state = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if total and (done / total >= state["next"] or done == total):
            context.log.info(f"{stage}: {done}/{total} ({100 * done / total:.0f}%)")
            state["next"] = done / total + every_fraction

    return progress
