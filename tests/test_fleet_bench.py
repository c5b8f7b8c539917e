"""The fleet benchmark end to end at a tiny size: real server processes (a writer and a
replica), worker processes, the JSON an operator sizes a deployment from."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sssd.bench.fleet_bench import phase_offsets


def test_fleet_rows_from_real_processes(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sssd.cli", "bench", "fleet", "--workers", "1,2", "--servers", "2",
                          "--tokens", "50000", "--seconds", "2", "--batch", "4", "--json"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert [r["workers"] for r in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert row["server_processes"] == 2 and row["rpc"] == "Lookup" and row["failed"] == 0
        assert row["phases"] == "staggered" and len(row["phase_offsets_ms"]) == row["workers"]
        assert row["steps"] > 0 and 0 < row["contexts_per_s"] <= 1.1 * row["offered_contexts_per_s"]
        assert row["server_cpu_us_per_context"] > 0 and 0 <= row["late_fraction"] <= 1
        assert row["worker_cpu_us_per_call"] > 0 and row["worker_cpu_cores_busy"] > 0
        assert row["p50_ms"] <= row["p99_ms"]
        assert row["server_p50_ms_at_most"] is not None  # the servers' own histograms were read
        assert row["in_process_cpu_us_per_context"] > 0  # the same lookups in process, at the same rate
        assert row["server_gc_ms"] >= 0  # the servers' garbage collection pauses in the window
    assert result["provenance"]["machine"]["cores"] >= 1
    assert [s["role"] for s in result["servers"]] == ["writer", "replica"]
    assert all(0 < s["anonymous_mb"] <= s["pss_mb"] <= s["rss_mb"] for s in result["servers"])


def test_fleet_with_segment_readers(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sssd.cli", "bench", "fleet", "--workers", "1", "--servers", "3",
                          "--segment-readers", "--aligned", "--tokens", "50000", "--seconds", "2", "--batch", "4",
                          "--json"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert [s["role"] for s in result["servers"]] == ["writer", "segment reader", "segment reader"]
    row = result["rows"][0]
    assert row["server_processes"] == 3 and row["failed"] == 0 and row["contexts_per_s"] > 0
    assert row["phases"] == "aligned" and row["phase_offsets_ms"] == [0.0]


@pytest.mark.parametrize("workers, step_ms", [(1, 20.0), (2, 20.0), (8, 20.0), (16, 5.0)])
def test_workers_start_at_their_own_point_of_the_step(workers, step_ms):
    """Independent engines are out of phase: every offset inside one step, not all the same,
    the same every run; aligned, all at once."""
    offsets = phase_offsets(workers, step_ms, aligned=False)
    assert len(offsets) == workers and all(0.0 <= x < step_ms / 1e3 for x in offsets)
    assert workers == 1 or len(set(offsets)) == workers
    assert offsets == phase_offsets(workers, step_ms, aligned=False)
    assert phase_offsets(workers, step_ms, aligned=True) == [0.0] * workers


def test_fleet_refuses_a_stream_over_replicas(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sssd.cli", "bench", "fleet", "--servers", "2", "--stream", "--json"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1 and "--stream pins each worker to one server" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_flooding_tenant_is_held_to_its_rate_and_the_other_is_answered(tmp_path):
    """bench/tenant_isolation.py at a tiny size: real servers, a quiet worker and a flooding one in
    their own processes. With --namespace-lookup-rate the flood is served at most the rate plus
    one second's worth and one call, the rest refused; without it nothing is refused; the quiet
    tenant's lookups are answered in every row."""
    script = Path(__file__).resolve().parents[1] / "bench" / "tenant_isolation.py"
    out = subprocess.run([sys.executable, str(script), "--runs", "1", "--seconds", "2", "--tokens", "50000",
                          "--rate", "2000", "--batch", "4"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)["rows"]
    assert [(r["rate"], r["noisy_processes"]) for r in rows] == [(0, 0), (0, 1), (2000, 1)]
    assert all(r["quiet_failed"] == 0 and r["quiet_p50_ms"] <= r["quiet_p99_ms"] for r in rows)
    assert rows[1]["noisy_refused_per_s"] == 0 and rows[1]["noisy_contexts_per_s"] > 2000 + (2000 + 1024) / 2
    assert rows[2]["noisy_refused_per_s"] > 0 and rows[2]["noisy_contexts_per_s"] <= 2000 + (2000 + 1024) / 2


def test_a_bulk_loading_tenant_is_held_to_its_ingest_rate_and_never_refused(tmp_path):
    """bench/ingest_isolation.py at a tiny size: with --namespace-ingest-rate the bulk load is
    stored at most at the rate plus one second's worth and two calls, waiting its turn (no call
    refused); without it, faster; the quiet tenant's lookups are answered in every row."""
    script = Path(__file__).resolve().parents[1] / "bench" / "ingest_isolation.py"
    out = subprocess.run([sys.executable, str(script), "--runs", "1", "--seconds", "2", "--tokens", "50000",
                          "--rate", "100000", "--doc-tokens", "500", "--batch", "4"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)["rows"]
    assert [(r["rate"], r["bulk"]) for r in rows] == [(0, False), (0, True), (100000, True)]
    assert all(r["quiet_failed"] == 0 and r["quiet_p50_ms"] <= r["quiet_p99_ms"] for r in rows)
    # tokens/s: the rate, its bucket, the call that overdrew it and the last one sent in the window (it waited past it)
    held = (100000 * 2 + 100000 + 2 * 64 * 500) / 2
    assert rows[1]["bulk_tokens_per_s"] > held and rows[1]["bulk_refused_calls"] == 0
    assert 0 < rows[2]["bulk_tokens_per_s"] <= held and rows[2]["bulk_refused_calls"] == 0


def test_the_single_token_table_loads_without_refusing_its_workers_steps(tmp_path):
    """bench/background_lookups.py at a tiny size: under a lookup rate the loader's background
    lookups leave the steps' lookups alone and the table still loads whole."""
    script = Path(__file__).resolve().parents[1] / "bench" / "background_lookups.py"
    out = subprocess.run([sys.executable, str(script), "--runs", "1", "--seconds", "4", "--tokens", "100000",
                          "--vocab", "4096", "--rate", "3000", "--step-contexts", "16"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    alone, loading = json.loads(out.stdout)["runs"][0]
    assert alone["steps_refused"] == 0 and loading["steps_refused"] == 0
    assert loading["tokens_loaded"] == 4096 and loading["table_complete_s"] is not None
    assert loading["loader_failures"] == 0
