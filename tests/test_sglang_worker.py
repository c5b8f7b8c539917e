"""The real SSSDWorker class against the real sglang==0.5.23 package on CPU, on both ranks of
a two-process tensor-parallel group (gloo), in both overlap modes. See sglang_worker_child.py
for what is real and what stands in."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sglang.srt.speculative.spec_info", reason="sglang is not installed")
pytest.importorskip("tvm_ffi", reason="the NGRAM worker's import chain needs the sglang test packages (make test)")

CHILD = Path(__file__).parent / "sglang_worker_child.py"


def run_ranks(tmp_path, scenario, size=2):
    store = tmp_path / f"store-{scenario}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, str(CHILD), str(r), str(size), str(store), scenario],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for r in range(size)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return sorted(outs, key=lambda o: o["rank"])


@pytest.mark.parametrize("scenario", ["overlap", "sync", "interleaved"])
def test_worker_on_two_tensor_parallel_ranks(tmp_path, scenario):
    rank0, rank1 = run_ranks(tmp_path, scenario)
    # each rank reads its own place from SGLang's parallel state; rank 0 alone drafts
    assert (rank0["seen_rank"], rank1["seen_rank"]) == (0, 1)
    assert rank0["drafts_here"] and not rank1["drafts_here"]
    # ... and every rank verifies rank 0's drafts, bit for bit
    assert rank0["step1"] == rank1["step1"] and rank0["step2"] == rank1["step2"]
    drafts, mask = rank0["step2"]
    assert len(drafts) == 2 * 4 and len(mask) == 2 * 4 * 4
    # the root of each row is the last committed token (relayed ones included in overlap mode)
    assert drafts[0] == 6 and drafts[4] == 1
    # every scenario commits the same tokens: each index holds its context once (interleaved: the
    # relayed tokens result processing had already added are not appended a second time)
    assert rank0["indexed"] == {"a": [5, 6, 7, 8, 5, 6, 7, 8, 5, 6], "b": [1, 2, 3, 1, 2, 3, 1]}
    if scenario != "sync":  # NGRAM's staging is set for its post-verify code
        assert rank0["staging"] == [[5, 6, 0, 0, 1, 0, 0, 0], [2, 1]]
    else:
        assert rank0["staging"] == [[], [0, 0]]
    # retraction fed nothing back; the finish fed the output through the stop token, once
    assert rank0["fed_back"] == [["a", [8, 5, 6, 5, 6, 7, 9]]] and rank1["fed_back"] == []
    assert rank0["drafts_counted"] == 4  # two steps of two requests at width 4 (Prometheus)
    if scenario == "interleaved":
        assert rank0["misaligned"] == 1


def test_the_workers_constructor_on_two_tensor_parallel_ranks(tmp_path):
    """SSSDWorker.__init__ itself (NGRAM's constructor replaced, see init_scenario): NGRAM's trie
    class is swapped out only while that constructor runs; both ranks find their TP rank and the
    same width menu; rank 0 alone builds a drafter, from the plugin's environment (no datastore
    here) and the model's config: the menu as its planner's widths, roofline rows up to the
    runner's max_running_requests."""
    rank0, rank1 = run_ranks(tmp_path, "init")
    for r, rank in ((rank0, 0), (rank1, 1)):
        assert r["corpus_during"] and r["corpus_after"] and r["seen_rank"] == rank
        assert r["menu"] == [1, 2, 3, 5, 9]
    assert rank0["drafts_here"] and not rank1["drafts_here"]
    assert rank0["width"] == 9 and rank0["planner_widths"] == [1, 2, 3, 5, 9] and rank0["cost_rows"] == [1, 8, 32]
    assert not rank0["remote"]  # SSSD_DATASTORE unset: local drafting only


def test_per_batch_widths_on_two_tensor_parallel_ranks(tmp_path):
    """Each step verifies at the menu width its drafts need, the same on both ranks: the real
    class switches SGLang's adaptive runtime state (attention backend + graphs, stood in as
    labels) and NGRAM's buffer views, then SGLang's own preparation runs up to its first GPU kernel."""
    rank0, rank1 = run_ranks(tmp_path, "widths")
    rank0.pop("rank"), rank1.pop("rank")
    assert rank0 == rank1  # widths, buffers and drafts bit for bit
    assert rank0["menu"] == [1, 2, 3, 5, 9] and rank0["built"] == [1, 2, 3, 5]  # launch width: SGLang's own
    assert rank0["active_after_init"] == 9
    widths = [s["width"] for s in rank0["steps"]]
    assert all(w in rank0["menu"] for w in widths) and len(set(widths)) > 1  # the width moves with the drafts
    for s in rank0["steps"]:
        w = s["width"]
        assert s["stride"] == 9  # result processing and the relay keep the launch width's stride
        assert s["reached"] == "sgl_kernel.speculative.reconstruct_indices_from_tree_mask"
        label = "the launch width" if w == 9 else str(w)
        assert (s["backend"], s["graphs"]) == (f"backend at {label}", f"graphs at {label}")
        assert s["views"] == [2 * w, 2 * w * w, [2, w], True]  # contiguous views at the step's width
        assert len(s["drafts"]) == 2 * w and len(s["mask"]) == 2 * w * w
    # each row's root is the request's last committed token (the relayed one at the first step)
    assert [rank0["steps"][0]["drafts"][0], rank0["steps"][0]["drafts"][widths[0]]] == [8, 3]
    # a narrower verify's outputs padded to the launch width's rows
    assert rank0["widened"] == [[5, 6, 7, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], 9, 9]


def test_the_full_attention_mask_is_ngrams_own_for_the_same_drafts(tmp_path):
    """On a GPU NGRAM builds the verify's full custom mask request by request; the worker builds
    it in a fixed few operations. On CPU (NGRAM's loop made to run on CPU tensors), over steps of
    different widths, the worker's mask is NGRAM's own for the same drafts, element for element."""
    (rank0,) = run_ranks(tmp_path, "full-mask", size=1)
    widths = [s["width"] for s in rank0["steps"]]
    assert len(set(widths)) > 1  # the width moves with the drafts
    for s in rank0["steps"]:
        assert s["flag_kept"] and s["mode"] == "True"  # NGRAM's flag is restored; the batch verifies
        assert len(s["theirs"]) == s["full_size"] > 2 * s["width"] ** 2  # the full mask, not the n x n one
        assert s["ours"] == s["theirs"]


def test_requests_that_leave_without_a_finish_are_not_held_forever(tmp_path):
    """A request retracted and then aborted while waiting gets no finish notice from SGLang: the
    real class holds its Req a few decode steps (for a late notice), then drops and counts it;
    SGLang's cache flush (nothing decoding) drops every request's state; a request decoding
    again after the flush is admitted with its whole context, and its finish is fed back once; a
    later request that reuses its rid is fed back too; an aborted one is not."""
    (rank0,) = run_ranks(tmp_path, "lifecycle", size=1)
    assert rank0["held"] == [["a", "b"], ["a", "b"], ["a", "b"], ["a", "b"], ["a"], ["a", "b"]]  # grace: 3 steps
    assert rank0["drafting"] == [["a", "b"], ["a"], ["a"], ["a"], ["a"], ["a", "b"]]  # dropped as it left
    assert rank0["forgotten_by_step"] == [0, 0, 0, 0, 1, 1]  # (Prometheus, sssd_requests_forgotten_total)
    assert rank0["after_flush"] == [0, [], []] and rank0["forgotten"] == 3
    assert rank0["b_indexed"] == rank0["b_context"]
    # b's finish fed back once however often noticed, and a later request reusing its rid too
    # ... and of two finishes SGLang reports alike (natural_stop False), the length cap is fed back
    # and the abort is not (counted as sssd_generations_not_fed_back_total{reason="aborted"})
    assert rank0["fed_back"] == [["b", rank0["b_context"][5:] + [rank0["b_context"][-1] + 1]], ["b", [2, 3]],
                                 ["d", [1, 2]]]
    assert rank0["aborted_counted"] == 1 and rank0["after_abort"] == [[], 0]
    assert rank0["feedback_counted"] == [7, 1, 2, 3]  # the feedback sink's counts reach Prometheus beside the GPU
