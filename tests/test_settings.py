"""Configuration trees: flags and environment variables derived from the dataclasses."""

import argparse
import dataclasses
import re

import numpy as np
import pytest

from client_sdk.drafting.planner import RATES, PlannerConfig
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.types import DraftConfig
from datastore_service.datastore import DatastoreConfig
from datastore_service.server import ServerConfig
from sssd_wire import settings


def parse(cls, argv, env=None):
    p = argparse.ArgumentParser()
    settings.add_flags(p, cls)
    return settings.from_args(cls, p.parse_args(argv), env=env or {})


@pytest.mark.parametrize("argv,env,path,expected", [
    ([], {}, ("datastore", "db"), "sssd.db"),
    (["--db", "a.db"], {}, ("datastore", "db"), "a.db"),
    ([], {"SSSD_DB": "env.db"}, ("datastore", "db"), "env.db"),
    (["--db", "flag.db"], {"SSSD_DB": "env.db"}, ("datastore", "db"), "flag.db"),  # the flag wins
    (["--max-lookup-contexts", "7"], {}, ("limits", "max_lookup_contexts"), 7),
    ([], {"SSSD_PORT": "0"}, ("port",), 0),
    (["--grace-s", "0.5"], {}, ("grace_s",), 0.5),
    ([], {"SSSD_DEAD_RATIO": "0.5"}, ("datastore", "dead_ratio"), 0.5),
])
def test_server_flags_and_env(argv, env, path, expected):
    node = parse(ServerConfig, argv, env)
    for name in path:
        node = getattr(node, name)
    assert node == expected


@pytest.mark.parametrize("argv,env,check", [
    (["--max-depth", "3"], {}, lambda c: c.draft.max_depth == 3),
    (["--remote-suffixes", "2,3"], {}, lambda c: c.draft.remote_suffixes == (2, 3)),
    ([], {"SSSD_WIDTHS": "1,3,9"}, lambda c: c.planner.widths == (1, 3, 9)),
    (["--fixed-budget", "5"], {"SSSD_FIXED_BUDGET": "9"}, lambda c: c.fixed_budget == 5),
])
def test_speculator_tree(argv, env, check):
    assert check(parse(SpeculatorConfig, argv, env))


@pytest.mark.parametrize("env,message", [
    ({"SSSD_MAX_CHILDREN": "0"}, "max_children 0 must be >= 1"),  # (drafted nothing, silently)
    ({"SSSD_MAX_DEPTH": "0"}, "max_depth 0 must be >= 1"),
    ({"SSSD_LOCAL_OCCURRENCES": "-2"}, "local_occurrences -2 must be >= 1"),
    ({"SSSD_COMBINE": "avg"}, "combine 'avg' must be 'max' or 'noisy-or'"),  # (a KeyError at the first draft)
    ({"SSSD_REMOTE_SUFFIXES": "2,2"}, r"remote_suffixes \(2, 2\) must be distinct lengths below remote_match 4"),
    ({"SSSD_REMOTE_SUFFIXES": "4"}, r"remote_suffixes \(4,\) must be distinct lengths below remote_match 4"),
    ({"SSSD_TRIE_CACHE": "-1"}, "trie_cache -1 must be >= 0"),
    # (sized before anything was drafted: 10**12 of each failed as a MemoryError of terabytes or petabytes)
    ({"SSSD_TRIE_CACHE": str(10**12)}, f"trie_cache {10**12} must be at most 4194304 entries"),
    ({"SSSD_LOCAL_NGRAM": "33"}, r"local_ngram 33 must be at most 32 \(each length is a hash table"),
    ({"SSSD_LOCAL_OCCURRENCES": "4097"}, "local_occurrences 4097 must be at most 4096"),
    ({"SSSD_REMOTE_MATCH": "17"}, r"remote_match 17 must be at most 16 \(the datastore's longest match\)"),
    ({"SSSD_TRIE_CACHE_TTL_S": "0"}, "trie_cache_ttl_s 0.0 must be > 0"),
    ({"SSSD_UNIGRAM_REFRESH_S": "0"}, "unigram_refresh_s 0.0 must be >= 1"),  # (fetched the table back to back)
    ({"SSSD_PREFETCH_OUTCOMES": "0"}, "without prefetch_outcomes a step must wait for its lookup"),  # a deadline of 0
    ({"SSSD_LOOKUP_DEADLINE_S": "-0.5"}, "lookup_deadline_s -0.5 must be a finite number >= 0"),
    # (NaN and inf were taken: a step waited as long as the datastore took, the planner's estimates went NaN)
    ({"SSSD_LOOKUP_DEADLINE_S": "inf"}, "lookup_deadline_s inf must be a finite number >= 0"),
    ({"SSSD_LOOKUP_DEADLINE_S": "nan"}, "lookup_deadline_s nan must be a finite number >= 0"),
    ({"SSSD_UNIGRAM_REFRESH_S": "nan"}, "unigram_refresh_s nan must be >= 1"),
    ({"SSSD_MIN_GAIN": "0.9"}, "min_gain 0.9 must be a finite number >= 1"),
    ({"SSSD_MIN_GAIN": "nan"}, "min_gain nan must be a finite number >= 1"),
    ({"SSSD_PROBE_TOLERANCE": "inf"}, "probe_tolerance inf must be a finite number >= 0"),
    ({"SSSD_MIN_EFFICIENCY": "-1"}, "min_efficiency -1.0 must be a finite number >= 0"),
    ({"SSSD_PROBE_SPREAD": "inf"}, "probe_spread inf must be a finite number above 0"),
    *[({f"SSSD_{rate.upper()}": value}, f"{rate} {value} must be in \\[0, 1\\]")
      for rate in RATES for value in ("1.5", "nan")],
    ({"SSSD_OUTCOMES": "0"}, "outcomes 0 must be >= 1"),  # (no end would be prefetched)
])
def test_speculator_knobs_that_would_draft_nothing_or_spin_are_refused(env, message):
    """Every planner rate is in the table (a new one is checked as they are)."""
    assert set(RATES) == {f.name for f in dataclasses.fields(PlannerConfig) if f.name.endswith("_rate")}
    with pytest.raises(ValueError, match=message):
        parse(SpeculatorConfig, [], env)


INT_KNOBS = [(cls, f.name) for cls in (DraftConfig, SpeculatorConfig, PlannerConfig)
             for f in dataclasses.fields(cls) if type(f.default) is int]


@pytest.mark.parametrize("cls, knob", INT_KNOBS, ids=[f"{c.__name__}.{k}" for c, k in INT_KNOBS])
def test_every_integer_knob_refuses_a_float(cls, knob):
    """(Built in Python, 2.5 was taken: a float depth reached the compiled kernels as a numba typing
    error, a float sample count went to the datastore as its LookupParams; a flag or variable parses
    as an integer already.) numpy's integers are taken, as Python ints."""
    value = getattr(cls(), knob)
    with pytest.raises(ValueError, match=f"^{knob} {value + 0.5} must be (an integer|an integer >= 0)"):
        cls(**{knob: value + 0.5})
    assert type(getattr(cls(**{knob: np.int64(value)}), knob)) is int


def test_defaults_are_the_dataclass_defaults():
    assert parse(ServerConfig, []) == ServerConfig()
    assert parse(SpeculatorConfig, []).draft == SpeculatorConfig().draft


def test_build_routes_leaves_and_refuses_unknown_knobs():
    c = ServerConfig.of(db="x.db", port=0, compaction_fanout=2)
    assert (c.datastore.db, c.port, c.datastore.compaction_fanout) == ("x.db", 0, 2)
    assert c.datastore.synchronous == DatastoreConfig().synchronous
    with pytest.raises(TypeError, match="no knob path"):
        ServerConfig.of(path="x.db")


def test_bad_env_value_names_the_variable():
    with pytest.raises(ValueError, match="SSSD_PORT='eighty': 'eighty' is not an integer$"):
        settings.from_env(ServerConfig, {"SSSD_PORT": "eighty"})


@pytest.mark.parametrize("argv,message", [
    (["--port", "eighty"], "argument --port: 'eighty' is not an integer"),  # (it read "invalid <lambda> value")
    (["--grace-s", "soon"], "argument --grace-s: 'soon' is not a number"),
    (["--namespace-lookup-rate", "1e3x"], "argument --namespace-lookup-rate: '1e3x' is not a number"),
])
def test_a_bad_flag_value_says_what_the_flag_takes(argv, message, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="sssd serve")
    settings.add_flags(parser, ServerConfig)
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert capsys.readouterr().err.strip().endswith(f"sssd serve: error: {message}")


def test_a_bad_list_value_says_what_the_knob_takes():
    from client_sdk.drafting.config import SpeculatorConfig

    with pytest.raises(ValueError, match="'1,two' is not a comma-separated list of integers$"):
        settings.from_env(SpeculatorConfig, {"SSSD_REMOTE_SUFFIXES": "1,two"})


def test_a_secret_is_never_said_in_an_env_error():
    """Every variable set was named with its value when any was wrong: SSSD_FOLLOW_TOKEN's too."""
    env = {"SSSD_FOLLOW_TOKEN": "sup3rsecret", "SSSD_FOLLOW": "w:1", "SSSD_GRACE_S": "-1"}
    with pytest.raises(ValueError) as err:
        settings.from_env(ServerConfig, env)
    assert "SSSD_FOLLOW_TOKEN=(set, not shown)" in str(err.value) and "SSSD_GRACE_S='-1'" in str(err.value)
    assert "sup3r" not in str(err.value)
    assert "sup3r" not in repr(settings.from_env(ServerConfig, {**env, "SSSD_GRACE_S": "1"}))  # nor in a repr


def test_the_secrets_are_the_tokens():
    """A knob is a secret by repr=False: the two tokens, and nothing else."""
    from sglang_integration.config import PluginConfig

    def secrets(cls):
        return sorted(leaf for leaf, (_, f) in settings._leaf_index(cls).items() if not f.repr)

    assert secrets(ServerConfig) == ["follow_token"] and secrets(PluginConfig) == ["token"]


def test_duplicate_leaf_names_are_refused():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        port: int = 1

    @dataclasses.dataclass(frozen=True)
    class Outer:
        port: int = 2
        inner: Inner = Inner()

    with pytest.raises(TypeError, match="'port' appears twice"):
        settings.build(Outer)


def test_unknown_variables_are_listed():
    env = {"SSSD_DB": "x", "SSSD_DBB": "y", "OTHER": "z", "SSSD_CACHE": "/c"}  # the cache: every process's
    assert settings.unknown_variables(ServerConfig, env) == ["SSSD_DBB"]


@pytest.mark.parametrize("name, meant", [
    ("SSSD_PROT", "SSSD_PORT"), ("SSSD_MAX_LIVE_TOKEN", "SSSD_MAX_LIVE_TOKENS"), ("SSSD_AUTHFILE", "SSSD_AUTH_FILE"),
    # far from every serve knob: other commands' and the deployment's own names
    ("SSSD_TOKEN", None), ("SSSD_DATASTORE", None), ("SSSD_CACHE", None), ("SSSD_ADMIN_TOKEN", None),
    ("SSSD_WORKER_TOKEN", None), ("SSSD_NAMESPACE", None), ("SSSD_HARDWARE", None),
    ("SSSD_PORT", None),  # a knob's own
])
def test_a_variable_that_nearly_names_a_knob_is_said_with_the_knob(name, meant):
    expected = [(name, meant)] if meant else []
    assert settings.misspelled_variables(ServerConfig, {name: "1", "OTHER": "2"}) == expected


def test_sssd_serve_says_a_misspelled_variable_before_it_starts(monkeypatch, capsys):
    """(SSSD_PROT=5 started a server on the default port without a word.)"""
    import datastore_service.server as server
    from sssd.cli import main

    started = []

    async def serve(config):
        started.append(config.port)

    monkeypatch.setattr(server, "serve", serve)
    monkeypatch.setenv("SSSD_PROT", "50999")
    monkeypatch.delenv("SSSD_PORT", raising=False)
    assert main(["serve", "--db", "x.db"]) == 0
    assert capsys.readouterr().err == "note: SSSD_PROT is no sssd serve setting, ignored: did you mean SSSD_PORT?\n"
    assert started == [ServerConfig().port]


@dataclasses.dataclass(frozen=True)
class _Noted:
    plain: int = 1  # the trailing comment
    # the comment block above,
    # on two lines
    above: int = 2
    silent: int = 3


@pytest.mark.parametrize("cls,leaf,note", [
    (_Noted, "plain", "the trailing comment"),
    (_Noted, "above", "the comment block above, on two lines"),
    (_Noted, "silent", None),
    (ServerConfig, "db", "the SQLite file; created when missing"),  # a leaf of a nested dataclass
])
def test_flag_help_is_the_knobs_own_comment(cls, leaf, note):
    p = argparse.ArgumentParser()
    settings.add_flags(p, cls)
    action = next(a for a in p._actions if a.dest == leaf)
    assert action.help.endswith(f"env SSSD_{leaf.upper()})")
    assert settings.knob_notes(settings._owner(cls, settings._leaf_index(cls)[leaf][0])).get(leaf) == note
    assert (note is None) or action.help.startswith(note)


@pytest.mark.parametrize("cls", [ServerConfig, SpeculatorConfig])
def test_every_knob_says_what_it_does(cls):
    missing = [leaf for leaf, (path, _) in settings._leaf_index(cls).items()
               if leaf not in settings.knob_notes(settings._owner(cls, path))]
    assert missing == []


@pytest.mark.parametrize("address,bad_port", [
    ("127.0.0.1:50051", None), ("localhost:1", None), ("[::1]:65535", None), ("fe80::0", None), ("sssd", None),
    ("dns:///sssd.default.svc:50051", None), ("dns://8.8.8.8:53/sssd:443", None), ("dns:sssd:7", None),
    ("ipv4:10.0.0.1:50051,10.0.0.2:50052", None), ("ipv6:[::1]:50051", None), ("unix:/run/sssd.sock", None),
    ("unix-abstract:sssd:99999", None),  # (a name, not a port)
    ("127.0.0.1:99999", "99999"), ("localhost:0", "0"), ("[::1]:65536", "65536"),
    ("dns:///sssd.default.svc:70000", "70000"), ("dns://8.8.8.8:53/sssd:0", "0"), ("dns:sssd:65536", "65536"),
    ("ipv4:10.0.0.1:50051,10.0.0.2:500511", "500511"), ("ipv6:[::1]:1,[::2]:99999", "99999"),
])
def test_check_address_refuses_ports_grpc_would_wrap(address, bad_port):
    """gRPC dials a port modulo 65536 ("127.0.0.1:99999" reached port 34463): a port outside
    1..65535 in any form of target is a one-line error naming it."""
    if bad_port is None:
        assert settings.check_address(address) == address
    else:
        with pytest.raises(ValueError, match=rf"^--x '{re.escape(address)}': port {bad_port} is not in 1..65535$"):
            settings.check_address(address, "--x")


@pytest.mark.parametrize("address,message", [
    ("", "must be host:port, without white space"),  # (gRPC logged "no server name supplied in dns URI")
    (" 127.0.0.1:50051", "must be host:port, without white space"),  # ("Misformatted domain name")
    ("127.0.0.1:50051\n", "must be host:port, without white space"),
    (50051, "must be host:port, without white space"),  # (an int: AttributeError "no attribute 'split'")
    ("http://127.0.0.1:50051", "is a URL: give host:port \\(gRPC takes no http://\\)"),
    ("grpc://sssd:50051", "is a URL: give host:port \\(gRPC takes no grpc://\\)"),
])
def test_check_address_refuses_what_grpc_cannot_dial(address, message):
    with pytest.raises(ValueError, match=f"^--x {re.escape(repr(address))} {message}$"):
        settings.check_address(address, "--x")


@pytest.mark.parametrize("address,plaintext_ok", [
    ("localhost", False), ("sssd", False), ("fe80::0", False), ("dns:///sssd.default.svc", False),
    ("ipv4:10.0.0.1:50051,10.0.0.2", False),
    ("localhost:50051", True), ("[::1]:50051", True), ("dns:///sssd.default.svc:50051", True),
    ("ipv4:10.0.0.1:50051,10.0.0.2:50052", True), ("unix:/run/sssd.sock", True),
])
def test_a_plaintext_address_needs_its_port(address, plaintext_ok):
    """(gRPC dials 443 where none is given: `--address localhost` reached no sssd serve, and said
    only that 127.0.0.1:443 refused.) Over TLS a host alone stays: a load balancer on 443."""
    assert settings.check_address(address, "--x", tls=True) == address
    if plaintext_ok:
        assert settings.check_address(address, "--x", tls=False) == address
    else:
        with pytest.raises(ValueError, match=f"^--x {re.escape(repr(address))} names no port: plaintext gRPC would "
                                             r"dial 443; give host:port \(sssd serve listens on 50051"):
            settings.check_address(address, "--x", tls=False)


@pytest.mark.parametrize("target,host,port,itself", [
    ("127.0.0.1:50051", "127.0.0.1", 50051, True),
    ("localhost:50051", "127.0.0.1", 50051, True),  # loopback by any name
    ("[::1]:50051", "::", 50051, True),  # every address includes loopback
    ("dns:///localhost:50051", "0.0.0.0", 50051, True),
    ("127.0.0.1:50051", "localhost", 50051, True),
    ("[::1]:50051", "127.0.0.1", 50051, False),  # IPv6 loopback: not where it listens
    ("[::1]:50051", "0.0.0.0", 50051, False),
    ("10.0.0.5:50051", "10.0.0.5", 50051, True),
    ("127.0.0.1:50052", "127.0.0.1", 50051, False),  # another port: another server on this machine
    ("10.0.0.6:50051", "10.0.0.5", 50051, False),
    ("localhost:50051", "10.0.0.5", 50051, False),  # it does not listen on loopback
    ("sssd-writer:50051", "0.0.0.0", 50051, False),  # a name is not resolved
    ("127.0.0.1:50051", "127.0.0.1", 0, False),  # port 0: a free port, never the one dialled
    ("unix:/run/sssd.sock", "127.0.0.1", 50051, False),
])
def test_dials_itself_finds_a_servers_own_address(target, host, port, itself):
    assert settings.dials_itself(target, host, port) is itself


def test_a_replica_that_would_follow_itself_is_refused_in_one_line():
    from datastore_service.server import ServerConfig

    with pytest.raises(ValueError, match=r"^--follow localhost:50777 is this server's own address \(--host 127.0.0.1 "
                                         r"--port 50777\): a replica follows its writer, another server$"):
        ServerConfig.of(db="x.db", port=50777, follow="localhost:50777")
    assert ServerConfig.of(db="x.db", port=50778, follow="localhost:50777").follow == "localhost:50777"
