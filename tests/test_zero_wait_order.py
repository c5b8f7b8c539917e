"""bench/zero_wait_order.py: the traffic orders, tau over the same requests, a frozen calibration."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from client_sdk.types import DraftTree

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # the script imports bench/step_cost.py, as when it runs from there
spec = importlib.util.spec_from_file_location("zero_wait_order", BENCH / "zero_wait_order.py")
zero_wait_order = sys.modules.setdefault("zero_wait_order", importlib.util.module_from_spec(spec))
spec.loader.exec_module(zero_wait_order)


@pytest.fixture
def two_sets(monkeypatch):
    monkeypatch.setattr(zero_wait_order.datasets, "mtbench_cases", lambda: [{"id": "m0"}, {"id": "m1"}])
    monkeypatch.setattr(zero_wait_order.datasets, "humaneval_cases",
                        lambda: [{"id": "h0"}, {"id": "h1"}, {"id": "h2"}])


@pytest.mark.parametrize("order, ids, sets", [
    ("sim", ["m0", "m1", "h0", "h1", "h2"], ["mtbench"] * 2 + ["humaneval"] * 3),
    ("interleaved", ["m0", "h0", "m1", "h1", "h2"], ["mtbench", "humaneval", "mtbench", "humaneval", "humaneval"]),
    ("humaneval", ["h0", "h1", "h2"], ["humaneval"] * 3),
])
def test_traffic_orders(two_sets, order, ids, sets):
    cases, got_sets = zero_wait_order.traffic(order)
    assert [c["id"] for c in cases] == ids
    assert got_sets == sets


def test_an_unknown_order_is_refused(two_sets):
    with pytest.raises(ValueError, match="unknown order 'mtbench'"):
        zero_wait_order.traffic("mtbench")


def test_compare_counts_tau_over_the_requests_every_run_finished():
    sets = ["mtbench", "humaneval"]  # r0, r2: mtbench; r1, r3: humaneval (case i % 2)
    runs = {
        (1, "zero-wait"): {"r0": (10, 5), "r1": (8, 8), "r2": (6, 3)},
        (1, "blocking"): {"r0": (10, 4), "r1": (8, 4), "r2": (6, 2), "r3": (5, 5)},
        (16, "zero-wait"): {"r0": (10, 10), "r1": (8, 2), "r2": (6, 6)},
        (16, "blocking"): {"r0": (10, 5), "r1": (8, 4), "r2": (6, 3)},
    }
    got = zero_wait_order.compare(runs, sets)
    assert got["same_requests"] == 3  # r3 finished in one run only
    b1 = got["batches"]["1"]
    assert b1["all"] == {"requests": 3, "tau_zero_wait": round(24 / 16, 4), "tau_blocking": 2.4,
                         "ratio": round(24 / 16 / 2.4, 4)}
    assert b1["mtbench"]["requests"] == 2 and b1["mtbench"]["tau_zero_wait"] == 2.0
    assert b1["humaneval"] == {"requests": 1, "tau_zero_wait": 1.0, "tau_blocking": 2.0, "ratio": 0.5}
    assert got["batches"]["16"]["humaneval"]["tau_zero_wait"] == 4.0


def test_a_frozen_calibration_keeps_its_prior():
    tree = DraftTree(np.array([5, 6], np.int32), np.array([-1, 0], np.int32), np.array([0.5, 0.25]),
                     np.array([[[1, 0, 2, 1]], [[1, 0, 2, 1]]], np.int8))
    frozen, learning = zero_wait_order.FrozenCalibration(), zero_wait_order.Calibration()
    before = frozen.table.copy()
    for cal in (frozen, learning):
        cal.update(tree, [0, 1])
    assert np.array_equal(frozen.table, before)
    assert not np.array_equal(learning.table, before)  # the same update moves a learning table


@pytest.mark.parametrize("argv, message", [
    (["--orders", "sim,bogus"], "--orders 'bogus': one of sim, interleaved, humaneval"),
    (["--calibration", "fresh"], "--calibration 'fresh': one of learned, frozen"),
])
def test_bad_options_are_refused_in_one_line_before_anything_loads(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(sys, "argv", ["zero_wait_order.py", *argv])
    monkeypatch.setattr(zero_wait_order.datasets, "sharegpt_datastore", lambda: pytest.fail("loaded the datastore"))
    with pytest.raises(SystemExit) as exit_:
        zero_wait_order.main()
    assert exit_.value.code == 2 and message in capsys.readouterr().err
