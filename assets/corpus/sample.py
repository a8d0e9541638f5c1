"""The bundled sample corpus: the Python Language Reference topics that ship inside CPython.

``pydoc_data.topics`` (in every CPython install, used by ``help("assignment")``) holds ~80 sections of the
Python Language Reference and Library Reference as plain text: real technical documentation, written by
the CPython documentation authors, licensed under the PSF License, available offline. Each topic becomes
one ``.txt`` document, so a fresh install can run the whole pipeline with no download and no data of the
user's own. The content follows the running Python's version (3.11.x here); for a given version the
folder is byte-for-byte the same on every machine.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

README = """\
Sample corpus for flywheel: {n} topics of the Python Language Reference, one .txt file per topic,
taken from the `pydoc_data.topics` module of CPython {version} (the text `help("<topic>")` shows).
Source: https://docs.python.org/3/reference/ (CPython's Doc/ folder). Copyright Python Software
Foundation; licensed under the PSF License Agreement (https://docs.python.org/3/license.html).
This README has no .md/.txt suffix so that the document reader skips it (counted as "unsupported").
"""


def write_sample_corpus(dest: Path) -> Path:
    """Writes one .txt file per pydoc topic (plus a README) into ``dest`` and returns ``dest``."""
    from pydoc_data.topics import topics

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted(topics):
        (dest / f"{name}.txt").write_text(topics[name].strip() + "\n", encoding="utf-8")
    version = ".".join(map(str, sys.version_info[:3]))
    (dest / "README").write_text(README.format(n=len(topics), version=version), encoding="utf-8")
    return dest


def sample_corpus_path(home: Path) -> Path:
    """``home/sample_corpus``, written first if absent (atomically, so a crash never leaves half of it)."""
    target = Path(home) / "sample_corpus"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sample_corpus-", dir=target.parent))
    try:
        write_sample_corpus(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():  # a concurrent run that won the race is fine; anything else is not
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
