"""``sssd demo --json`` end to end on a small setting: the rows, identical outputs, and every run
starting from the same datastore state (what a run fed back is gone afterwards)."""

import json
import sqlite3

import pytest

from sssd.cli import main


def documents(db) -> tuple[int, int]:
    """(all stored documents, fed-back ones) in the demo's database."""
    with sqlite3.connect(db) as conn:
        total = conn.execute("select count(*) from documents").fetchone()[0]
        fed = conn.execute("select count(*) from documents where doc_id like 'demo-feedback/%'").fetchone()[0]
    return total, fed


def test_demo_json_rows_and_same_state_every_run(smollm2_available, tmp_path, capsys):
    """Twice on one work directory: first ``--json``, then as ``make demo`` runs it (its table and
    plot); each run starts from the same datastore state."""
    argv = ["demo", "--workdir", str(tmp_path), "--prompts", "2", "--max-new-tokens", "12", "--conversations", "60"]
    counts = []
    for as_json in (True, False):
        assert main(argv + (["--json"] if as_json else [])) == 0
        printed = capsys.readouterr().out
        counts.append(documents(tmp_path / "datastore.db"))
        if not as_json:
            from sssd.demo import LABELS

            rows = [line for line in printed.splitlines() if line.strip().startswith(tuple(LABELS.values()))]
            assert len(rows) == 4 and all(line.rstrip().endswith("yes") for line in rows), printed
            assert (tmp_path / "demo.png").stat().st_size > 0
            continue
        out = json.loads(printed)
        assert [r["config"] for r in out["rows"]] == ["plain", "empty", "filled", "feedback"]
        assert all(r["identical"] for r in out["rows"])
        assert all(r["tokens_per_s"] > 0 and r["tau"] >= 1.0 for r in out["rows"])
        assert out["rows"][0]["speedup"] == 1.0
        assert out["attention"] == ("exact" if out["dtype"] == "bfloat16" else "model")  # --dtype and --attention auto
        assert out["prompts"] == {"decoded": 4, "fed_back": 2, "decoded_after_feedback": 2}
    # the fed-back answers were deleted when each run ended: the next run starts alike
    assert counts[0] == counts[1] and counts[0][1] == 0 and counts[0][0] > 0
    assert not (tmp_path / "fed-back.json").exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--prompts", "1"], "--prompts 1: at least 2"),
        (["--prompts", "81"], "--prompts 81: mtbench has 80 prompts"),  # (decoded none after feedback)
        (["--max-new-tokens", "0"], "--max-new-tokens 0 must be at least 1"),  # (a traceback)
        (["--conversations", "0"], "--conversations 0 must be in [1, 15671]"),  # (a traceback)
        # (it said "conversations 2000-100001999" and took what the file holds)
        (["--conversations", "15672"], "--conversations 15672 must be in [1, 15671] (ShareGPT holds 17671"),
    ],
)
def test_demo_refuses_sizes_it_cannot_run_in_one_line(tmp_path, capsys, flags, message):
    assert main(["demo", "--workdir", str(tmp_path), *flags]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("flags, dtype", [
    ("fpu vme avx2 avx512f amx_bf16 amx_tile", "bfloat16"),  # AMX (Sapphire Rapids and later)
    ("fpu avx2 avx512f avx512_bf16", "bfloat16"),  # AVX512-BF16 (Zen 4, Cooper Lake)
    ("fpu avx2 avx512f avx512_vnni", "float32"),  # AVX-512 without bfloat16 arithmetic
    (None, "float32"),  # no /proc/cpuinfo (not Linux)
])
def test_auto_dtype_follows_the_cpus_bfloat16_flags(tmp_path, flags, dtype):
    from sssd.smollm2 import resolve_dtype

    info = tmp_path / "cpuinfo"
    if flags is not None:
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert resolve_dtype("auto", str(info)) == dtype
    assert resolve_dtype("float32", str(info)) == "float32"  # an explicit choice stands
    with pytest.raises(ValueError, match="dtype 'half': one of auto, float32, bfloat16"):
        resolve_dtype("half", str(info))


@pytest.mark.parametrize("attention, dtype, resolved", [
    ("auto", "bfloat16", "exact"),  # bfloat16 needs exact rows for outputs identical to plain
    ("auto", "float32", "model"),
    ("model", "bfloat16", "model"),  # an explicit choice stands
    ("exact", "float32", "exact"),
])
def test_auto_attention_follows_the_dtype(attention, dtype, resolved):
    from sssd.bench_commands import resolve_attention

    assert resolve_attention(attention, dtype) == resolved


def test_generate_with_speculation_prints_what_plain_decoding_does(smollm2_available, capsys):
    """``sssd generate`` at its defaults (--dtype and --attention auto: bfloat16 with exact rows on this
    project's CPUs) prints the same answer with and without speculation."""
    argv = ["generate", "--prompt", "Write a Python function that reverses a string.", "--max-new-tokens", "24"]
    outs = []
    for extra in ([], ["--no-speculation"]):
        assert main(argv + extra) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0].strip()


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_auto_dtype_takes_float32_where_no_kernel_keeps_rows_alike(monkeypatch, dtype):
    """--dtype auto chose bfloat16 by the CPU's flags, but no linear kernel keeps a row alike at every
    row count: the command warns and decodes in float32; an explicit --dtype bfloat16 is refused."""
    import argparse
    import types

    import torch

    import sssd.smollm2
    from client_sdk.verification import decoder as decoder_module
    from client_sdk.verification.cpu_linear import NoInvariantWay
    from sssd import bench_commands
    from tests.test_decoder import tiny_llama

    def refuse(model):
        raise NoInvariantWay("no linear way computes a row the same whatever the row count")

    loaded = []
    monkeypatch.setattr(bench_commands, "resolve_dtype", lambda d: "bfloat16" if d == "auto" else d)
    monkeypatch.setattr(decoder_module, "tune_uniform", refuse)
    monkeypatch.setattr(sssd.smollm2, "load_model", lambda dtype: loaded.append(dtype) or (
        tiny_llama(seed=1).to(getattr(torch, dtype)), types.SimpleNamespace(eos_token_id=2)))
    args = argparse.Namespace(dtype=dtype, attention="auto", linears=None)
    if dtype == "bfloat16":
        with pytest.raises(NoInvariantWay):
            bench_commands.load_decoder(args)
        return
    with pytest.warns(RuntimeWarning, match="--dtype auto takes float32 here"):
        decoder, _, chosen = bench_commands.load_decoder(args)
    assert chosen == "float32" and loaded == ["bfloat16", "float32"] and not decoder.exact


def test_bench_forward_runs_and_prints_its_fields(smollm2_available, capsys):
    """``sssd bench forward --json`` (BENCHMARKS quotes it; no other test runs it) at its smallest:
    a row per draft size and the tree-over-causal summary (no timing asserted)."""
    assert main(["bench", "forward", "--max-k", "1", "--repeats", "1", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {"rows", "median_tree_over_causal", "linear_plan", "model"} <= set(got) and got["rows"]


def _burners_left() -> list[int]:
    """This process's children still spinning as ``decode_bench.cpu_burners`` makes them (Linux /proc)."""
    import os
    from pathlib import Path

    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == os.getpid() and b"getppid" in cmdline:
            left.append(int(stat.parent.name))
    return left


def test_bench_decode_runs_side_by_side_and_decodes_what_plain_decoding_does(smollm2_available, capsys):
    """``sssd bench decode --json`` (the README and BENCHMARKS quote it; no other test ran it) at a small
    setting: a row per (batch, configuration), every output the plain one (no timing asserted)."""
    argv = ["bench", "decode", "--datasets", "mtbench", "--prompts", "2", "--max-new-tokens", "4",
            "--batch-sizes", "1,2", "--json"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    rows = {(r["batch"], r["config"]) for r in got["summary"]}
    assert rows == {(b, c) for b in (1, 2) for c in ("sssd-empty", "sssd-filled")}
    assert got["all_identical"] is True and got["contention_processes"] == 0
    assert all(r["identical"] and r["tau_median"] >= 1.0 for r in got["summary"])


def test_cpu_burners_spin_while_the_block_runs_and_are_gone_after_it():
    """``--contention``'s burners: running inside the block, none left after it (nor after an error)."""
    import sys

    from sssd.bench.decode_bench import cpu_burners

    if not sys.platform.startswith("linux"):
        pytest.skip("counts the burners in /proc")
    with pytest.raises(KeyError):
        with cpu_burners(2) as procs:
            assert sorted(_burners_left()) == sorted(p.pid for p in procs) and len(procs) == 2
            raise KeyError("the bench failed")
    assert not _burners_left()


def test_a_workdir_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    """(It read "[Errno 17] File exists", mkdir's words.)"""
    (tmp_path / "f").write_text("a file")
    assert main(["demo", "--workdir", str(tmp_path / "f" / "w")]) == 1
    assert capsys.readouterr().err == (f"sssd: error: --workdir {tmp_path / 'f' / 'w'}: cannot create the directory "
                                       f"{tmp_path / 'f' / 'w'} ({tmp_path / 'f'} is a file, not a directory)\n")
