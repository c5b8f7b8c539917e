"""Configuration trees: command-line flags and environment variables derived from dataclasses.

Every component's knobs are a frozen dataclass; a component that contains another holds its
dataclass as a field (``ServerConfig.datastore``, ``SpeculatorConfig.planner``). This module is
the one place that turns such a tree into flags (``--max-doc-tokens``) and environment
variables (``SSSD_MAX_DOC_TOKENS``), so a default is written once, next to the knob it sets.

Leaf names must be unique within a tree (checked): a flag or a variable names one knob.
Precedence: a flag given on the command line, then the environment, then the default.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import inspect
import io
import math
import os
import re
import textwrap
import tokenize
from collections.abc import Iterator, Mapping

ENV_PREFIX = "SSSD_"
PROCESS_WIDE = frozenset({"SSSD_CACHE"})  # read by every sssd process (sssd.paths), outside any knob tree
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
KIND_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers")}  # (one, a list of them) in errors


def leaves(cls, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dataclasses.Field]]:
    """(path of field names, field) for every non-dataclass field of the tree, depth first."""
    for f in dataclasses.fields(cls):
        if _is_tree(f):
            yield from leaves(type(f.default), path + (f.name,))
        else:
            yield path + (f.name,), f


def _is_tree(f: dataclasses.Field) -> bool:
    return dataclasses.is_dataclass(f.default) and not isinstance(f.default, type)


def _leaf_index(cls) -> dict[str, tuple[tuple[str, ...], dataclasses.Field]]:
    index = {}
    for path, f in leaves(cls):
        if f.name in index:
            raise TypeError(f"{cls.__name__}: knob {f.name!r} appears twice ({'.'.join(index[f.name][0])} "
                            f"and {'.'.join(path)}); leaf names must be unique")
        index[f.name] = (path, f)
    return index


def env_name(leaf: str, prefix: str = ENV_PREFIX) -> str:
    return prefix + leaf.upper()


def flag_name(leaf: str) -> str:
    return "--" + leaf.replace("_", "-")


def require_at_least(config, least: int, names, as_flags: bool = False) -> None:
    """A one-line ValueError for the first field of ``config`` in ``names`` below ``least``: named as
    its flag with ``as_flags`` ("--max-lookup-contexts 0 must be at least 1"), else as the field
    ("max_depth 0 must be >= 1")."""
    for name in names:
        value = getattr(config, name)
        if value < least:
            raise ValueError(f"{flag_name(name)} {value} must be at least {least}" if as_flags
                             else f"{name} {value} must be >= {least}")


def require_above_zero(config, names, as_flags: bool = False) -> None:
    """A one-line ValueError for the first field of ``config`` in ``names`` that is not a finite
    number above 0 (NaN, inf), named as in ``require_at_least`` ("--seconds 0.0 must be above 0")."""
    for name in names:
        value = getattr(config, name)
        if not 0 < value < math.inf:  # (a --timeout of inf failed every call as DEADLINE_EXCEEDED)
            raise ValueError(f"{flag_name(name) if as_flags else name} {value} must be above 0"
                             + (" and finite" if value == math.inf else ""))


def seconds_above_zero(value, what: str = "timeout_s") -> float:
    """``value``, or a one-line ValueError when it is not a finite number of seconds above 0 (as a
    gRPC deadline, -1, NaN and inf alike failed the call at once as DEADLINE_EXCEEDED)."""
    if not 0 < value < math.inf:
        raise ValueError(f"{what} {value} must be a finite number of seconds above 0")
    return value


def deadline(timeout_s, default: float | None = None) -> float | None:
    """A call's deadline: ``timeout_s`` (``seconds_above_zero``), or ``default`` when it is None or 0."""
    return seconds_above_zero(timeout_s) if timeout_s else default


def check_address(address: str, what: str = "address", tls: bool = True) -> str:
    """``address`` (a gRPC target: host:port, [v6]:port, ``dns:[//authority/]name:port``,
    ``ipv4:``/``ipv6:`` lists, ``unix:``) when every port in it is 1..65535; else a one-line
    ValueError. (gRPC takes a port modulo 65536: "127.0.0.1:99999" dialled port 34463.) Also
    refused: an empty address or one with white space, a URL (http://...: gRPC read it as a
    host name), and, for a plaintext channel (``tls`` False), a host without a port (gRPC
    dials 443, where no plaintext sssd serve listens; TLS behind a load balancer may)."""
    # (gRPC logged "no server name supplied" for an empty one; 50051, an int, raised AttributeError)
    if not isinstance(address, str) or not address or address != "".join(address.split()):
        raise ValueError(f"{what} {address!r} must be host:port, without white space")
    if (url := re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", address)) and url[1] != "dns":
        raise ValueError(f"{what} {address!r} is a URL: give host:port (gRPC takes no {url[1]}://)")
    scheme, _, rest = address.partition(":")
    if scheme in ("unix", "unix-abstract", "vsock"):
        return address
    if scheme == "dns":
        targets = [rest.rpartition("/")[2]]  # (past an authority, "//8.8.8.8:53/")
    else:
        targets = rest.split(",") if scheme in ("ipv4", "ipv6") else [address]
    for target in targets:
        host, colon, port = target.rpartition(":")
        bare_v6 = ":" in host and not host.startswith("[")  # "::1" alone: no port to read
        if colon and not bare_v6 and port.isdigit() and not 1 <= int(port) <= 65535:
            raise ValueError(f"{what} {address!r}: port {port} is not in 1..65535")
        if not tls and (not colon or bare_v6 or not port.isdigit()):
            raise ValueError(f"{what} {address!r} names no port: plaintext gRPC would dial 443; give host:port "
                             "(sssd serve listens on 50051 unless told otherwise)")
    return address


# where a server listening on the key takes calls dialled to each loopback address
LOOPBACK_OF = {"localhost": {"127.0.0.1", "::1"}, "": {"127.0.0.1", "::1"}, "::": {"127.0.0.1", "::1"},
               "0.0.0.0": {"127.0.0.1"}}


def dials_itself(target: str, host: str, port: int) -> bool:
    """Whether the gRPC ``target`` (host:port, [v6]:port, dns:///host:port) is a server's own
    listening address, ``host``:``port``: the same host, or a loopback address (or localhost)
    that it listens on. (A name of this machine other than localhost is not resolved.)"""
    if not port:
        return False
    name = target.partition(":")[2].rpartition("/")[2] if target.startswith("dns:") else target
    dialled, colon, dialled_port = name.rpartition(":")
    if not colon or dialled_port != str(port):
        return False
    dialled, host = dialled.strip("[]").lower(), host.strip("[]").lower()
    if dialled == "localhost":  # either loopback: a server listening on any of them, or on every address
        return host in LOOPBACK_OF or host in LOOPBACK_OF["localhost"]
    return dialled == host or dialled in LOOPBACK_OF.get(host, ())


def tls_ca_bytes(path: str, what: str = "TLS CA bundle") -> bytes:
    """The PEM certificates at ``path`` that a TLS channel trusts; a one-line ValueError naming
    ``what`` when the file is missing or holds none (gRPC took any bytes, then failed every call
    as UNAVAILABLE "Failed to create security handshaker", with a C-level line on stderr)."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
        with open(path, "rb") as f:
            return f.read()
    except ssl.SSLError:  # (an OSError too: first)
        raise ValueError(f"{what} {path}: no PEM certificate in it") from None
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from None


def token_problem(token: str) -> str:
    """"" when a call can present ``token`` as a bearer token, else why not, without the token or
    any of its characters (a secret): gRPC metadata carries printable ASCII only ("INTERNAL:
    Invalid metadata" was all a client said of a secret file's trailing newline)."""
    bad = next((i for i, c in enumerate(token) if not " " <= c <= "~"), None)
    if bad is None:
        return ""
    what = "a line break" if token[bad] in "\r\n" else "a character that is not printable ASCII"
    where = "at its end (a secret file's trailing newline?)" if not token[bad:].strip() else f"at character {bad + 1}"
    return f"holds {what} {where}: gRPC metadata carries printable ASCII only"


def bearer_metadata(token: str | None, what: str = "bearer token") -> tuple | None:
    """The metadata of calls that present ``token`` (None: none); a one-line ValueError naming
    ``what`` (never the token) when no call could present it (``token_problem``)."""
    if not token:
        return None
    problem = token_problem(token)
    if problem:
        raise ValueError(f"{what} {problem}")
    return (("authorization", f"Bearer {token}"),)


def parse_value(text: str, default):
    """The string form of a knob (flag or environment value), typed like its default."""
    if isinstance(default, bool):
        low = text.strip().lower()
        if low not in _TRUE + _FALSE:
            raise ValueError(f"{text!r} is not a boolean (1/0, true/false, yes/no)")
        return low in _TRUE
    listed = isinstance(default, tuple)
    kind = (type(default[0]) if default else int) if listed else type(default)
    one, many = KIND_NAMES.get(kind, (kind.__name__, kind.__name__))
    try:
        if listed:
            return tuple(kind(part) for part in text.split(",") if part.strip())
        return text if default is None else kind(text)
    except ValueError:  # (Python's "invalid literal for int() with base 10: 'x'" said neither knob nor kind)
        raise ValueError(f"{text!r} is not " + (f"a comma-separated list of {many}" if listed else one)) from None


def build(cls, base=None, **values):
    """An instance of the tree ``cls`` with the named leaves set (others from ``base`` or defaults).

    ``build(ServerConfig, db="x.db", port=0)`` routes ``db`` to ``ServerConfig.datastore``.
    Raises TypeError naming an unknown knob."""
    index = _leaf_index(cls)
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise TypeError(f"{cls.__name__} has no knob {', '.join(unknown)}")
    return _rebuild(cls, base if base is not None else cls(), (), {index[k][0]: v for k, v in values.items()})


def _rebuild(cls, node, path: tuple[str, ...], values: dict[tuple[str, ...], object]):
    changes = {}
    for f in dataclasses.fields(cls):
        here = path + (f.name,)
        if _is_tree(f):
            if any(p[: len(here)] == here for p in values):
                changes[f.name] = _rebuild(type(f.default), getattr(node, f.name), here, values)
        elif here in values:
            changes[f.name] = values[here]
    return dataclasses.replace(node, **changes) if changes else node


def from_env(cls, env: Mapping[str, str] = os.environ, prefix: str = ENV_PREFIX, base=None):
    """The tree with every knob whose variable (``SSSD_<KNOB>``) is set taken from ``env``.

    Raises ValueError naming the variable whose value does not parse or is refused."""
    values, given = {}, []
    for leaf, (_, f) in _leaf_index(cls).items():
        name = env_name(leaf, prefix)
        if name in env:
            # a secret (a knob with repr=False: SSSD_TOKEN, SSSD_FOLLOW_TOKEN) is never said: every
            # variable set was named with its value in the error below, whichever one was wrong
            shown = repr(env[name]) if f.repr else "(set, not shown)"
            given.append(f"{name}={shown}")
            try:
                values[leaf] = parse_value(env[name], f.default)
            except ValueError as exc:
                raise ValueError(f"{name}={shown}: {exc}") from exc
    try:
        return build(cls, base, **values)
    except ValueError as exc:  # a check across knobs: name every variable that was set
        raise ValueError(f"bad {prefix}* environment ({', '.join(given)}): {exc}") from exc


def unknown_variables(cls, env: Mapping[str, str] = os.environ, prefix: str = ENV_PREFIX) -> list[str]:
    """``SSSD_*`` variables set in ``env`` that name no knob of the tree (a typo, a renamed knob);
    ``PROCESS_WIDE`` names are known to every tree."""
    known = {env_name(leaf, prefix) for leaf in _leaf_index(cls)} | PROCESS_WIDE
    return sorted(k for k in env if k.startswith(prefix) and k not in known)


def misspelled_variables(cls, env: Mapping[str, str] = os.environ, prefix: str = ENV_PREFIX) -> list[tuple[str, str]]:
    """(variable, the knob's variable it nearly is) for each ``unknown_variables`` name close to a
    knob's (``SSSD_PROT``: ``SSSD_PORT``): a typo set nothing, without a word. Names far from every
    knob (other commands' ``SSSD_TOKEN``, ``SSSD_CACHE``, a deployment's own) are not listed."""
    known = [env_name(leaf, prefix) for leaf in _leaf_index(cls)]
    return [(k, close[0]) for k in unknown_variables(cls, env, prefix)
            if (close := difflib.get_close_matches(k, known, n=1, cutoff=0.85))]


def add_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), prefix: str = ENV_PREFIX) -> None:
    """One ``--knob`` per leaf of the tree; help shows the default and the variable that sets it.

    The help text is the knob's own comment in its dataclass (written once, next to the default).
    Flags default to "not given", so ``from_args`` can tell them from the environment's values."""
    for leaf, (path, f) in _leaf_index(cls).items():
        if leaf in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = ",".join(map(str, default)) if isinstance(default, tuple) else default
        note = knob_notes(_owner(cls, path)).get(leaf, "")
        help_text = f"{note + ' ' if note else ''}(default: {text}; env {env_name(leaf, prefix)})"
        if isinstance(default, bool):
            parser.add_argument(flag_name(leaf), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag_name(leaf), type=functools.partial(_flag_value, default=default), default=None,
                                help=help_text)


def _flag_value(text: str, default):
    """``parse_value`` for argparse: its own message kept ("argument --port: 'x' is not an integer";
    a ValueError read "invalid <lambda> value")."""
    try:
        return parse_value(text, default)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] = os.environ, prefix: str = ENV_PREFIX):
    """The tree from defaults, then ``env``, then the flags ``add_flags`` added that were given."""
    base = from_env(cls, env, prefix)
    index = _leaf_index(cls)
    given = {k: v for k, v in vars(args).items() if k in index and v is not None}
    return build(cls, base, **given)


def _owner(cls, path: tuple[str, ...]):
    """The dataclass that declares the leaf at ``path``."""
    for name in path[:-1]:
        cls = type(next(f for f in dataclasses.fields(cls) if f.name == name).default)
    return cls


@functools.cache
def knob_notes(cls) -> dict[str, str]:
    """Each field's comment in the class source: the one on its line, else the comment lines
    right above it. {} when the source is not available (a frozen application, say)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments, alone = {}, set()  # alone: a comment that is its line's only content
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
            if tok.line.lstrip().startswith("#"):
                alone.add(tok.start[0])
    notes = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = node.lineno
            if line in comments:
                notes[node.target.id] = comments[line]
            else:
                above = []
                while line - 1 in alone:
                    line -= 1
                    above.insert(0, comments[line])
                notes[node.target.id] = " ".join(above)
    return {k: v for k, v in notes.items() if v}
