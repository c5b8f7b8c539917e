"""The serving simulation's GPU: a measured verify-time table, linear between its grid points, and how a
step waits out a verify."""

import json
import sys
import threading
import time

import pytest

from client_sdk.drafting.budget import PRESETS, forward_time
from sssd.bench.sim_gpu import LLAMA_8B, MeasuredGPU, RooflineGPU, wait

TABLE = {(1, 1): 8.0, (1, 5): 9.0, (1, 17): 12.0, (4, 1): 10.0, (4, 5): 12.0, (4, 17): 20.0}


def write(tmp_path, cells, device="NVIDIA H200"):
    rows = [{"batch": b, "width": w, "measured_ms": ms} for (b, w), ms in cells.items()]
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"device": device, "context": 1024, "cost_table": {"rows": rows}}))
    return path


@pytest.mark.parametrize("batch, width, ms", [
    (1, 1, 8.0), (4, 17, 20.0), (1, 3, 8.5), (1, 11, 10.5),  # the grid, and between widths
    (2, 1, 8.0 + 2.0 / 3), (3, 5, 9.0 + 3.0 * 2 / 3),  # between batches
    (2, 3, (8.5 * 2 + 11.0) / 3),  # between both: batch 1's 8.5 and batch 4's 11.0 at width 3
])
def test_a_measured_table_is_linear_between_its_grid_points(tmp_path, batch, width, ms):
    gpu = MeasuredGPU(write(tmp_path, TABLE))
    assert gpu.seconds(batch, width, context=300) == pytest.approx(ms / 1e3)
    assert gpu.seconds(batch, width, context=5000) == gpu.seconds(batch, width, context=300)  # its own context


@pytest.mark.parametrize("batch, width, message", [(8, 1, "batch 8 is outside"), (1, 18, "width 18 is outside"),
                                                   (1, 0, "width 0 is outside")])
def test_a_step_outside_the_table_is_refused_in_one_line(tmp_path, batch, width, message):
    with pytest.raises(ValueError, match=message):
        MeasuredGPU(write(tmp_path, TABLE)).seconds(batch, width, 1024)


@pytest.mark.parametrize("cells, content, message", [
    ({k: v for k, v in TABLE.items() if k != (4, 5)}, None, "missing"),
    ({k: v for k, v in TABLE.items() if k[1] != 1}, None, "needs width 1"),
    (None, "{\"rows\": []}", "not a bench/gpu_decode.py result"),
    (None, "not json", "not a bench/gpu_decode.py result"),
])
def test_a_file_that_is_not_a_whole_table_is_refused(tmp_path, cells, content, message):
    path = write(tmp_path, cells) if cells is not None else tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        MeasuredGPU(path)


def test_the_planner_starts_from_the_roofline_of_the_tables_device(tmp_path):
    h100 = MeasuredGPU(write(tmp_path, TABLE, device="NVIDIA H100 80GB HBM3"))
    assert h100.seed(4, 5) == forward_time(PRESETS["h100-sxm"], LLAMA_8B, 4, 5, 1024)
    assert MeasuredGPU(write(tmp_path, TABLE)).seed(4, 5) == forward_time(PRESETS["h200"], LLAMA_8B, 4, 5, 1024)
    assert RooflineGPU().seconds(4, 5, 1024.7) == forward_time(PRESETS["h100-sxm"], LLAMA_8B, 4, 5, 1024)


@pytest.mark.parametrize("how", ["sleep", "spin"])
def test_a_wait_lasts_its_time_and_a_spin_leaves_the_gil_to_other_threads(how):
    wait(1e-6, how)  # (the spin compiles on first use)
    counted, stop = [0], threading.Event()

    def count():
        while not stop.is_set():
            counted[0] += 1

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.25)  # longer than the wait: one that held the GIL would starve the counter for all of it
    thread = threading.Thread(target=count)
    thread.start()
    try:
        time.sleep(0.01)  # the counter runs
        start, before = time.perf_counter(), counted[0]
        wait(0.05, how)
        took, during = time.perf_counter() - start, counted[0] - before
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    assert took >= 0.05
    assert during > 1000, f"the other thread counted {during} times while the step thread waited ({how})"


def test_a_wait_of_nothing_returns_at_once_and_an_unknown_way_is_refused():
    start = time.perf_counter()
    wait(0.0, "spin")
    wait(-1.0, "sleep")
    assert time.perf_counter() - start < 0.01
    with pytest.raises(ValueError, match="GPU wait 'yield' is not one of sleep, spin"):
        wait(0.01, "yield")
