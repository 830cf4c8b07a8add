"""Reloading a Triton model whose python-backend stub process died.

Triton 2.51 never relaunches a python-backend stub that died (killed, out of memory): every request routed to that
model instance fails with ``Stub process 'preprocess_0_0' is not healthy``, while the model and the server keep
reporting ready, so no readiness probe or orchestrator notices (measured: docs/reliability.md, "Faults"). Loading
the model again starts a new stub. The Bento's Triton runtime is the one that sees the failure, so it asks Triton
to do that, through the repository API: unload, then load (a bare load of an unchanged model is a no-op that leaves
the dead stub). The API needs Triton to run with ``--model-control-mode=explicit --load-model=*``;
``devtools.triton_launcher`` starts it that way.

* One reload at a time per process, in a background thread: requests keep their short, clear 503 meanwhile.
* At most one reload of a model per ``cooldown_s`` per process. Several Bento workers may each see the failure: a
  worker skips the reload when the repository index says the model is not READY (another worker is reloading it).
* When the server refuses the repository API (another model-control mode), that is logged once with the fix, and
  nothing else changes: the requests still get their 503.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("essayscore.triton")

_DEAD_STUB = re.compile(r"Stub process '(?P<instance>[^']+)' is not healthy")
# Triton names a model's instances <model>_<group>_<index> (preprocess_0_0)
_INSTANCE_SUFFIX = re.compile(r"_\d+_\d+$")


def dead_stub_model(error: BaseException | str) -> str | None:
    """The model whose python stub died, from a Triton error's text; None for any other error."""
    match = _DEAD_STUB.search(str(error))
    if match is None:
        return None
    return _INSTANCE_SUFFIX.sub("", match.group("instance")) or None


@dataclass
class ReloadRecord:
    model: str
    started: float
    seconds: float | None = None
    error: str | None = None


@dataclass
class StubReloader:
    """Asks the Triton server at ``url`` to reload models whose stub died (see the module docstring)."""

    url: str
    protocol: str = "http"
    cooldown_s: float = 30.0
    timeout_s: float = 120.0  # a load waits for the model's initialize (a fresh stub imports the package)
    history: list[ReloadRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _running: set[str] = field(default_factory=set, repr=False)
    _last: dict[str, float] = field(default_factory=dict, repr=False)
    _refused: bool = field(default=False, repr=False)

    def notice(self, error: BaseException | str) -> str | None:
        """Starts a reload when ``error`` says a stub died and none is due; returns that model's name, else None."""
        model = dead_stub_model(error)
        if model is None or self._refused:
            return None
        now = time.monotonic()
        with self._lock:
            if model in self._running or now - self._last.get(model, -1e9) < self.cooldown_s:
                return model
            self._running.add(model)
            self._last[model] = now
        threading.Thread(target=self._reload, args=(model,), name=f"triton-reload-{model}", daemon=True).start()
        return model

    def wait(self, timeout_s: float) -> bool:
        """True once no reload is running (for callers and tests that need the outcome)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if not self._running:
                    return True
            time.sleep(0.1)
        return False

    # -- the repository API ----------------------------------------------------------------------------------
    def _client(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(self.url)
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                network_timeout=self.timeout_s)

    def _state(self, client, model: str) -> str | None:
        index = client.get_model_repository_index()
        entries = index if isinstance(index, list) else [
            {"name": m.name, "state": m.state} for m in getattr(index, "models", [])]
        states = [e.get("state") for e in entries if e.get("name") == model]
        return states[0] if states else None

    def _wait_unloaded(self, client, model: str, timeout_s: float = 60.0) -> None:
        # under load the unload of a model with a dead stub took ~30 s here (docs/reliability.md): load only once
        # the repository index no longer reports the old one
        end = time.monotonic() + timeout_s
        while self._state(client, model) in ("READY", "UNLOADING") and time.monotonic() < end:
            time.sleep(0.2)

    def _reload(self, model: str) -> None:
        record = ReloadRecord(model, time.monotonic())
        self.history.append(record)
        client = None
        try:
            client = self._client()
            state = self._state(client, model)
            if state not in (None, "READY"):  # another worker is unloading or loading it
                record.error = f"skipped: the model is {state}"
                log.info("triton: model %r has a dead stub but is %s (another worker is reloading it)", model, state)
                return
            log.warning("triton: the python stub of model %r died; asking Triton to unload and load it", model)
            client.unload_model(model)
            self._wait_unloaded(client, model)
            client.load_model(model)
            record.seconds = time.monotonic() - record.started
            log.warning("triton: model %r reloaded in %.1f s (new stub)", model, record.seconds)
        except Exception as exc:  # noqa: BLE001 - any failure is logged; the requests keep their 503
            record.error = f"{type(exc).__name__}: {exc}"
            if "not allowed" in str(exc).lower() or "polling" in str(exc).lower():
                self._refused = True
                log.error("triton: cannot reload model %r: %s. Start Triton with --model-control-mode=explicit "
                          "--load-model=* so that a dead python stub is replaced without a restart", model, exc)
            else:
                log.error("triton: reloading model %r failed: %s", model, record.error)
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - a broken client may fail to close
                    pass
            with self._lock:
                self._running.discard(model)
