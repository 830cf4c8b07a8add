"""A test-only variant of the essayscore Bento: the soak's negative control.

    ESSAYSCORE_TEST_LEAK_KB_PER_REQUEST=512 bentoml serve loadtests.leaky_service:EssayScoreService

The production service (``service.py``) carries no test switch; this module imports it and, only when
``ESSAYSCORE_TEST_LEAK_KB_PER_REQUEST`` is set, adds an outermost ASGI middleware that keeps that many KB (written,
so the pages are resident) for every request to /score, /score_batch or /metadata, forever: a deliberate leak that
``loadtests/soak.py --negative-control`` must catch. Without it the service is exactly service.py's. Never
shipped: bentofile.yaml includes no loadtests/.
"""

from __future__ import annotations

import os

from service import EssayScoreService  # served from here, with the switches below

LEAK_ENV = "ESSAYSCORE_TEST_LEAK_KB_PER_REQUEST"
LEAKED: list[bytes] = []  # what the leak keeps, per worker process


class LeakMiddleware:
    """Keeps ``kb`` KB per API request (the soak's negative control)."""

    def __init__(self, app, kb: int, paths: tuple[str, ...] = ("/score", "/score_batch", "/metadata")) -> None:
        self.app, self.size, self.paths = app, kb * 1024, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") in self.paths:
            LEAKED.append(b"\x01" * self.size)  # written bytes: resident, not just reserved
        await self.app(scope, receive, send)


def _apply() -> None:
    leak_kb = int(os.environ.get(LEAK_ENV) or 0)
    if leak_kb > 0:
        EssayScoreService.add_asgi_middleware(LeakMiddleware, kb=leak_kb)


_apply()
