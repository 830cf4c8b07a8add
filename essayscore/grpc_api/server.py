"""``essayscore grpc-serve``: the scoring API over gRPC (``essayscore.v1.EssayScore``) plus grpc.health.v1.

    ESSAYSCORE_MODEL_TAG=essayscore:latest essayscore grpc-serve --port 50051

A separate process beside the Bento (BentoML 1.4's new-style services serve HTTP only), loading the same artifact
through the same settings (``ESSAYSCORE_MODEL_TAG``, ``ESSAYSCORE_RUNTIME``, ``ESSAYSCORE_TRITON_URL``...) and
answering through the same :class:`essayscore.scoring_api.ScoringApi` as ``service.py``: the same request path,
validation, formatting, warnings and explanation. Scoring is synchronous and CPU-bound, so it runs in a thread
pool; the event loop only moves bytes.

Errors end the call with a status, the message as details, and the project's error code in the trailing metadata
``error-code`` (plus ``error-field`` when one field is at fault); :data:`STATUS_BY_CODE` maps codes to statuses:
validation codes -> INVALID_ARGUMENT; ``batch_too_large`` -> RESOURCE_EXHAUSTED (``empty`` batch:
INVALID_ARGUMENT); ``runtime_unavailable`` (also while the model loads) -> UNAVAILABLE; ``scoring_failed`` (HTTP
422: a valid request whose essay the model could not score) -> INVALID_ARGUMENT, not FAILED_PRECONDITION: no
change of the system's state makes a retry succeed, the problem is that input; ``internal_error`` -> INTERNAL.
Requests over ``scoring_api.max_body_bytes(settings)`` are refused by gRPC itself (RESOURCE_EXHAUSTED, no
error-code), as the HTTP service answers 413; more than ``--max-concurrent`` calls at once too (HTTP: 429).

Health (``grpc.health.v1.Health``, services ``""`` and ``essayscore.v1.EssayScore``): NOT_SERVING while the model
loads and whenever ``ScoringApi.ready()`` is false (polled every ``--health-interval`` seconds), else SERVING.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from essayscore.grpc_api import convert
from essayscore.grpc_api._gen import essayscore_pb2 as pb
from essayscore.scoring_api import ScoringApi, max_body_bytes
from essayscore.serving import ItemError
from essayscore.settings import Settings, get_settings, usable_cores

log = logging.getLogger("essayscore.grpc")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["EssayScore"].full_name  # "essayscore.v1.EssayScore"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a full batch with explanations and every issue of 20k-character essays
STATUS_BY_CODE = {
    "batch_too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "runtime_unavailable": grpc.StatusCode.UNAVAILABLE,
    "internal_error": grpc.StatusCode.INTERNAL,
}  # every other code (missing, empty, wrong_type, too_long, no_letters, ..., scoring_failed): INVALID_ARGUMENT


def status_for(code: str) -> grpc.StatusCode:
    return STATUS_BY_CODE.get(code, grpc.StatusCode.INVALID_ARGUMENT)


class _Refused(Exception):
    def __init__(self, error: ItemError):
        super().__init__(error.message)
        self.error = error


class EssayScoreServicer:
    """The three RPCs on a :class:`ScoringApi` loaded in the background (:meth:`load`)."""

    def __init__(self, settings: Settings, executor: ThreadPoolExecutor):
        self.settings = settings
        self.executor = executor
        self.api: ScoringApi | None = None

    async def load(self) -> None:
        self.api = await asyncio.get_running_loop().run_in_executor(self.executor, ScoringApi, self.settings)
        log.info("model %s loaded (%s runtime)", self.api.metadata["model_version"], self.api.runtime.name)

    # -- RPCs (raw request bytes in: parse errors become our own error codes) ---------------------------------
    async def score(self, data: bytes, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return await self._answer(context, self._score, data)

    async def score_batch(self, data: bytes, context: grpc.aio.ServicerContext) -> pb.BatchResponse:
        return await self._answer(context, self._score_batch, data)

    async def metadata(self, data: bytes, context: grpc.aio.ServicerContext) -> pb.MetadataResponse:
        return await self._answer(context, self._metadata, data)

    # -- the work -------------------------------------------------------------------------------------------
    async def _score(self, data: bytes) -> pb.ScoreResponse:
        request = self._parse(pb.ScoreRequest, data)
        refused = convert.wire_error(request)
        if refused is not None:
            raise _Refused(refused)
        ((error, response),) = await self._score_many([convert.request_to_dict(request)])
        if error is not None:
            raise _Refused(error)
        assert response is not None
        return convert.response_to_proto(response)

    async def _score_batch(self, data: bytes) -> pb.BatchResponse:
        batch = self._parse(pb.BatchRequest, data)
        refused = convert.wire_error(batch) or self._ready_api().check_batch(batch.items)
        if refused is not None:
            raise _Refused(refused)
        # an item sent with a wrong wire type fails alone, as a malformed JSON item does over HTTP
        early = [convert.wire_error(item) for item in batch.items]
        scored = iter(await self._score_many(
            [convert.request_to_dict(item) for item, e in zip(batch.items, early) if e is None]))
        return convert.batch_to_proto([(e, None) if e is not None else next(scored) for e in early])

    async def _metadata(self, data: bytes) -> pb.MetadataResponse:
        self._parse(pb.MetadataRequest, data)
        return convert.metadata_to_proto(self._ready_api().metadata)

    async def _score_many(self, raw_items: list[dict]) -> list[tuple[ItemError | None, dict | None]]:
        from essayscore.runtimes import RuntimeUnavailable

        api = self._ready_api()
        loop = asyncio.get_running_loop()
        try:
            answered = await loop.run_in_executor(self.executor, api.score_many, raw_items)
        except RuntimeUnavailable as exc:
            raise _Refused(ItemError("runtime_unavailable", str(exc), None, 503)) from exc
        return [(outcome.error, response) for outcome, response in answered]

    def _ready_api(self) -> ScoringApi:
        if self.api is None:
            raise _Refused(ItemError("runtime_unavailable", "the model is still loading", None, 503))
        return self.api

    @staticmethod
    def _parse(message_type: type, data: bytes) -> Any:
        parsed = convert.parse(message_type, data)
        if isinstance(parsed, ItemError):
            raise _Refused(parsed)
        return parsed

    @staticmethod
    async def _answer(context: grpc.aio.ServicerContext, work: Callable[[bytes], Awaitable[Any]],
                      data: bytes) -> Any:
        try:
            return await work(data)
        except _Refused as exc:
            error = exc.error
        except Exception as exc:  # any other failure is answered INTERNAL, never a hang
            log.exception("internal error")
            error = ItemError("internal_error", f"{type(exc).__name__}: {exc}", None, 500)
        metadata: list[tuple[str, str]] = [("error-code", error.code)]
        if error.field is not None:
            metadata.append(("error-field", error.field))
        await context.abort(status_for(error.code), error.message, trailing_metadata=tuple(metadata))
        raise AssertionError("unreachable: abort raises")


def _handlers(servicer: EssayScoreServicer) -> grpc.GenericRpcHandler:
    def unary(fn: Callable, response_type: type[Message]) -> grpc.RpcMethodHandler:
        # request_deserializer None: the handler gets the raw bytes (see convert.parse)
        return grpc.unary_unary_rpc_method_handler(fn, response_serializer=response_type.SerializeToString)

    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Score": unary(servicer.score, pb.ScoreResponse),
        "ScoreBatch": unary(servicer.score_batch, pb.BatchResponse),
        "Metadata": unary(servicer.metadata, pb.MetadataResponse),
    })


async def _watch_health(servicer: EssayScoreServicer, health_servicer: Any, interval_s: float) -> None:
    """Publish SERVING / NOT_SERVING from ``ScoringApi.ready()`` (its own thread: a Triton probe may block)."""
    probe = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
    loop = asyncio.get_running_loop()
    last = None
    try:
        while True:
            ready = False
            if servicer.api is not None:
                try:
                    ready = await loop.run_in_executor(probe, servicer.api.ready)
                except Exception:  # a probe that fails means not ready
                    log.exception("readiness probe failed")
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            if status != last:
                for name in ("", SERVICE_NAME):
                    await health_servicer.set(name, status)
                log.info("health: %s", health_pb2.HealthCheckResponse.ServingStatus.Name(status))
                last = status
            await asyncio.sleep(interval_s)
    finally:
        probe.shutdown(wait=False, cancel_futures=True)


async def serve(host: str = "127.0.0.1", port: int = 50051, *, settings: Settings | None = None,
                threads: int | None = None, max_concurrent: int = 32, health_interval_s: float = 2.0) -> None:
    """Run until SIGTERM / SIGINT: listen at once (health NOT_SERVING), load the model, then answer."""
    settings = settings or get_settings()
    executor = ThreadPoolExecutor(max_workers=threads or max(2, usable_cores()), thread_name_prefix="score")
    servicer = EssayScoreServicer(settings, executor)
    health_servicer = health.aio.HealthServicer()
    server = grpc.aio.server(maximum_concurrent_rpcs=max_concurrent, options=[
        ("grpc.max_receive_message_length", max_body_bytes(settings)),
        ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ])
    server.add_generic_rpc_handlers((_handlers(servicer),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    log.warning("essayscore gRPC listening on %s:%d (model %s, %s runtime; loading)", host, port,
                settings.model_tag, settings.runtime)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.ensure_future(servicer.load())
    watcher = asyncio.ensure_future(_watch_health(servicer, health_servicer, health_interval_s))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopped], return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is not None:
        stop.set()  # an artifact that cannot load ends the process (non-zero exit, below)
    await stopped
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5.0)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    executor.shutdown(wait=False, cancel_futures=True)
    if loading.done():
        loading.result()  # re-raise a load failure
    else:
        loading.cancel()


def run(args: argparse.Namespace) -> None:
    """The ``essayscore grpc-serve`` command (its arguments: essayscore/cli.py)."""
    settings = get_settings()
    if args.model:
        settings = settings.model_copy(update={"model_tag": args.model})
    log.setLevel(logging.INFO)
    asyncio.run(serve(args.host, args.port, settings=settings, threads=args.threads,
                      max_concurrent=args.max_concurrent, health_interval_s=args.health_interval))


