"""The Triton runtime: each essay goes to the ``essay_scorer`` ensemble of a Triton server through
:mod:`essayscore.triton_io` (``tritonclient`` HTTP or gRPC, by ``settings.triton_protocol``).

* Timeouts: ``settings.triton_timeout_s`` bounds connecting and each inference (HTTP connection/network timeouts,
  gRPC ``client_timeout``); readiness probes use at most 2 s.
* Retries: a transport failure (connection refused/reset, UNAVAILABLE, deadline exceeded, model not loaded) is
  retried ``settings.triton_retries`` times with a short backoff, then :class:`RuntimeUnavailable` is raised (the
  service answers 503). A request Triton itself rejects is that item's error, not retried.
* Recovery: clients are per thread and dropped after a transport failure, so when Triton comes back (same
  address) the next request or readiness probe reconnects; no restart of the Bento is needed. A model whose
  python-backend stub died (Triton never relaunches it) is reloaded through Triton's repository API
  (:mod:`essayscore.triton_recovery`, ``settings.triton_reload_dead_stubs``); meanwhile requests get 503.
* Explanations: the ensemble returns FEATURE_VECTOR (the model's input row); the handcrafted values (for the
  explanation's "value" fields and the warnings) are recovered by undoing the artifact's z-scoring
  (``Preprocessor.handcrafted``), so nothing is recomputed here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from essayscore import triton_io
from essayscore.artifacts import Artifact
from essayscore.result import EssayResult
from essayscore.runtimes import Batch, Item, RuntimeUnavailable
from essayscore.settings import get_settings
from essayscore.triton_recovery import StubReloader

# "not healthy": a python-backend stub process died ("Stub process 'preprocess_0_0' is not healthy")
_TRANSIENT_MARKERS = ("unavailable", "deadline", "connect", "timed out", "timeout", "unknown model",
                      "not ready", "not found", "reset by peer", "broken pipe", "socket closed", "not healthy")


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    status = getattr(exc, "status", None)
    if callable(status):
        try:
            text += f" {status()}".lower()
        except Exception:  # noqa: BLE001 - a client error's status() may itself fail; the text alone then decides
            pass
    return any(marker in text for marker in _TRANSIENT_MARKERS)


class TritonRuntime:
    name = "triton"
    encoder_backend = "triton"  # whatever the repository's encoder model runs (cpu: ONNX int8, gpu: ONNX fp16)

    def __init__(self, artifact: Artifact | Path, url: str | None = None, protocol: str | None = None,
                 timeout_s: float | None = None, retries: int | None = None):
        settings = get_settings()
        self.artifact = Artifact.of(artifact)
        self.artifact_dir = self.artifact.dir
        self.version = self.artifact.version
        self.preprocessor = self.artifact.preprocessor()
        self.url = url or settings.triton_url
        self.protocol = protocol or settings.triton_protocol
        self.timeout_s = float(timeout_s if timeout_s is not None else settings.triton_timeout_s)
        self.retries = int(retries if retries is not None else settings.triton_retries)
        self._local = threading.local()
        self.reloader = (StubReloader(self.url, self.protocol, cooldown_s=settings.triton_reload_cooldown_s)
                         if settings.triton_reload_dead_stubs else None)

    # -- clients ------------------------------------------------------------------------------------------------
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                import tritonclient.grpc as grpcclient

                client = grpcclient.InferenceServerClient(self.url)
            else:
                import tritonclient.http as httpclient

                client = httpclient.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                          network_timeout=self.timeout_s)
            self._local.client = client
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a broken client may fail to close
                pass

    def ready(self) -> bool:
        """The server is up and the ``essay_scorer`` ensemble is loaded (answers within 2 s)."""
        probe = min(2.0, self.timeout_s)
        try:
            if self.protocol == "grpc":
                client = self._client()
                return bool(client.is_server_ready(client_timeout=probe)
                            and client.is_model_ready(triton_io.ENSEMBLE, client_timeout=probe))
            import urllib.request

            url = f"http://{self.url}/v2/models/{triton_io.ENSEMBLE}/ready"
            with urllib.request.urlopen(url, timeout=probe) as resp:
                return resp.status == 200
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            if self.protocol == "grpc":
                self._drop_client()
            return False

    # -- scoring ------------------------------------------------------------------------------------------------
    def infer(self, essay: str, prompt: str | None) -> EssayResult:
        """One ensemble call with bounded retries; raises RuntimeUnavailable when Triton cannot answer."""
        kwargs: dict[str, Any] = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        last: BaseException | None = None
        deadline = time.monotonic() + self.timeout_s * (self.retries + 1)
        for attempt in range(self.retries + 1):
            try:
                result = triton_io.score(self._client(), essay, prompt, handcrafted=self.preprocessor.handcrafted,
                                         **kwargs)
                break
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                last = exc
                self._drop_client()
                reloading = self.reloader.notice(exc) if self.reloader is not None else None
                if reloading is not None:  # retrying cannot help before the model's new stub is up
                    raise RuntimeUnavailable(
                        f"the Triton server at {self.url} cannot run model {reloading!r}: its python stub died; "
                        f"this service has asked Triton to reload it (retry in a few seconds): {exc}") from exc
                if attempt < self.retries and time.monotonic() < deadline:
                    time.sleep(min(0.25 * 2 ** attempt, 2.0))
        else:
            raise RuntimeUnavailable(f"the Triton server at {self.url} ({self.protocol}) is unavailable after "
                                     f"{self.retries + 1} attempts: {type(last).__name__}: {last}")
        if result.model_version != self.version:
            raise RuntimeUnavailable(f"Triton serves model {result.model_version}, but this service explains "
                                     f"model {self.version}; redeploy one of them")
        return result

    def score(self, items: Sequence[Item]) -> Batch:
        out: list[EssayResult | Exception] = []
        t0 = time.perf_counter()
        for item in items:
            try:
                out.append(self.infer(item.essay, item.prompt))
            except RuntimeUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - Triton rejected this item: that item's error
                out.append(exc)
        return Batch(out, {"triton_ms": (time.perf_counter() - t0) * 1e3})
