"""Test-only variants of the essayscore Bento for the soak's negative control and the fault checks.

    ESSAYSCORE_TEST_LEAK_KB_PER_REQUEST=512 bentoml serve loadtests.leaky_service:EssayScoreService
    ESSAYSCORE_TEST_REQUEST_TIMEOUT_S=0.05 bentoml serve loadtests.leaky_service:EssayScoreService

The production service (``service.py``) carries no test switch; this module imports it and, only when asked by
environment variables, changes what its worker builds:

* ``ESSAYSCORE_TEST_LEAK_KB_PER_REQUEST``: an outermost ASGI middleware that keeps that many KB (written, so the
  pages are resident) for every request to /score, /score_batch or /metadata, forever: a deliberate leak that
  ``loadtests/soak.py --negative-control`` must catch;
* ``ESSAYSCORE_TEST_REQUEST_TIMEOUT_S``: the request guard's timeout (``essayscore.http_guard.ApiGuard``, 300 s
  in service.py, not a setting), lowered so that an ordinary request exceeds it and gets the guard's 504.

Without either variable the service is exactly service.py's. Never shipped: bentofile.yaml includes no loadtests/.
"""

from __future__ import annotations

import os

from service import EssayScoreService  # served from here, with the switches below

LEAK_ENV = "ESSAYSCORE_TEST_LEAK_KB_PER_REQUEST"
TIMEOUT_ENV = "ESSAYSCORE_TEST_REQUEST_TIMEOUT_S"
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
    timeout = os.environ.get(TIMEOUT_ENV)
    if timeout:
        from essayscore.http_guard import ApiGuard

        guards = [options for cls, options in EssayScoreService.middlewares if cls is ApiGuard]
        if len(guards) != 1:
            raise RuntimeError(f"{TIMEOUT_ENV}: expected one ApiGuard on the service, found {len(guards)}")
        guards[0]["timeout_s"] = float(timeout)
    if leak_kb > 0:
        EssayScoreService.add_asgi_middleware(LeakMiddleware, kb=leak_kb)


_apply()
