import numpy as np
import pytest

from essayscore.bands import CEFR_LEVELS, band_to_cefr, bands_to_cefr_index, parse_band, round_half


@pytest.mark.parametrize("label,expected", [
    ("6.5", (6.5, False)), (" 7 ", (7.0, False)), ("9", (9.0, False)), ("4.0", (4.0, False)),
    ("<4", (3.5, True)), (" < 4 ", (3.5, True)), ("0", (0.0, False)),
])
def test_parse_band_accepts_half_bands_and_censored(label, expected):
    assert parse_band(label) == expected


@pytest.mark.parametrize("label", ["", "abc", "6.3", "10", "9.5", "<5", "-1", "nan", "6,5"])
def test_parse_band_rejects_everything_else(label):
    assert parse_band(label) is None


@pytest.mark.parametrize("band,level", [
    (0.0, "A1"), (3.5, "A1"), (3.99, "A1"), (4.0, "A2"), (4.5, "A2"), (5.0, "B1"), (5.5, "B1"), (6.0, "B2"),
    (6.5, "B2"), (7.0, "C1"), (8.0, "C1"), (8.49, "C1"), (8.5, "C2"), (9.0, "C2"),
])
def test_cefr_mapping_boundaries(band, level):
    assert band_to_cefr(band) == level
    assert CEFR_LEVELS[bands_to_cefr_index(np.array([band]))[0]] == level


def test_round_half_clips_to_scale():
    assert list(round_half(np.array([-1.0, 4.26, 4.24, 8.76, 12.0]))) == [0.0, 4.5, 4.0, 9.0, 9.0]
