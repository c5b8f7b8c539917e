"""Bearer tokens, scopes and namespace isolation against a real server."""

import json

import grpc
import numpy as np
import pytest

from client_sdk.transport.remote import DatastoreClient


def status(fn):
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def secured(server_factory, auth_file):
    server = server_factory(auth_file=auth_file)
    admin = DatastoreClient(server.address, token="t-admin")
    admin.create_namespace("alpha", 100)
    admin.create_namespace("beta", 100)
    admin.ingest("alpha", [("a1", [1, 2, 3, 4])])
    admin.ingest("beta", [("b1", [1, 2, 50, 51])])
    admin.snapshot()
    yield server
    admin.close()


CASES = [
    # (token, call, expected status)
    (None, lambda c: c.lookup("alpha", [np.array([1, 2])]), grpc.StatusCode.UNAUTHENTICATED),  # no token
    ("wrong", lambda c: c.lookup("alpha", [np.array([1, 2])]), grpc.StatusCode.UNAUTHENTICATED),  # unknown token
    ("t-lookup", lambda c: c.lookup("alpha", [np.array([1, 2])]), grpc.StatusCode.OK),
    ("t-lookup", lambda c: c.lookup("beta", [np.array([1, 2])]), grpc.StatusCode.PERMISSION_DENIED),  # other namespace
    ("t-lookup", lambda c: c.ingest("alpha", [("x", [1])]), grpc.StatusCode.PERMISSION_DENIED),  # no ingest scope
    ("t-ingest", lambda c: c.ingest("alpha", [("x", [1])]), grpc.StatusCode.OK),
    ("t-ingest", lambda c: c.ingest("beta", [("x", [1])]), grpc.StatusCode.PERMISSION_DENIED),
    ("t-ingest", lambda c: c.compact("alpha"), grpc.StatusCode.PERMISSION_DENIED),  # admin needed
    ("t-ingest", lambda c: c.delete("alpha", ["a1"]), grpc.StatusCode.PERMISSION_DENIED),
    ("t-ingest", lambda c: c.create_namespace("gamma", 10), grpc.StatusCode.PERMISSION_DENIED),
    ("t-ingest", lambda c: c.drop_namespace("alpha"), grpc.StatusCode.PERMISSION_DENIED),
    ("t-lookup", lambda c: c.snapshot(), grpc.StatusCode.PERMISSION_DENIED),
    ("t-admin", lambda c: c.compact("beta"), grpc.StatusCode.OK),
    ("t-lookup", lambda c: c.compact(""), grpc.StatusCode.PERMISSION_DENIED),  # all namespaces: admin
    ("t-ingest", lambda c: c.ingest_stream("beta", [[("x", [1])]]), grpc.StatusCode.PERMISSION_DENIED),
    ("t-lookup", lambda c: c.stats(), grpc.StatusCode.OK),  # any valid token; filtered below
    (None, lambda c: c.stats(), grpc.StatusCode.UNAUTHENTICATED),
]


def test_every_method_has_an_access_rule():
    from datastore_service.auth import METHOD_RULES, SCOPES
    from sssd_wire.v1 import datastore_pb2

    methods = {m.name for m in datastore_pb2.DESCRIPTOR.services_by_name["Datastore"].methods}
    assert set(METHOD_RULES) == methods
    assert all(rule.scope in SCOPES + (None,) for rule in METHOD_RULES.values())


def test_each_stream_message_is_authorized(secured):
    """A client stream cannot open on a namespace it may use and switch to one it may not."""
    from sssd_wire.codec import documents_to_proto
    from sssd_wire.v1 import datastore_pb2_grpc

    def requests():
        yield documents_to_proto("alpha", [("ok", [1, 2])])
        yield documents_to_proto("beta", [("no", [1, 2])])

    with grpc.insecure_channel(secured.address) as ch:
        stub = datastore_pb2_grpc.DatastoreStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.IngestStream(requests(), metadata=[("authorization", "Bearer t-ingest")], timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "beta" in err.value.details()
    with DatastoreClient(secured.address, token="t-admin") as c:
        assert c.delete("beta", ["no"], missing_ok=True) == []


@pytest.mark.parametrize("token,call,expected", CASES)
def test_scopes(secured, token, call, expected):
    with DatastoreClient(secured.address, token=token) as c:
        assert status(lambda: call(c)) == expected


def test_namespace_isolation(secured):
    """The same context in two namespaces sees only that namespace's continuation."""
    with DatastoreClient(secured.address, token="t-admin") as c:
        a, b = c.lookup("alpha", [np.array([1, 2])])[0], c.lookup("beta", [np.array([1, 2])])[0]
    assert a.tokens.tolist()[0] == 3 and 50 not in a.tokens.tolist()
    assert b.tokens.tolist()[0] == 50 and 3 not in b.tokens.tolist()


def test_listing_is_filtered_to_visible_namespaces(secured):
    with DatastoreClient(secured.address, token="t-lookup") as c:
        assert [n.name for n in c.list_namespaces()] == ["alpha"]
        assert [n.name for n in c.stats().namespaces] == ["alpha"]


def test_health_needs_no_token(secured):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(secured.address) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_bad_auth_file_is_refused(tmp_path):
    from datastore_service.auth import Authenticator

    path = tmp_path / "a.json"
    path.write_text('{"tokens": [{"name": "x", "token": "x", "scopes": ["root"], "namespaces": ["*"]}]}')
    with pytest.raises(ValueError, match=r"entry 0 \('x'\): unknown scope\(s\) \['root'\]"):
        Authenticator.from_file(str(path))


OK_ENTRY = {"name": "w", "token": "secret", "scopes": ["lookup"], "namespaces": ["a"]}


@pytest.mark.parametrize("mode,said", [
    (0o644, "0o644"), (0o604, "0o604"),
    (0o640, None), (0o600, None), (0o400, None),  # (a group's read: a Kubernetes fsGroup's)
])
def test_an_auth_file_others_can_read_is_said(tmp_path, caplog, mode, said):
    """(Anyone on the machine could take its tokens, said nowhere.) Loaded all the same."""
    from datastore_service.auth import Authenticator

    path = tmp_path / "a.json"
    path.write_text(json.dumps({"tokens": [OK_ENTRY]}))
    path.chmod(mode)
    with caplog.at_level("WARNING", logger="sssd.server"):
        assert Authenticator.from_file(str(path)).authenticate("Bearer secret").name == "w"
    expected = [f"auth file {path} is readable by everyone (mode {said}): chmod 600 it (a Kubernetes Secret: "
                "defaultMode 0400, or 0440 with an fsGroup)"] if said else []
    assert caplog.messages == expected


@pytest.mark.parametrize("change,message", [
    ({"namespaces": "ab"}, "'namespaces' must be a non-empty list of strings"),  # not namespaces a and b
    ({"namespaces": None}, "all namespaces is"),  # missing: all must be explicit
    ({"token": 12345}, "'token' must be a non-empty string"),
    ({"token": ""}, "'token' must be a non-empty string"),
    # tokens no client can present: they were taken, and their holders refused as unknown
    ({"token": "secret\n"}, r"'token' holds a line break at its end \(a secret file's trailing newline\?\)"),
    ({"token": "sécret"}, "'token' holds a character that is not printable ASCII at character 2"),
    ({"token": " secret"}, "'token' starts or ends with white space"),
    ({"scopes": []}, "'scopes' must be a non-empty list"),
    ({"name": ""}, "'name' must be a non-empty string"),
    ({"role": "x"}, "unknown field"),
    # a name no namespace has: its holder was refused every call
    ({"namespaces": ["llama*"]}, r"""'llama\*' is no namespace name \(want .*, or "\*" for all namespaces\)"""),
    ({"namespaces": ["llama3", "a b"]}, "'a b' is no namespace name"),
    # the example file's tokens, known to anyone who read it: they were taken
    ({"token": "CHANGE-ME-worker"}, "'token' is deploy/auth.example.json's CHANGE-ME placeholder, known to all"),
])
def test_auth_file_is_validated_strictly(tmp_path, change, message):
    from datastore_service.auth import Authenticator

    entry = {k: v for k, v in {**OK_ENTRY, **change}.items() if v is not None}
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    with pytest.raises(ValueError, match=message):
        Authenticator.from_file(str(path))
    path.write_text(json.dumps({"tokens": [OK_ENTRY, {**OK_ENTRY, "name": "v"}]}))
    with pytest.raises(ValueError, match="repeats another entry's token"):
        Authenticator.from_file(str(path))


@pytest.mark.parametrize("token, message", [
    ("s3cr3t\n", "bearer token holds a line break at its end (a secret file's trailing newline?): gRPC metadata "
                 "carries printable ASCII only"),
    ("s3\r\ncr3t", "bearer token holds a line break at character 3: gRPC metadata carries printable ASCII only"),
    ("s3crét", "bearer token holds a character that is not printable ASCII at character 5: gRPC metadata carries "
               "printable ASCII only"),
    ("s3\tcr3t", "bearer token holds a character that is not printable ASCII at character 3: "),
])
def test_a_token_no_call_can_carry_is_one_line_without_the_secret(token, message):
    """Said before any channel opens ("INTERNAL: Invalid metadata" at every call, before), and with
    no character of the token in it (a secret, and logs are not)."""
    from client_sdk.transport.aio import AsyncDatastoreClient
    from datastore_service.server import ServerConfig

    for make in (lambda: DatastoreClient("127.0.0.1:1", token=token),
                 lambda: AsyncDatastoreClient("127.0.0.1:1", token=token)):
        with pytest.raises(ValueError) as err:
            make()
        assert str(err.value).startswith(message)
        assert not any(part in str(err.value) for part in ("s3", "cr3t", "cré", "t\n"))
    with pytest.raises(ValueError, match=r"^--follow-token holds "):
        ServerConfig.of(follow="127.0.0.1:1", follow_token=token)
    assert DatastoreClient("127.0.0.1:1", token=" spaced ").metadata  # the service strips the ends: it matches


def test_an_admin_of_one_namespace_cannot_act_on_all(server_factory, tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"tokens": [
        {"name": "a-admin", "token": "t-a-admin", "scopes": ["lookup", "ingest", "admin"], "namespaces": ["alpha"]},
        {"name": "ops", "token": "t-ops", "scopes": ["lookup", "ingest", "admin"], "namespaces": ["*"]}]}))
    server = server_factory(auth_file=str(path))
    with DatastoreClient(server.address, token="t-ops") as ops:
        ops.create_namespace("alpha", 10)
    with DatastoreClient(server.address, token="t-a-admin") as c:
        assert status(lambda: c.compact("alpha")) == grpc.StatusCode.OK
        assert status(lambda: c.compact("")) == grpc.StatusCode.PERMISSION_DENIED  # "" = every namespace
        assert status(lambda: c.snapshot()) == grpc.StatusCode.PERMISSION_DENIED
        assert status(lambda: c.create_namespace("beta", 10)) == grpc.StatusCode.PERMISSION_DENIED


def test_sighup_reloads_the_auth_file(tmp_path, auth_file):
    """A token revoked in the auth file is refused after SIGHUP, one added is taken, without a
    restart, and a stream open with the revoked one ends at its next message; a file that does not
    load leaves the tokens before it in force (said in the log). (SIGHUP's default ended the server.)"""
    import queue
    from pathlib import Path

    from sssd_wire.codec import lookup_request
    from sssd_wire.types import LookupParams
    from sssd_wire.v1 import datastore_pb2_grpc
    from tests.signals import served, sighup_until

    entries = json.loads(Path(auth_file).read_text())["tokens"]
    with served(tmp_path, "--auth-file", auth_file) as (proc, address):
        def status_of(token):
            with DatastoreClient(address, token=token, timeout_s=5) as c:
                return status(lambda: c.list_namespaces())

        assert status_of("t-lookup") == grpc.StatusCode.OK
        with DatastoreClient(address, token="t-admin") as admin:
            admin.create_namespace("alpha", 100)
        asks: queue.SimpleQueue = queue.SimpleQueue()
        channel = grpc.insecure_channel(address)
        answers = datastore_pb2_grpc.DatastoreStub(channel).LookupStream(
            iter(asks.get, None), metadata=[("authorization", "Bearer t-lookup")], timeout=30)
        asks.put(lookup_request("alpha", [np.array([1, 2])], LookupParams()))
        next(answers)  # the stream is open, its token good
        Path(auth_file).write_text(json.dumps({"tokens": [e for e in entries if e["token"] != "t-lookup"]
                                              + [{**entries[0], "name": "new", "token": "t-new"}]}))
        sighup_until(proc, status_of, {"t-lookup": grpc.StatusCode.UNAUTHENTICATED, "t-new": grpc.StatusCode.OK})
        asks.put(lookup_request("alpha", [np.array([1, 2])], LookupParams()))
        with pytest.raises(grpc.RpcError) as err:  # the open stream's next message: its token is gone
            next(answers)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        asks.put(None)
        channel.close()
        Path(auth_file).write_text("{not json")
        sighup_until(proc, status_of, {"t-new": grpc.StatusCode.OK, "t-lookup": grpc.StatusCode.UNAUTHENTICATED})
    text = (tmp_path / "serve.log").read_text()
    assert "auth file" in text and "reloaded: 3 tokens" in text
    assert "SIGHUP: auth file not reloaded, the tokens before stay in force: auth file" in text


def test_a_namespace_this_token_may_not_use_is_not_called_missing_alone(secured, tmp_path, capsys, caplog):
    """A server with tokens lists only the namespaces a token may use: `sssd ingest` and a worker's
    start said of one it may not use that it does not exist (and to create it), with nothing of
    the token; they now say both. A worker without a token is told to give one."""
    import logging

    from client_sdk.runtime import check_namespace
    from sssd.cli import main

    docs = tmp_path / "d.jsonl"
    docs.write_text('{"id": "x", "tokens": [1, 2, 3]}\n')
    assert main(["ingest", str(docs), "--namespace", "beta", "--address", secured.address, "--token", "t-ingest"]) == 1
    assert capsys.readouterr().err == (f"sssd: error: namespace 'beta' does not exist on {secured.address}, or is not "
                                       "one this --token may use (create it with `sssd namespace create`)\n")
    with DatastoreClient(secured.address, token="t-lookup") as c, caplog.at_level(logging.WARNING, "sssd.sdk"):
        assert not check_namespace(c, "beta", 100)
    assert f"datastore {secured.address} has no namespace 'beta' that this token may use (it has ['alpha'])" \
        in caplog.text
    with DatastoreClient(secured.address) as c, caplog.at_level(logging.WARNING, "sssd.sdk"):  # no token at all
        assert not check_namespace(c, "alpha", 100)
    assert (f"datastore {secured.address}: cannot list namespaces (UNAUTHENTICATED: missing bearer token) (the "
            "datastore has tokens: give this worker one, SSSD_TOKEN or --token)") in caplog.text
