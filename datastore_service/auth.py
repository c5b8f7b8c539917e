"""Bearer tokens with scopes and namespaces.

Auth file (JSON)::

    {"tokens": [
      {"name": "decode-workers", "token": "s3cret", "scopes": ["lookup"], "namespaces": ["llama3"]},
      {"name": "logger", "token": "...", "scopes": ["lookup", "ingest"], "namespaces": ["*"]},
      {"name": "ops", "token": "...", "scopes": ["lookup", "ingest", "admin"], "namespaces": ["*"]}
    ]}

Without an auth file the service is open (every caller has every scope): only sensible on
the loopback interface, which is the default bind address.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hmac
import json
import logging
import stat
from pathlib import Path

from sssd_wire.errors import DatastoreError, Kind
from sssd_wire.settings import token_problem
from sssd_wire.types import NAMESPACE_NAME

log = logging.getLogger("sssd.server")


def warn_if_others_read(path: str, what: str) -> None:
    """A warning when everyone may read the secret file at ``path`` (its target, for a link): any
    user on the machine could take its tokens or key (it was said nowhere). A group's read is left
    alone: it is how a Kubernetes pod that runs as a user (fsGroup) reads its Secret."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:  # (the caller's read says why)
        return
    if mode & stat.S_IROTH:
        log.warning("%s %s is readable by everyone (mode %s): chmod 600 it (a Kubernetes Secret: defaultMode 0400, "
                    "or 0440 with an fsGroup)", what, path, oct(stat.S_IMODE(mode)))

SCOPES = ("lookup", "ingest", "admin")
PLACEHOLDER = "CHANGE-ME"  # how deploy/auth.example.json's tokens begin


@dataclasses.dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    namespaces: frozenset[str]  # "*" = all

    def sees(self, namespace: str) -> bool:
        return "*" in self.namespaces or (namespace != "*" and namespace in self.namespaces)

    def may(self, scope: str, namespace: str | None = None) -> bool:
        """namespace None: the whole service (every namespace), which needs "*"."""
        return scope in self.scopes and self.sees(namespace if namespace is not None else "*")


ANONYMOUS_ALL = Principal("anonymous", frozenset(SCOPES), frozenset({"*"}))
# the caller of the RPC being served: set by the interceptor, read by the servicer's checks
principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ANONYMOUS_ALL)


def _principal(entry, where: str) -> tuple[Principal, str]:
    """One auth-file entry, strictly: a one-line ValueError naming the entry and the field."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: want an object with name, token, scopes, namespaces")
    name = entry.get("name")
    where = f"{where} ({name!r})" if isinstance(name, str) else where
    unknown = set(entry) - {"name", "token", "scopes", "namespaces"}
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: 'name' must be a non-empty string")
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    if not isinstance(entry.get("token"), str) or not entry["token"].strip():
        raise ValueError(f"{where}: 'token' must be a non-empty string")
    # a token no client can present (its holder was refused as unknown): one a call cannot carry, or
    # one with white space at an end (the token a call presents is stripped)
    token = entry["token"]
    problem = token_problem(token) or ("" if token == token.strip() else "starts or ends with white space")
    if problem:
        raise ValueError(f"{where}: 'token' {problem}")
    if token.startswith(PLACEHOLDER):  # (anyone who read the example could call with it)
        raise ValueError(f"{where}: 'token' is deploy/auth.example.json's {PLACEHOLDER} placeholder, known to all: "
                         "put a secret of your own there (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    for field, allowed in (("scopes", set(SCOPES)), ("namespaces", None)):
        value = entry.get(field)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{where}: '{field}' must be a non-empty list of strings"
                             + ('; all namespaces is ["*"]' if field == "namespaces" else ""))
        if allowed is not None and set(value) - allowed:
            raise ValueError(f"{where}: unknown scope(s) {sorted(set(value) - allowed)}; scopes are {list(SCOPES)}")
    # (a name no namespace can have, "llama*" or "llama3 ", gave its holder no namespace, every call refused)
    odd = [n for n in entry["namespaces"] if n != "*" and not NAMESPACE_NAME.match(n)]
    if odd:
        raise ValueError(f"{where}: {odd[0]!r} is no namespace name (want {NAMESPACE_NAME.pattern}, "
                         'or "*" for all namespaces)')
    return Principal(name, frozenset(entry["scopes"]), frozenset(entry["namespaces"])), entry["token"]


class Authenticator:
    """Maps an ``authorization: Bearer <token>`` header to a Principal."""

    def __init__(self, principals: dict[str, Principal] | None) -> None:
        self._by_token = principals  # None = auth disabled
        self.generation = 0  # reloads so far: open streams authenticate again after one

    @property
    def enabled(self) -> bool:
        return self._by_token is not None

    @staticmethod
    def from_file(path: str | None) -> "Authenticator":
        if not path:
            return Authenticator(None)
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"auth file {path}: {exc}") from exc
        warn_if_others_read(path, "auth file")
        if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), list) or not raw["tokens"]:
            raise ValueError(f'auth file {path}: want {{"tokens": [...]}} with at least one entry')
        principals = {}
        for i, entry in enumerate(raw["tokens"]):
            principal, token = _principal(entry, f"auth file {path}: entry {i}")
            if token in principals:
                raise ValueError(f"auth file {path}: entry {i} ({principal.name!r}) repeats another entry's token")
            principals[token] = principal
        return Authenticator(principals)

    def reload(self, path: str) -> int:
        """Take the tokens of the auth file at ``path`` in place of these (a revoked token refused
        from the next call or stream message on, without a restart); the number of tokens. A
        ValueError, and these tokens kept, for a file that does not load; auth off stays off."""
        if self._by_token is None:
            raise ValueError("auth is off on this server (started without --auth-file): nothing to reload")
        principals = Authenticator.from_file(path)._by_token
        self._by_token = principals  # one assignment: a call in flight reads the old map or the new
        self.generation += 1
        return len(principals)

    def authenticate(self, header: str | None) -> Principal:
        """Raises UNAUTHENTICATED for a missing or unknown token."""
        if self._by_token is None:
            return ANONYMOUS_ALL
        if not header or not header.lower().startswith("bearer "):
            raise DatastoreError("missing bearer token", Kind.UNAUTHENTICATED)
        presented = header[7:].strip().encode()
        for token, principal in self._by_token.items():
            if hmac.compare_digest(presented, token.encode()):
                return principal
        raise DatastoreError("unknown bearer token", Kind.UNAUTHENTICATED)


@dataclasses.dataclass(frozen=True)
class Rule:
    """What calling one method takes: a scope (None: any authenticated caller, who then sees
    only its own namespaces) and the request field naming the namespace it acts on (None, or
    an empty value there: the whole service)."""

    scope: str | None
    namespace_field: str | None = None


# every Datastore method's rule, in one place; the interceptor enforces it on every request
# message (each message of a stream too), so the servicer holds no scope checks
METHOD_RULES: dict[str, Rule] = {
    "Ingest": Rule("ingest", "namespace"),
    "IngestStream": Rule("ingest", "namespace"),
    "Lookup": Rule("lookup", "namespace"),
    "LookupStream": Rule("lookup", "namespace"),
    "Stats": Rule(None),
    "ListNamespaces": Rule(None),
    "Compact": Rule("admin", "namespace"),
    "Snapshot": Rule("admin"),
    "DeleteDocuments": Rule("admin", "namespace"),
    "CreateNamespace": Rule("admin", "name"),
    "DropNamespace": Rule("admin", "name"),
    "Follow": Rule("admin"),  # a replica reads every namespace: admin over all of them
}


def authorize(method: str, request, principal: Principal | None = None) -> None:
    """Raises PERMISSION_DENIED when the principal (default: the current call's) may not call
    ``method`` with ``request``; a method without a rule is refused (fail closed)."""
    principal = principal if principal is not None else principal_var.get()
    rule = METHOD_RULES.get(method)
    if rule is None:
        raise DatastoreError(f"method {method!r} has no access rule", Kind.PERMISSION_DENIED)
    if rule.scope is None:
        return
    namespace = (getattr(request, rule.namespace_field) or None) if rule.namespace_field else None  # None: all
    if not principal.may(rule.scope, namespace):
        where = f" on namespace {namespace!r}" if namespace else ""
        raise DatastoreError(f"{principal.name!r} may not {rule.scope}{where}", Kind.PERMISSION_DENIED)
