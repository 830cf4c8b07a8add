"""One essay's result: the one typed shape every runtime produces and every consumer reads.

The embedded scorer builds it from :class:`essayscore.scoring_model.Predictions`; the Triton postprocess step
builds it the same way and :mod:`essayscore.triton_io` carries it over the wire (``result_tensors`` /
``decode_response``); the service, the batch CLI and the benchmarks read its fields. A new score field is added
here, in ``Predictions.result`` and in the two wire functions, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from essayscore.bands import CEFR_LEVELS
from essayscore.features.grammar import GrammarMatch


@dataclass(frozen=True)
class EssayResult:
    ielts_band: float  # half band; 3.5 reads "4 or below"
    ielts_raw: float  # continuous band: proficiency + length_adjustment, clipped to 0-9
    band_interval: tuple[float, float]  # conformal interval on the half-band grid
    cefr: str  # the band -> CEFR table applied to the proficiency (before the Task 2 length rule)
    cefr_probabilities: Mapping[str, float]  # A1..C2, summing to 1
    length_adjustment: float  # band points the Task 2 under-length rule took off (<= 0)
    model_version: str
    # What explanations and warnings read: the model's input row (ScoringModel.feature_names order), the raw
    # handcrafted values (FEATURES order) and the grammar matches (offsets into the essay as sent).
    feature_vector: np.ndarray = field(repr=False, compare=False)
    handcrafted: np.ndarray = field(repr=False, compare=False)
    matches: tuple[GrammarMatch, ...] = field(default=(), repr=False, compare=False)

    @property
    def band_label(self) -> str:
        return "<4" if self.ielts_band < 4.0 else f"{self.ielts_band:g}"

    @property
    def cefr_vector(self) -> np.ndarray:
        """The probabilities in CEFR_LEVELS order."""
        return np.array([self.cefr_probabilities[level] for level in CEFR_LEVELS], dtype=np.float64)

    def scores(self) -> dict:
        """The score fields as plain JSON values (no model input)."""
        return {"ielts_band": self.ielts_band, "ielts_raw": self.ielts_raw,
                "band_interval": list(self.band_interval), "cefr": self.cefr,
                "cefr_probabilities": dict(self.cefr_probabilities), "length_adjustment": self.length_adjustment,
                "model_version": self.model_version}
