"""Error kinds of the datastore, shared by the service, the SDK and the CLI.

Every error the datastore raises on purpose is a :class:`DatastoreError` with a :class:`Kind`;
the gRPC layer maps the kind to a status code in exactly one interceptor, and the CLI maps it
to a one-line message and a non-zero exit. Messages quote the offending value.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    INVALID_ARGUMENT = "invalid argument"
    NOT_FOUND = "not found"
    ALREADY_EXISTS = "already exists"
    RESOURCE_EXHAUSTED = "resource exhausted"
    UNAVAILABLE = "unavailable"
    PERMISSION_DENIED = "permission denied"
    UNAUTHENTICATED = "unauthenticated"
    FAILED_PRECONDITION = "failed precondition"


class DatastoreError(Exception):
    """An expected failure with a kind that maps to one gRPC status code."""

    kind: Kind = Kind.INVALID_ARGUMENT

    def __init__(self, message: str, kind: Kind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class InvalidArgument(DatastoreError):
    kind = Kind.INVALID_ARGUMENT


class NotFound(DatastoreError):
    kind = Kind.NOT_FOUND


class AlreadyExists(DatastoreError):
    kind = Kind.ALREADY_EXISTS


class ResourceExhausted(DatastoreError):
    kind = Kind.RESOURCE_EXHAUSTED


class Unavailable(DatastoreError):
    kind = Kind.UNAVAILABLE


class CorruptStore(DatastoreError):
    """The SQLite file is not an sssd datastore, or is damaged."""

    kind = Kind.FAILED_PRECONDITION


def one_line(exc: BaseException) -> str:
    """An error in one line: a gRPC error as "CODE: details" (its text runs over several lines and
    carries a debug string), any other as its message with its line breaks folded."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details) and code() is not None:
        return f"{code().name}: {details()}"
    return " ".join(str(exc).split()) or type(exc).__name__


def connection_hint(text: str, tls: bool, flag: str) -> str:
    """What a failed call's text (``one_line``) says of a server of the wrong kind at the address,
    naming ``flag``, the setting that gives the CA ("" when it says nothing): a server that serves
    TLS closes a plaintext connection, which gRPC reports only as "Socket closed"; an HTTP/1
    server (a /metrics port) answers what gRPC calls a frame it cannot parse; another gRPC
    service has no method of this one."""
    if not tls and text.startswith("UNAVAILABLE") and "Socket closed" in text:
        return f" (a server that serves TLS closes plaintext connections this way: does it need {flag}?)"
    if tls and "WRONG_VERSION_NUMBER" in text:
        return f" (the server speaks plaintext: leave out {flag})"
    if "Failed parsing HTTP/2" in text:
        return " (an HTTP/1 server answered, not a gRPC one: a --metrics-port?)"
    if text.startswith("UNIMPLEMENTED: Method not found"):
        return " (the gRPC server there is not an sssd datastore, or one older than this client)"
    return ""
