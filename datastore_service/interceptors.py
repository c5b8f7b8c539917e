"""The one server interceptor: authentication, authorization, error -> status mapping, RPC metrics.

Authorization follows auth.METHOD_RULES, checked on every request message (each message of
a client stream too) before the servicer sees it.

Every Datastore RPC runs inside ``_guard``: DatastoreError kinds become status codes here and
nowhere else; any other exception is logged with its traceback and becomes INTERNAL with a
fixed message (never the exception text). Health and reflection pass through untouched.
"""

from __future__ import annotations

import logging
import sqlite3
import time

import grpc

from datastore_service.auth import Authenticator, authorize, principal_var
from datastore_service.store import disk_full
from sssd_wire.errors import DatastoreError, Kind
from datastore_service.metrics import Metrics

log = logging.getLogger("sssd.rpc")

SERVICE_PREFIX = "/sssd.datastore.v1.Datastore/"
STATUS = {
    Kind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Kind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Kind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Kind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Kind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Kind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Kind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Kind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
}

UNDECODABLE = object()  # what a body that does not parse becomes: INVALID_ARGUMENT, not gRPC's UNKNOWN + a log


def _tolerant(deserialize):
    def run(data: bytes):
        try:
            return deserialize(data)
        except Exception:  # protobuf's DecodeError and friends
            return UNDECODABLE

    return run


class GuardInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Authenticator, metrics: Metrics) -> None:
        self.auth = auth
        self.metrics = metrics

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(SERVICE_PREFIX):
            return handler
        method = details.method[len(SERVICE_PREFIX) :]
        header = dict(details.invocation_metadata or ()).get("authorization")
        return _wrap(handler, method, header, self)


def _status(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status a call that raised ``exc`` ends with: the one place errors map to codes."""
    if isinstance(exc, DatastoreError):
        return STATUS[exc.kind], str(exc)
    if isinstance(exc, (sqlite3.OperationalError, OSError)):  # the disk: full, read-only, failing
        full = disk_full(exc)
        message = f"datastore storage {'is full' if full else 'failed'}: {exc}"
        log.error("%s in %s (nothing was acknowledged)", message, method)
        return (grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE), message
    log.exception("unexpected error in %s", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (see server log)"


def _book(guard: GuardInterceptor, method: str, code: str, start: float) -> None:
    """A call's end in the metrics: its code, its seconds."""
    guard.metrics.rpcs.labels(method, code).inc()
    guard.metrics.rpc_seconds.labels(method).observe(time.perf_counter() - start)


def _wrap(handler, method: str, header: str | None, guard: GuardInterceptor):
    checked_at = [0]  # the auth file's generation this call's token was last authenticated against

    async def enter(context) -> float:
        checked_at[0] = guard.auth.generation
        principal_var.set(guard.auth.authenticate(header))
        return time.perf_counter()

    async def fail(context, exc: BaseException, start: float):
        code, message = _status(exc, method)
        _book(guard, method, code.name, start)
        await context.abort(code, message)

    def done(start: float) -> None:
        _book(guard, method, "OK", start)

    def admit(request):
        if request is UNDECODABLE:
            raise DatastoreError("the request body is not a valid message of this service's protocol",
                                 Kind.INVALID_ARGUMENT)
        authorize(method, request)
        return request

    def reloaded() -> bool:  # (then the token is authenticated again: an open stream ends with a revoked one)
        """Whether the auth file was reloaded since this call's token was authenticated."""
        if guard.auth.generation == checked_at[0]:
            return False
        checked_at[0] = guard.auth.generation
        principal_var.set(guard.auth.authenticate(header))
        return True

    async def checked_stream(requests):
        async for request in requests:
            reloaded()
            yield admit(request)

    def checked(request, streaming: bool):
        return checked_stream(request) if streaming else admit(request)

    def unary_response(behavior, streaming: bool):
        async def run(request, context):
            start = time.perf_counter()
            try:
                start = await enter(context)
                response = await behavior(checked(request, streaming), context)
            except (grpc.aio.AbortError, KeyboardInterrupt):
                raise
            except Exception as exc:
                await fail(context, exc, start)
            done(start)
            return response

        return run

    def stream_response(behavior, streaming: bool):
        async def run(request, context):
            start = time.perf_counter()
            try:
                start = await enter(context)
                async for response in behavior(checked(request, streaming), context):
                    if not streaming and reloaded():  # (a replica's Follow: its one request checked again)
                        admit(request)
                    yield response
            except (grpc.aio.AbortError, KeyboardInterrupt):
                raise
            except Exception as exc:
                await fail(context, exc, start)
            done(start)

        return run

    ser = dict(request_deserializer=_tolerant(handler.request_deserializer),
               response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary, False), **ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary, True), **ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream, False), **ser)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream, True), **ser)
