"""The one request path: validate -> score -> collect, on any runtime. The HTTP service and the batch CLI both call
:func:`score_requests`, so an input is accepted, refused or scored the same way whichever way it came in.

Every item is validated alone (the ``ScoreRequest`` schema, then :func:`essayscore.validation.check_essay`); all
valid items go to the runtime in one call (the embedded runtime batches them; an essay that breaks the batch
fails alone); the outcomes come back in request order, one per item: an :class:`EssayResult` or an
:class:`ItemError` naming the problem. A runtime that cannot answer at all raises ``RuntimeUnavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from essayscore.api_models import ScoreRequest, map_pydantic_error
from essayscore.result import EssayResult
from essayscore.runtimes import Item, Runtime
from essayscore.validation import InputError, check_essay


@dataclass(frozen=True)
class ItemError:
    """Why one item got no score. ``status``: the HTTP status the service answers it with."""

    code: str
    message: str
    field: str | None = None
    status: int = 400

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field}


@dataclass
class Outcome:
    """One item's outcome: exactly one of ``result`` and ``error`` is set (``request`` when it validated)."""

    request: ScoreRequest | None
    result: EssayResult | None = None
    error: ItemError | None = None
    validation_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass
class Collected:
    outcomes: list[Outcome]
    timings_ms: dict[str, float] = field(default_factory=dict)  # the runtime's stages, for the whole call


def validate(raw: Any) -> ScoreRequest:
    """One raw item (a mapping or a ScoreRequest) -> a validated request with the essay and prompt checked;
    raises InputError or pydantic's ValidationError."""
    request = raw if isinstance(raw, ScoreRequest) else ScoreRequest.model_validate(raw)
    request.essay, request.prompt = check_essay(request.essay, request.prompt)
    return request


def score_requests(runtime: Runtime, raw_items: Sequence[Any]) -> Collected:
    """Validate each item, score the valid ones in one runtime call, collect the outcomes in order."""
    outcomes: list[Outcome] = []
    for raw in raw_items:
        t0 = time.perf_counter()
        try:
            request = validate(raw)
        except InputError as exc:
            outcomes.append(Outcome(None, error=ItemError(exc.code, exc.message, exc.field)))
            continue
        except ValidationError as exc:
            detail = map_pydantic_error(exc.errors(include_input=False, include_context=False))
            outcomes.append(Outcome(None, error=ItemError(**detail)))
            continue
        outcomes.append(Outcome(request, validation_ms=(time.perf_counter() - t0) * 1e3))
    valid = [o for o in outcomes if o.request is not None]
    if not valid:
        return Collected(outcomes)
    batch = runtime.score([Item(o.request.essay, o.request.prompt) for o in valid if o.request is not None])
    for outcome, result in zip(valid, batch.results):
        if isinstance(result, Exception):
            outcome.error = ItemError("scoring_failed", f"{type(result).__name__}: {result}", "essay", 422)
        else:
            outcome.result = result
    return Collected(outcomes, batch.timings_ms)
