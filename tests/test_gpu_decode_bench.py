"""bench/gpu_decode.py: its roofline fit, its data file, and a run end to end (tiny model, CPU)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from client_sdk.drafting.budget import Hardware, forward_time, forward_work
from sssd.bench.sim_gpu import LLAMA_8B

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_decode.py"
spec = importlib.util.spec_from_file_location("gpu_decode", SCRIPT)
gpu_decode = sys.modules.setdefault("gpu_decode", importlib.util.module_from_spec(spec))
spec.loader.exec_module(gpu_decode)


def _rows(hw: Hardware) -> list[dict]:
    m, ctx = LLAMA_8B, gpu_decode.CONTEXT
    rows = []
    for b in (1, 4, 16, 64, 256):
        for n in (1, 5, 17, 33):
            flops, moved = forward_work(m, b, n, ctx)
            rows.append({"flops": flops, "bytes": moved, "measured_ms": forward_time(hw, m, b, n, ctx) * 1e3})
    return rows


@pytest.mark.parametrize("compute_eff, memory_eff, overhead_s", [(0.5, 0.7, 200e-6), (0.9, 0.45, 0.0),
                                                                  (0.3, 0.95, 1.5e-3)])
def test_the_fit_recovers_the_roofline_that_made_the_table(compute_eff, memory_eff, overhead_s):
    hw = Hardware("made-up", 989e12, 4.8e12, compute_eff, memory_eff, overhead_s)
    fit = gpu_decode.fit_roofline(_rows(hw), hw.peak_flops, hw.bandwidth)
    assert fit["compute_eff"] == pytest.approx(compute_eff, abs=0.011)
    assert fit["memory_eff"] == pytest.approx(memory_eff, abs=0.011)
    assert fit["overhead_us"] == pytest.approx(overhead_s * 1e6, abs=25)
    assert fit["relative_error"]["max"] < 0.02


def test_the_data_file_keeps_every_token_and_case(tmp_path):
    rng = np.random.default_rng(3)
    docs = [np.array([0, 65535, 65536, 128255], dtype=np.int32)] + [rng.integers(0, 128256, k).astype(np.int32)
                                                                     for k in (1, 7, 300)]
    cases = [{"prompt": [1, 2, 3], "response": [70000, 5]}, {"prompt": [128000], "response": [9, 9, 9]}]
    gpu_decode.write_pack(tmp_path / "d.npz", cases, docs)
    got_cases, got_docs = gpu_decode.unpack(tmp_path / "d.npz")
    assert got_cases == cases
    assert len(got_docs) == len(docs) and all(np.array_equal(a, b) for a, b in zip(got_docs, docs))


def test_a_tree_forward_sees_its_ancestors_only():
    """A node's answer depends on the tokens of its ancestors, not on its siblings'."""
    model = gpu_decode.StaticLlama(gpu_decode.TINY, 1, 3, 16, "cpu", seed=1)
    tree = torch.tensor([[[1, 0, 0], [1, 1, 0], [1, 0, 1]]], dtype=torch.bool)  # root with two children
    a = model.hidden(torch.tensor([[5, 6, 7]]), tree)
    b = model.hidden(torch.tensor([[5, 6, 900]]), tree)  # the second child changes
    c = model.hidden(torch.tensor([[800, 6, 7]]), tree)  # the root changes
    assert torch.equal(a[0, :2], b[0, :2]) and not torch.allclose(a[0, 2], b[0, 2])
    assert not torch.allclose(a[0, 1], c[0, 1]) and not torch.allclose(a[0, 2], c[0, 2])


@pytest.mark.gpu
def test_a_captured_step_replays_the_forward_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model = gpu_decode.StaticLlama(gpu_decode.TINY, 4, 5, 64, "cuda")
    steps = {(b, n): model.step(b, n) for b in (1, 4) for n in (1, 5)}
    assert gpu_decode.replays_forward(model, steps) is True


def test_a_smoke_run_reports_every_batch_and_mode(tmp_path):
    pytest.importorskip("tiktoken", reason="the Llama-3 tokenizer of the replay sets (demo extra)")
    out = subprocess.run([sys.executable, str(SCRIPT), "run", "--smoke", "--batch-sizes", "1,3", "--steps", "15",
                          "--repeats", "2"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert len(result["cost_table"]["rows"]) == 2 * len(result["widths"])
    assert [r["batch"] for r in result["rows"]] == [1, 3]
    for row in result["rows"]:
        assert row["plain"]["tau"] == 1.0 and row["plain"]["mean_width"] == 1.0
        for mode in ("zero-wait", "pld"):
            assert "error" not in row[mode], row[mode]
            assert row[mode]["tau"] >= 1.0 and row[mode]["speedup"] > 0
            assert row[mode]["critical_path_us"]["p50"] <= row[mode]["critical_path_us"]["p99"]
            assert 0 < row[mode]["drafting_us"]["p50"] <= row[mode]["critical_path_us"]["p50"]
        assert row["zero-wait"]["late_prefetch_answers"] >= 0
        back_to_back = row["zero-wait back to back"]  # drafting only: no GPU time, no wall
        assert "error" not in back_to_back and back_to_back["drafting_us"]["p50"] > 0
        assert "tokens_per_s" not in back_to_back and back_to_back["tau"] >= 1.0


def test_the_summary_names_the_cost_tables_corners_and_every_batch_and_mode():
    result = json.loads((SCRIPT.parent / "results" / "gpu-h200" / "linear-run1.json").read_text())
    lines = gpu_decode.summary(result)
    assert lines[0] == "NVIDIA H200: graph replays the forward: True"
    assert sum(" ms  (roofline h200 " in line for line in lines) == 8  # 4 batches x widths 1 and 17
    for batch in (1, 4, 16, 64):
        for mode in ("plain", "zero-wait", "pld"):
            assert sum(line.startswith(f"b{batch:>3} {mode:9}: x") for line in lines) == 1
    assert "b  1 zero-wait: x1.401 tau 1.617" in "\n".join(lines)


def test_the_device_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT.parent / "gpu_run.sh")]).returncode == 0
