"""IELTS bands, half-band rounding and the CEFR levels derived from them."""

from __future__ import annotations

import re

import numpy as np

CEFR_LEVELS: tuple[str, ...] = ("A1", "A2", "B1", "B2", "C1", "C2")
# Lower band bound of each CEFR level above A1 (the project's fixed mapping: >=8.5 C2, >=7.0 C1, >=6.0 B2,
# >=5.0 B1, >=4.0 A2, else A1).
CEFR_CUTS: tuple[float, ...] = (4.0, 5.0, 6.0, 7.0, 8.5)

# "<4" is censored (somewhere in 0-3.5). Training uses 3.5, the nearest half band below the censoring point:
# it keeps the scale contiguous and ordinal, maps to A1 as any band below 4 does, and does not invent a mean
# we cannot observe. Rows keep ``band_censored`` so metrics can be reported with and without them.
CENSORED_BAND_SURROGATE = 3.5
MIN_BAND, MAX_BAND = 0.0, 9.0

_BAND = re.compile(r"^\s*(<)?\s*(\d(?:\.[05])?)\s*$")


def parse_band(label: object) -> tuple[float, bool] | None:
    """``"6.5" -> (6.5, False)``, ``"<4" -> (3.5, True)``; None for anything else (not a half band in 0-9)."""
    match = _BAND.match(str(label))
    if not match:
        return None
    value = float(match.group(2))
    if not MIN_BAND <= value <= MAX_BAND:
        return None
    if match.group(1):
        return (CENSORED_BAND_SURROGATE, True) if value == 4.0 else None
    return value, False


def band_to_cefr(band: float) -> str:
    return CEFR_LEVELS[int(np.searchsorted(CEFR_CUTS, band, side="right"))]


def bands_to_cefr_index(bands: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(CEFR_CUTS), np.asarray(bands, dtype=np.float64), side="right").astype(np.int64)


def round_half(x: np.ndarray | float) -> np.ndarray:
    """Nearest half band, clipped to 0-9."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 2) / 2, MIN_BAND, MAX_BAND)


def half_band_index(bands: np.ndarray) -> np.ndarray:
    """Half bands as ordinal integers (band * 2), the scale QWK is computed on."""
    return np.rint(np.asarray(bands, dtype=np.float64) * 2).astype(np.int64)
