"""CLI clients of the datastore service: namespace, ingest, lookup, stats, compact, serve."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys

import grpc

from client_sdk.transport.remote import DEFAULT_ADDRESS, DatastoreClient
from sssd_wire.errors import InvalidArgument, connection_hint, one_line
from sssd_wire.settings import require_above_zero, require_at_least
from sssd_wire.types import DOCUMENT_ID, MAX_TOKEN_ID, MAX_VOCAB, LookupParams, good_document_id


def add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=os.environ.get("SSSD_DATASTORE", DEFAULT_ADDRESS),
                   help="host:port of the datastore (default: $SSSD_DATASTORE, else 127.0.0.1:50051)")
    p.add_argument("--token", default=os.environ.get("SSSD_TOKEN"), help="bearer token (default: $SSSD_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="PEM CA bundle: connect with TLS")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")


def client_of(args) -> DatastoreClient:
    require_above_zero(args, ("timeout",), as_flags=True)  # (0 or less failed every call as DEADLINE_EXCEEDED)
    return DatastoreClient(args.address, args.token, args.tls_ca, args.timeout)


def rpc_errors(handler):
    """A gRPC failure becomes one line on stderr and exit code 1 (2 is argparse's usage errors)."""

    def run(args) -> int:
        try:
            return handler(args)
        except grpc.RpcError as exc:
            said = one_line(exc)
            hint = connection_hint(said, bool(getattr(args, "tls_ca", None)), "--tls-ca")
            print(f"sssd: error: {said} ({args.address}){hint}", file=sys.stderr)
            return 1

    return run


def register(sub) -> None:
    from datastore_service.server import ServerConfig, serve
    from sssd_wire import settings

    def run_server(args) -> int:
        for name, meant in settings.misspelled_variables(ServerConfig):
            print(f"note: {name} is no sssd serve setting, ignored: did you mean {meant}?", file=sys.stderr)
        asyncio.run(serve(settings.from_args(ServerConfig, args)))
        return 0

    p = sub.add_parser("serve", help="run the datastore service (each flag also reads its SSSD_* variable)")
    settings.add_flags(p, ServerConfig)
    p.set_defaults(handler=run_server)

    ns = sub.add_parser("namespace", help="create, list or drop namespaces")
    ns_sub = ns.add_subparsers(dest="action", required=True)
    c = ns_sub.add_parser("create")
    c.add_argument("name")
    c.add_argument("--vocab-size", type=int, required=True, help="the model's vocabulary size (its embedding rows)")
    c.add_argument("--tokenizer", help="tokenizer.json, a GGUF file or a model directory: `sssd ingest --tokenizer` "
                                       "then takes only text tokenised by this tokenizer (it sets the fingerprint)")
    c.add_argument("--tokenizer-fingerprint", default="",
                   help="the fingerprint --tokenizer would set (sssd.tokenizers.fingerprint), given as is")
    c.add_argument("--max-tokens", type=int, default=0,
                   help="retention: oldest documents evicted beyond this (0 = kept until the server's "
                        "--max-live-tokens refuses more)")
    c.set_defaults(handler=rpc_errors(_ns_create))
    ls = ns_sub.add_parser("list")
    ls.set_defaults(handler=rpc_errors(_ns_list))
    d = ns_sub.add_parser("drop")
    d.add_argument("name")
    d.set_defaults(handler=rpc_errors(_ns_drop))
    for p in (c, ls, d):
        add_client_flags(p)
        p.add_argument("--json", action="store_true", help="one line of JSON")

    ing = sub.add_parser("ingest", help="ingest a JSONL file of documents (tokens, chat conversations or text)")
    ing.add_argument("file", help='JSONL (gzipped or not), one record per line: {"tokens": [...]}, or with --tokenizer '
                                  '{"messages": [{"role", "content"}, ...]} or {"text": ...}; optional "id" '
                                  "(default FILE:LINE)")
    ing.add_argument("--tokenizer", help="tokenizer.json, a GGUF file or a Hugging Face model directory")
    ing.add_argument("--namespace", "-n", required=True)
    ing.add_argument("--batch", type=int, default=512, help="documents per request (each at most 4M tokens, 16 MB)")
    ing.add_argument("--timeout-s", type=float, default=3600.0,
                     help="the longest the whole load may take (a server's --namespace-ingest-rate makes it wait "
                          "its turn); 0 = no limit (default: 3600)")
    ing.set_defaults(handler=rpc_errors(_ingest))

    lk = sub.add_parser("lookup", help="continuation tree of a context")
    lk.add_argument("tokens", help="comma-separated token ids")
    lk.add_argument("--namespace", "-n", required=True)
    lk.add_argument("--depth", type=int, default=8)
    lk.add_argument("--max-nodes", type=int, default=64)
    lk.set_defaults(handler=rpc_errors(_lookup))

    st = sub.add_parser("stats", help="per-namespace statistics")
    st.add_argument("--namespace", "-n", default="")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=rpc_errors(_stats))

    cp = sub.add_parser("compact", help="merge segments and drop deleted documents")
    cp.add_argument("--namespace", "-n", default="")
    cp.add_argument("--policy", action="store_true", help="only what the background policy would merge")
    cp.set_defaults(handler=rpc_errors(_compact))
    dl = sub.add_parser("delete", help="delete documents by id (lookups stop seeing them at once; `compact` "
                                       "frees their space)")
    dl.add_argument("ids", nargs="+", help="document ids: a record's own \"id\", or FILE:LINE as `sssd ingest` named it")
    dl.add_argument("--namespace", "-n", required=True)
    dl.add_argument("--missing-ok", action="store_true",
                    help="skip ids that are not stored (default: refuse the call, deleting nothing)")
    dl.set_defaults(handler=rpc_errors(_delete))
    hc = sub.add_parser("health", help="exit 0 when the datastore reports SERVING (for health checks)")
    hc.set_defaults(handler=rpc_errors(_health))
    for p in (ing, lk, st, cp, dl, hc):
        add_client_flags(p)
    for p in (ing, lk, cp, dl, hc):
        p.add_argument("--json", action="store_true", help="one line of JSON")


def counted(n: int, noun: str) -> str:
    """"1 document", "2 documents" (English nouns that take an s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def emit(args, text: str, obj) -> None:
    """The command's result: ``text`` for people, or ``obj`` as one line of JSON (``--json``)."""
    print(json.dumps(obj) if getattr(args, "json", False) else text)


def _namespace_dict(n) -> dict:
    return {"name": n.name, "vocab_size": n.vocab_size, "max_tokens": n.max_tokens,
            "tokenizer_fingerprint": n.tokenizer_fingerprint}


def _ns_drop(args) -> int:
    client_of(args).drop_namespace(args.name)
    emit(args, f"dropped namespace {args.name}", {"dropped": args.name})
    return 0


def _compact(args) -> int:
    retired = client_of(args).compact(args.namespace, not args.policy)
    emit(args, f"segments retired: {retired}", {"segments_retired": retired})
    return 0


def _delete(args) -> int:
    try:
        deleted = client_of(args).delete(args.namespace, args.ids, args.missing_ok)
    except grpc.RpcError as exc:  # (it said only which id was unknown)
        if exc.code() != grpc.StatusCode.NOT_FOUND or "unknown document ids" not in one_line(exc):
            raise
        raise ValueError(f"{one_line(exc)} ({args.address}): nothing was deleted (--missing-ok skips them)") from None
    skipped = len(dict.fromkeys(args.ids)) - len(deleted)
    emit(args, f"deleted {counted(len(deleted), 'document')}" + (f", {skipped} not stored" if skipped else ""),
         {"deleted": deleted})
    return 0


def _health(args) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with client_of(args) as client:
        reply = health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    emit(args, status, {"status": status})
    return 0 if status == "SERVING" else 1


def vocab_flag(value: int, flag: str = "--vocab-size") -> int:
    """A vocabulary-size flag's value, or a one-line ValueError naming the flag (the datastore's
    own words named its field, "vocab_size 1 must be in ...", or the wire's, "[0, 2**32)")."""
    if not 2 <= value <= MAX_VOCAB:
        raise ValueError(f"{flag} {value} must be in [2, {MAX_VOCAB}]")
    return value


def _ns_create(args) -> int:
    vocab_flag(args.vocab_size)
    require_at_least(args, 0, ("max_tokens",), as_flags=True)
    fingerprint = args.tokenizer_fingerprint
    if args.tokenizer:
        if fingerprint:
            raise ValueError("give --tokenizer or --tokenizer-fingerprint, not both")
        from sssd.tokenizers import load_tokenizer

        fingerprint = tokenizer_fits(load_tokenizer(args.tokenizer), args.vocab_size, args.tokenizer)
    n = client_of(args).create_namespace(args.name, args.vocab_size, fingerprint, args.max_tokens)
    emit(args, f"created namespace {n.name} (vocab {n.vocab_size})", {"created": _namespace_dict(n)})
    if not n.max_tokens:  # (feedback keeps adding generations: without retention it stops at the server's cap)
        print(f"note: namespace {n.name} has no --max-tokens retention: it keeps every document until the server's "
              "--max-live-tokens refuses more ingests (and feedback)", file=sys.stderr)
    return 0


def _ns_list(args) -> int:
    spaces = client_of(args).list_namespaces()
    if args.json:
        print(json.dumps({"namespaces": [_namespace_dict(n) for n in spaces]}))
        return 0
    for n in spaces:
        print(f"{n.name}\tvocab={n.vocab_size}\tmax_tokens={n.max_tokens}\tfingerprint={n.tokenizer_fingerprint}")
    return 0


def check_file(path: str) -> None:
    """ValueError in one line when ``path`` is missing, a directory, or no regular file (a pipe,
    a device: read twice, or never ending)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():  # (a pipe was "no such file")
        raise ValueError(f"{path}: " + ("is a directory" if p.is_dir() else "no such file" if not p.exists()
                                        else "is not a regular file (a pipe or a device): save it to a file first"))


def check_writable(path: str, flag: str) -> None:
    """ValueError in one line, naming ``flag``, when no file can be written at ``path``: it is a
    directory, or its directory does not exist."""
    from pathlib import Path

    if Path(path).is_dir():
        raise ValueError(f"{flag} {path}: is a directory")
    if not Path(path).parent.is_dir():
        raise ValueError(f"{flag} {path}: no directory {Path(path).parent}")


def token_ids(values: list, what: str) -> list:
    """``values`` when every one is a token id (an int in [0, 2**31), the wire's int32), else a
    one-line ValueError naming the first that is not."""
    bad = next((t for t in values if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= MAX_TOKEN_ID), None)
    if bad is not None:
        raise ValueError(f"{what} holds {bad!r}, not a token id (an integer in [0, {MAX_TOKEN_ID}])")
    return values


def jsonl_records(path: str):
    """(where, record) per non-blank line of a JSONL file, gzipped or not (logs are kept so), ``where``
    being "PATH:LINE"; a one-line ValueError for a missing file, a directory, a damaged gzip
    stream, or a line that is not a JSON object."""
    import gzip
    import zlib

    check_file(path)
    with open(path, "rb") as plain, (gzip.GzipFile(fileobj=plain) if plain.peek(2)[:2] == b"\x1f\x8b" else plain) as f:
        try:  # (a gzipped file was "not UTF-8 (byte 0x8b at column 2)")
            yield from _records(path, f)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: a damaged gzip file ({exc or 'it ends early'})") from None


def _records(path: str, f):
    """jsonl_records' lines of the open (binary) file ``f``."""
    for lineno, raw in enumerate(f, 1):
        where = f"{path}:{lineno}"
        try:  # (a byte order mark, as Windows editors write one, is not part of the first record)
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:  # (it was a traceback naming no file or line)
            raise ValueError(f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: want a JSON object per line")
        yield where, rec


def read_token_documents(path: str, tokenizer=None):
    """(id, tokens) per JSONL line; ValueError naming the line and the field when one is
    malformed (a missing file or a directory: one line too)."""
    for where, rec in jsonl_records(path):
        doc_id = rec.get("id", f"{os.path.basename(path)}:{where.rpartition(':')[2]}")
        if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):  # (null was stored as "None")
            raise ValueError(f"{where}: 'id' {doc_id!r} must be a string or an integer")
        doc_id = str(doc_id)
        if not good_document_id(doc_id):  # (refused by the server, after the batches before it were stored)
            raise ValueError(f"{where}: 'id' {doc_id!r} must be {DOCUMENT_ID}")
        tokens = rec.get("tokens")
        if tokenizer is not None and tokens is None:  # (token ids beside a tokenizer are checked as without one)
            from sssd.tokenizers import record_tokens

            try:
                tokens = record_tokens(tokenizer, rec, where)
            except Exception as exc:  # (the template's or the tokenizer's own error escaped the stream as UNKNOWN)
                if isinstance(exc, ValueError) and str(exc).startswith(where):
                    raise
                raise ValueError(f"{where}: not a chat or text record ({one_line(exc)})") from None
            if not tokens:  # (the service refused the whole stream for it)
                raise ValueError(f"{where}: the record renders to no tokens")
            yield doc_id, tokens
            continue
        if tokens is None and ("messages" in rec or "text" in rec):  # (it said only that 'tokens' was missing)
            raise ValueError(f"{where}: a {'chat' if 'messages' in rec else 'text'} record, not token ids: give "
                             "'tokens', or tokenise it with `sssd ingest --tokenizer` (the model's tokenizer.json, "
                             "GGUF file or directory)")
        if not isinstance(tokens, list) or not tokens:
            raise ValueError(f"{where}: 'tokens' must be a non-empty list of token ids")
        yield doc_id, token_ids(tokens, f"{where}: 'tokens'")


# the most tokens one IngestStream message carries (16 MB, within gRPC's 64 MB message limit: 512
# documents of 32K tokens were one 67 MB message, refused as RESOURCE_EXHAUSTED)
BATCH_TOKENS = 4 << 20


def bounded_batches(docs, max_docs: int, max_tokens: int):
    """Lists of (id, tokens) of at most ``max_docs`` documents and ``max_tokens`` tokens each (a
    document larger than that alone), in order."""
    batch, tokens = [], 0
    for doc in docs:
        if batch and (len(batch) == max_docs or tokens + len(doc[1]) > max_tokens):
            yield batch
            batch, tokens = [], 0
        batch.append(doc)
        tokens += len(doc[1])
    if batch:
        yield batch


def _stream_error(exc: grpc.RpcError, handed: int, address: str) -> Exception:
    """What ``sssd ingest`` raises for a stream the server ended midway, after ``handed`` documents
    were handed to it: the server's own error when nothing was sent or its words say what it
    kept, else a ValueError saying how a re-run resumes (a record it refused must be fixed first)."""
    told, refused = "of the stream" in one_line(exc), exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    if not handed or (told and not refused):  # (nothing sent, or the server said what it kept)
        return exc
    if told:  # (the server's words say how a re-run resumes)
        return ValueError(f"{one_line(exc)} ({address}): fix or leave out that record first")
    then = ("fix or leave out that record, then re-run: it resumes by id" if refused  # (else refused again)
            else "re-running resumes by id")
    return ValueError(f"{one_line(exc)} ({address}); up to {counted(handed, 'document')} had been sent: "
                      f"{then} (the stored ones are skipped)")


def _ingest(args) -> int:
    from tqdm import tqdm

    check_file(args.file)  # a local mistake before the server is asked anything
    require_at_least(args, 1, ("batch",), as_flags=True)  # (0 sent nothing and reported success)
    if not 0 <= args.timeout_s < math.inf:
        raise ValueError(f"--timeout-s {args.timeout_s} must be a number of seconds, or 0 (no limit)")
    tokenizer = None
    if args.tokenizer:  # (a local mistake too: said before the server is asked anything)
        from sssd.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    client = client_of(args)
    spaces = {n.name: n for n in client.list_namespaces()}  # checked before anything is loaded
    if args.namespace not in spaces:  # (a server with tokens lists only the namespaces this one may use)
        mine = ", or is not one this --token may use" if client.metadata else ""
        raise ValueError(f"namespace {args.namespace!r} does not exist on {args.address}{mine} "
                         f"(create it with `sssd namespace create`)")
    if not args.tokenizer:  # a first pass names any malformed line before a single document is sent
        vocab, past = spaces[args.namespace].vocab_size, None
        for doc_id, tokens in read_token_documents(args.file):
            if past is None and max(tokens) >= vocab:  # (refused by the server, after the batches before it)
                past = f"document {doc_id!r} holds token id {max(tokens)}"
        if past:  # (after the whole file: a line that is no record is named first)
            raise ValueError(f"{past}: namespace {args.namespace!r} has a vocabulary of {vocab} (ids 0-{vocab - 1})")
    if tokenizer is not None:
        _check_fingerprint(spaces[args.namespace], tokenizer, args.tokenizer)
    docs = read_token_documents(args.file, tokenizer)
    bar = tqdm(desc="ingest", unit="doc", disable=None, file=sys.stderr)
    failure: list[Exception] = []
    handed = [0]  # documents handed to the stream (the bar counts none when it is off, as without a terminal)

    def batches():
        # gRPC consumes this on its own thread: an error ends the stream cleanly and is
        # re-raised below (what was sent is stored; re-running resumes by id)
        try:
            for batch in bounded_batches(docs, args.batch, BATCH_TOKENS):
                bar.update(len(batch))
                handed[0] += len(batch)
                yield batch
        except Exception as exc:  # (any other escaped the stream as "UNKNOWN: Exception iterating requests!")
            failure.append(exc)

    try:
        summary = client.ingest_stream(args.namespace, batches(), timeout_s=args.timeout_s)
    except grpc.RpcError as exc:  # the server went away (a restart) or refused a message midway
        raise _stream_error(exc, handed[0], args.address) from None
    except KeyboardInterrupt:  # (it exited 130 without a word of what had been stored)
        print(f"sssd: interrupted: up to {counted(handed[0], 'document')} had been sent; the stored ones stay, and "
              "re-running resumes by id", file=sys.stderr)
        raise
    finally:
        bar.close()
    if failure:
        if not isinstance(failure[0], (ValueError, OSError)):  # a defect: its own traceback
            raise failure[0]
        raise ValueError(f"{failure[0]} ({counted(summary.added, 'document')} before it were stored; "
                         "re-running resumes by id)")
    emit(args, f"added {counted(summary.added, 'document')} ({counted(summary.tokens, 'token')}), "
               f"{summary.duplicates} already present, {summary.evicted} evicted by retention",
         {"added": summary.added, "tokens": summary.tokens, "duplicates": summary.duplicates,
          "evicted": summary.evicted, "conflicts": summary.conflicts, "conflict_ids": list(summary.conflict_ids)})
    if not handed[0]:  # (a wrong or truncated file read as a load that took nothing new)
        print(f"note: {args.file} holds no documents (blank lines only)", file=sys.stderr)
    if summary.conflicts:  # (refused, and said nowhere but in --json's count)
        ids = ", ".join(map(repr, summary.conflict_ids))
        ids += ", ..." if summary.conflicts > len(summary.conflict_ids) else ""
        print(f"sssd: error: {counted(summary.conflicts, 'document')} not stored: "
              f"{'its id is' if summary.conflicts == 1 else 'their ids are'} stored with other tokens ({ids}); give "
              f"each record its own \"id\" (the default, FILE:LINE, repeats for files of the same name)",
              file=sys.stderr)
        return 1
    return 0


def tokenizer_fits(tokenizer, vocab_size: int, source: str) -> str:
    """The tokenizer's fingerprint, once its ids are known to fit a vocabulary of ``vocab_size``."""
    from sssd.tokenizers import fingerprint

    if len(tokenizer) > vocab_size:
        raise ValueError(f"{source}: a {len(tokenizer)}-token vocabulary does not fit a vocabulary size of {vocab_size}")
    return fingerprint(tokenizer)


def _check_fingerprint(namespace, tokenizer, source: str) -> None:
    """A namespace created with a tokenizer fingerprint only takes text tokenised by that tokenizer."""
    try:
        mine = tokenizer_fits(tokenizer, namespace.vocab_size, source)
    except ValueError as exc:
        raise ValueError(f"{exc} (namespace {namespace.name!r})") from None
    if namespace.tokenizer_fingerprint and namespace.tokenizer_fingerprint != mine:
        raise ValueError(f"{source}: tokenizer fingerprint {mine} differs from namespace {namespace.name!r}'s "
                         f"({namespace.tokenizer_fingerprint}): its token ids would not be this model's")


def _lookup(args) -> int:
    try:  # (the client's codec checks the ids; an empty list or item was a lookup of nothing, answered empty)
        ctx = [int(t) for t in args.tokens.split(",")]
    except ValueError:
        raise ValueError(f"tokens {args.tokens!r} must be comma-separated integers, at least one") from None
    try:
        params = LookupParams(depth=args.depth, max_nodes=args.max_nodes)
    except InvalidArgument as exc:  # named by its field ("depth 0 not in [1, 64]"): by its flag here
        raise ValueError("--" + str(exc).replace("max_nodes", "max-nodes", 1)) from None
    (tree,) = client_of(args).lookup(args.namespace, [ctx], params)
    emit(args, "\n".join(tree_lines(tree)), {
        "match_length": tree.match_length, "occurrences": tree.occurrences, "tokens": tree.tokens.tolist(),
        "parents": tree.parents.tolist(), "counts": tree.counts.tolist()})
    return 0


def tree_lines(tree) -> list[str]:
    """A continuation tree for people: what matched, then one line per node, "token (xcount)",
    indented under its parent (it was printed as JSON's parallel arrays, which no one reads)."""
    if not tree.match_length:
        return ["no match: the namespace holds no suffix of this context"]
    toks, pars, cnts = tree.tokens.tolist(), tree.parents.tolist(), tree.counts.tolist()
    children: dict[int, list[int]] = {}
    for i, p in enumerate(pars):
        children.setdefault(p, []).append(i)
    lines = [f"match: the context's last {counted(tree.match_length, 'token')}, {counted(tree.occurrences, 'occurrence')}; "
             "what follows: " + (f"{counted(len(toks), 'node')}, each a token (x its count):" if toks else "nothing")]
    stack = [(i, 0) for i in reversed(children.get(-1, []))]
    while stack:  # depth first, siblings in the tree's order
        i, depth = stack.pop()
        lines.append(f"{'  ' * depth}{toks[i]} (x{cnts[i]})")
        stack.extend((c, depth + 1) for c in reversed(children.get(i, [])))
    return lines


def _stats(args) -> int:
    resp = client_of(args).stats(args.namespace)
    if args.json:
        fields = [f.name for f in type(resp).DESCRIPTOR.fields_by_name["namespaces"].message_type.fields]
        print(json.dumps({
            "namespaces": [{f: getattr(n, f) for f in fields} for n in resp.namespaces],
            "compactions": resp.compactions, "uptime_s": round(resp.uptime_s, 3),
            "max_live_tokens": resp.max_live_tokens,
        }))
        return 0
    print(f"{'namespace':<20}{'documents':>12}{'tokens':>14}{'segments':>10}{'resident MB':>13}"
          f"{'lookups/s':>12}{'ingest tok/s':>14}")
    for n in resp.namespaces:
        lookups, ingest = (f"{r:,.0f}" if r else "no limit" for r in (n.lookup_rate, n.ingest_rate))
        print(f"{n.name:<20}{n.documents:>12,}{n.tokens:>14,}{n.segments:>10}{n.resident_bytes / 1e6:>13.1f}"
              f"{lookups:>12}{ingest:>14}")
    if resp.max_live_tokens:
        print(f"(the server takes at most {resp.max_live_tokens:,} live tokens over all its namespaces: "
              "--max-live-tokens)")
    return 0
