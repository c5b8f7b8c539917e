"""One process of the SGLang worker tests: the real SSSDWorker class (NGRAMWorker's subclass,
imported with tests/sglang_standins.py), on tensor-parallel rank RANK of SIZE (gloo, SGLang's
own GroupCoordinator and parallel state). Prints one JSON line of what it saw.

Usage: python sglang_worker_child.py RANK SIZE STORE_FILE SCENARIO
The worker is created without NGRAMWorker.__init__ (it needs a GPU model runner); the fields
that constructor sets and the methods under test use are set here, and everything the test
calls is the real class's code.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import sglang_standins  # noqa: E402,F401  (before any SGLang kernel import)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


class Req:
    def __init__(self, rid, prompt, output):
        self.rid, self.origin_input_ids_unpadded, self.output_ids = rid, prompt, output
        self.origin_input_ids = prompt  # what the KV holds of the prompt (no multimodal padding here)
        self.finished_len = None

    @property
    def output_ids_through_stop(self):
        return self.output_ids[: self.finished_len] if self.finished_len is not None else self.output_ids


class SpecInfo:
    def __init__(self, tokens, lens):
        self.accept_tokens, self.accept_lens = torch.tensor(tokens), torch.tensor(lens)


class Batch:
    def __init__(self, reqs, spec_info=None, committed=None):
        """committed: each request's committed output length (overlap mode: the sequence lengths
        SGLang resolves before drafting, which leave out the root)."""
        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        self.reqs, self.spec_info, self.forward_mode = reqs, spec_info, ForwardMode.DECODE
        self.has_grammar = False
        self.seq_lens_cpu = (torch.tensor([len(r.origin_input_ids) + c - 1 for r, c in zip(reqs, committed)])
                             if committed is not None else None)
        self.seq_lens = self.seq_lens_cpu

    def grammar_needs_sync(self):
        return False


class Sink:
    def __init__(self):
        self.sent = []

    def submit(self, rid, tokens):
        self.sent.append([rid, [int(t) for t in tokens]])

    def close(self):
        pass


def make_worker(rank, overlap, width=4, per_batch=False):
    """The worker as NGRAMWorker.__init__ and SSSDWorker.__init__ would leave it, with the real
    class's own width set-up; per_batch: per-batch widths, its drafter's planner (always
    drafting: a flat cost table) choosing each step's width."""
    from client_sdk.drafting.config import SpeculatorConfig
    from client_sdk.drafting.costs import StepCosts
    from client_sdk.drafting.planner import PlannerConfig, StepPlanner
    from client_sdk.drafting.speculator import Speculator
    from sglang_integration.config import PluginConfig
    from sglang_integration.drafts import BatchDrafter
    from sglang_integration.live_requests import LiveRequests
    from sglang_integration.worker import parallel_rank_and_group, worker_class

    cls = worker_class()
    w = cls.__new__(cls)
    w.enable_overlap, w.draft_token_num, w._prev_decode_rids = overlap, width, set()
    w.speculative_num_draft_tokens = width
    w.tp_rank, w.tp_group = parallel_rank_and_group()
    w._set_up_widths(PluginConfig(per_batch_widths=per_batch))
    w._reqs, w.drafter, sink = LiveRequests(), None, Sink()
    if w.tp_rank == 0:
        from sglang_integration.metrics import WorkerMetrics

        w.metrics = WorkerMetrics()
        if per_batch:
            planner = StepPlanner(StepCosts({(2, n): 1e-3 for n in w.menu}), PlannerConfig(widths=w.menu))
            w.drafter = BatchDrafter(Speculator(SpeculatorConfig(), planner=planner, feedback=sink), width, 100,
                                     adaptive=True, menu=w.menu)
        else:
            w.drafter = BatchDrafter(Speculator(SpeculatorConfig(fixed_budget=width - 1), feedback=sink), width, 100)
    return w, sink


class Runner:
    """Stands in for the target ModelRunner's two fields a width switch swaps."""

    attn_backend, decode_cuda_graph_runner = "backend at the launch width", "graphs at the launch width"


def widths_scenario(rank):
    """Per-batch widths on both ranks: the real class's buffers, controller and switches; only
    the building of a width's attention backend and CUDA graphs (CUDA-only) is stood in."""
    from sglang.srt.speculative.adaptive_runtime_state import SpecRuntimeState

    w, _ = make_worker(rank, overlap=True, width=9, per_batch=True)
    w.device, w.max_batch_size, w.model_runner = "cpu", 4, Runner()
    w._init_preallocated_tensors()
    built = []

    def build(speculative_num_steps, speculative_num_draft_tokens, cuda_graph_bs=None):  # for build_verify_state
        steps, width = speculative_num_steps, speculative_num_draft_tokens
        built.append(width)
        return SpecRuntimeState(steps, width, None, None, f"backend at {width}", f"graphs at {width}", None, None)

    w.build_adaptive_runtime_state = build
    w._register_widths(None)
    out = {"menu": list(w.menu), "built": built, "active_after_init": w.draft_token_num, "steps": []}
    a, b = Req("a", [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7], [8]), Req("b", [1, 2, 3, 1, 2, 3, 1, 2], [3])
    relay = [8, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]  # the launch width's stride, 9
    for _ in range(3):
        batch = Batch([a, b], SpecInfo(relay, [1, 1]), committed=[len(a.output_ids), len(b.output_ids)])
        try:  # the real method: drafts, switches width, copies them into the buffers, then
            w._prepare_for_speculative_decoding(batch)  # reaches SGLang's first GPU kernel
            reached = "end"
        except NotImplementedError as exc:
            reached = str(exc).split(":")[0]
        width = w.draft_token_num
        out["steps"].append({
            "width": width, "stride": w.speculative_num_draft_tokens, "reached": reached,
            "backend": w.model_runner.attn_backend, "graphs": w.model_runner.decode_cuda_graph_runner,
            "views": [w.draft_tokens_batch[2].numel(), w.tree_mask_batch[2].numel(),
                      list(w.retrieve_indexes_batch[2].shape), w.retrieve_indexes_batch[2].is_contiguous()],
            "drafts": w.draft_tokens[: 2 * width].tolist(),
            "mask": w.tree_mask[: 2 * width * width].to(torch.int64).tolist(),
        })
        a.output_ids, b.output_ids = a.output_ids + [5], b.output_ids + [1]
        relay = [a.output_ids[-1]] + [0] * 8 + [b.output_ids[-1]] + [0] * 8
    from sglang.srt.managers.scheduler import GenerationBatchResult
    from sglang.srt.speculative.ngram_info import NgramVerifyInput
    from sglang_integration.width_states import widen_result

    accepted = torch.tensor([[5, 6, 7], [1, 0, 0]]).reshape(-1)
    result = GenerationBatchResult(next_token_ids=accepted, next_draft_input=NgramVerifyInput(
        draft_token_num=3, new_seq_lens=torch.tensor([4, 2]), accept_tokens=accepted, accept_lens=torch.tensor([3, 1])))
    widen_result(result, 2, 3, 9, verify=True)
    out["widened"] = [result.next_token_ids.tolist(), result.next_draft_input.draft_token_num,
                      result.speculative_output_stride]
    return out


def full_mask_scenario(rank):
    """The attention's full mask (what a GPU verify gets) from the worker's few operations against
    NGRAM's own request-by-request loop, for the same drafts, over steps of different widths. On
    CPU: NGRAM is told it is not on a CPU, so its loop runs on CPU tensors, and the three CUDA
    kernels of its preparation (tree indices, cache slots, mamba tracking), which neither mask
    reads, are replaced by no-ops for this scenario only."""
    import sglang.srt.speculative.ngram_worker as ngram
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    from sglang.srt.speculative.adaptive_runtime_state import SpecRuntimeState

    ngram._is_cpu = False
    for name in ("reconstruct_indices_from_tree_mask_func", "assign_extend_cache_locs_func",
                 "prepare_mamba_track_for_verify"):
        setattr(ngram, name, lambda *args, **kwargs: None)
    w, _ = make_worker(rank, overlap=True, width=9, per_batch=True)
    w.device, w.max_batch_size, w.model_runner = "cpu", 4, Runner()
    w._init_preallocated_tensors()
    w.build_adaptive_runtime_state = lambda speculative_num_steps, speculative_num_draft_tokens, cuda_graph_bs=None: \
        SpecRuntimeState(speculative_num_steps, speculative_num_draft_tokens, None, None, "backend", "graphs", None, None)
    w._register_widths(None)
    a, b = Req("a", [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7], [8]), Req("b", [1, 2, 3, 1, 2, 3, 1, 2], [3])
    relay = [8, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]
    steps = []

    def batch():
        out = Batch([a, b], SpecInfo(relay, [1, 1]), committed=[len(a.output_ids), len(b.output_ids)])
        out.req_pool_indices, out.req_to_token_pool = None, type("Pool", (), {"req_to_token": None})()
        return out

    for _ in range(3):
        ours = batch()
        w._prepare_for_speculative_decoding(ours)
        n = w.draft_token_num
        drafts = w.draft_tokens[: 2 * n].numpy().copy()
        mask = w.tree_mask[: 2 * n * n].numpy().copy()
        theirs = batch()
        w._staged = (drafts, mask)  # the same drafts, through NGRAM's own method and loop
        ngram.NGRAMWorker._prepare_for_speculative_decoding(w, theirs)
        steps.append({"width": n, "flag_kept": ngram.USE_FULL_MASK, "mode": str(ours.forward_mode == ForwardMode.TARGET_VERIFY),
                      "ours": ours.spec_info.custom_mask.to(torch.int64).tolist(),
                      "theirs": theirs.spec_info.custom_mask.to(torch.int64).tolist(),
                      "full_size": n * int(ours.seq_lens_cpu.sum()) + 2 * n * n})
        a.output_ids, b.output_ids = a.output_ids + [5], b.output_ids + [1]
        relay = [a.output_ids[-1]] + [0] * 8 + [b.output_ids[-1]] + [0] * 8
    return {"steps": steps}


def lifecycle_scenario(rank):
    """Requests that leave the decode batch without a finish notice, through the real class's
    hooks as NGRAM's forward_batch_generation calls them (sync mode): the Req is held a few steps
    for a late finish notice, then dropped; a cache flush drops everything; a request that comes
    back afterwards is admitted again with its whole context and fed back at its finish."""
    from prometheus_client import REGISTRY

    from sglang_integration.live_requests import LiveRequests
    from sglang_integration.worker import NoCorpus

    w, sink = make_worker(rank, overlap=False)
    w.ngram_corpus = NoCorpus()  # (NGRAMWorker.__init__'s; its clear_cache_pool resets it)
    w._reqs = LiveRequests(grace_steps=3)
    a, b = Req("a", [5, 6, 7, 8, 5, 6, 7], [8]), Req("b", [1, 2, 3, 1, 2], [3])
    out = {"held": [], "drafting": []}

    def step(reqs):
        batch = Batch(reqs)
        w._prepare_draft_tokens(batch)
        w._update_ngram_corpus(batch)  # (NGRAM's forward sets _prev_decode_rids right after)
        w._prev_decode_rids = {r.rid for r in reqs}
        for r in reqs:
            r.output_ids = r.output_ids + [r.output_ids[-1] + 1]

    for reqs in ([a, b], [a], [a], [a], [a], [a, b]):  # b leaves at step 2 (retracted), back at step 6
        step(reqs)
        out["held"].append(sorted(rid for rid in "ab" if rid in w._reqs))
        out["drafting"].append(sorted(w.drafter._state))
        out.setdefault("forgotten_by_step", []).append(REGISTRY.get_sample_value("sssd_requests_forgotten_total"))
    w.clear_cache_pool()
    out["after_flush"] = [len(w._reqs), sorted(w.drafter._state), sorted(w.drafter.spec._requests)]
    out["forgotten"] = REGISTRY.get_sample_value("sssd_requests_forgotten_total")
    step([b])  # b decodes again after the flush
    out["b_context"] = list(b.origin_input_ids_unpadded) + list(b.output_ids[:-1])  # (step appended one more)
    out["b_indexed"] = w.drafter.spec._requests["b"].index().tokens.tolist()
    w.note_request_finished(rid="b", natural_stop=True)
    w.note_request_finished(rid="b", natural_stop=True)  # a duplicate notice: not a second document
    again = Req("b", [7, 7, 7], [2])  # a later request with the same (client-chosen) rid
    step([again])
    w.note_request_finished(rid="b", natural_stop=True)
    from sglang.srt.managers.schedule_batch import FINISH_ABORT, FINISH_LENGTH

    # SGLang reports an abort and a length cap alike (natural_stop False): an aborted generation
    # (a cancel, timeout or error) is not fed back, and counted; a capped one is
    cut, capped = Req("c", [4, 4, 4], [6]), Req("d", [9, 9, 9], [1])
    step([cut, capped])
    cut.finished_reason, capped.finished_reason = FINISH_ABORT(), FINISH_LENGTH(2)
    for r in (cut, capped):
        w.note_request_finished(rid=r.rid, natural_stop=False)
    out["after_abort"] = [sorted(w.drafter._state), len(w._reqs)]
    out["aborted_counted"] = REGISTRY.get_sample_value("sssd_generations_not_fed_back_total", {"reason": "aborted"})
    out["fed_back"] = sink.sent
    from client_sdk.transport.feedback import FeedbackSink

    counts = FeedbackSink.__new__(FeedbackSink)  # a sink's running counts, as the product's sink keeps them
    counts.sent, counts.conflicts, counts.failed, counts.dropped, counts.resends = 7, 0, 1, 2, 3
    w.drafter.spec.feedback = counts
    w._update_ngram_corpus(Batch([]))  # a decode step's upkeep beside the GPU
    out["feedback_counted"] = [REGISTRY.get_sample_value("sssd_feedback_generations_total", {"outcome": o})
                               for o in ("sent", "failed", "dropped")] + [REGISTRY.get_sample_value("sssd_feedback_resends_total")]
    return out


def init_scenario(rank):
    """The real SSSDWorker.__init__ after NGRAM's constructor (which needs a GPU model runner and is
    replaced by one that leaves the fields ours reads, as NGRAM's does): its corpus swapped out
    while NGRAM's constructor runs, the TP rank from SGLang's state, the width menu, and rank 0's
    drafter built from the plugin's environment and the model's config."""
    import types

    import sglang.srt.speculative.ngram_worker as ngram_worker

    from sglang_integration.worker import NoCorpus, worker_class

    seen = {}

    def ngram_init(self, server_args, gpu_id, nccl_port, target_worker):
        seen["corpus_during"] = ngram_worker.NgramCorpus is NoCorpus
        self.enable_overlap, self._prev_decode_rids = True, set()
        self.draft_token_num = self.speculative_num_draft_tokens = 9
        self._target_worker, self.model_runner = target_worker, target_worker.model_runner  # (as NGRAM sets them)

    config = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
              "intermediate_size": 14336, "vocab_size": 100}
    hf = types.SimpleNamespace(vocab_size=100, to_dict=lambda: dict(config))
    runner = types.SimpleNamespace(model_config=types.SimpleNamespace(hf_config=hf), max_running_requests=32)
    real_corpus, ngram_worker.NGRAMWorker.__init__ = ngram_worker.NgramCorpus, ngram_init
    w = worker_class()(None, 0, 0, types.SimpleNamespace(model_runner=runner))
    out = {"corpus_during": seen["corpus_during"], "corpus_after": ngram_worker.NgramCorpus is real_corpus,
           "seen_rank": w.tp_rank, "menu": list(w.menu), "drafts_here": w.drafter is not None}
    if w.drafter is not None:
        spec = w.drafter.spec
        out.update(width=w.drafter.width, planner_widths=list(spec.planner.config.widths),
                   cost_rows=sorted(spec.planner.costs.rows), remote=spec.remote is not None)
        spec.close()
    return out


def main():
    rank, size, store, scenario = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from sglang.srt.distributed.parallel_state import GroupCoordinator
    from sglang.srt.runtime_context import get_parallel

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    group = GroupCoordinator([list(range(size))], rank, "gloo", False, False, False, False, False, False,
                             group_name="tp")
    out = {"rank": rank}
    with get_parallel().override(tp_rank=rank, tp_size=size, tp_group=group):
        if scenario in ("widths", "full-mask", "lifecycle", "init"):
            run = {"widths": widths_scenario, "full-mask": full_mask_scenario, "lifecycle": lifecycle_scenario,
                   "init": init_scenario}[scenario]
            print(json.dumps({"rank": rank, **run(rank)}), flush=True)
            dist.destroy_process_group()
            return
        overlap = scenario in ("overlap", "interleaved")
        w, sink = make_worker(rank, overlap)
        out["seen_rank"], out["drafts_here"] = w.tp_rank, w.drafter is not None
        prompt = [5, 6, 7, 8, 5, 6, 7]
        # overlap mode: results are processed one step late, so what the last step (here the
        # prefill: column 0 of each row) accepted arrives relayed and is not in output_ids yet
        if overlap:
            a, b = Req("a", prompt, []), Req("b", [1, 2, 3, 1, 2], [])
            batch = Batch([a, b], SpecInfo([8, 0, 0, 0, 3, 0, 0, 0], [1, 1]), committed=[1, 1])
        else:
            a, b = Req("a", prompt, [8]), Req("b", [1, 2, 3, 1, 2], [3])
            batch = Batch([a, b])
        drafts, mask = w._prepare_draft_tokens(batch)
        out["step1"] = [drafts.tolist(), mask.astype(int).tolist()]
        if overlap:
            # interleaved: a prefill batch ran between the two decode steps, so result processing
            # caught up and output_ids already holds what is relayed again
            a.output_ids, b.output_ids = ([8, 5, 6], [3, 1]) if scenario == "interleaved" else ([8], [3])
            batch = Batch([a, b], SpecInfo([5, 6, 0, 0, 1, 0, 0, 0], [2, 1]), committed=[3, 2])
        else:
            a.output_ids, b.output_ids = a.output_ids + [5, 6], b.output_ids + [1]
            batch = Batch([a, b])
        drafts, mask = w._prepare_draft_tokens(batch)
        out["step2"] = [drafts.tolist(), mask.astype(int).tolist()]
        out["staging"] = [w.prev_token_ids, w.prev_accept_lens]
        if w.drafter is not None:  # what each request's own-text index holds: its context, no chunk twice
            out["indexed"] = {r.rid: w.drafter.spec._requests[r.rid].index().tokens.tolist() for r in (a, b)}
        w._prev_decode_rids = {"a", "b"}
        w._update_ngram_corpus(Batch([b]))  # "a" left the decode batch: retracted, not finished
        a.output_ids = [8, 5, 6, 5, 6, 7, 9, 9]
        a.finished_len = len(a.output_ids) - 1  # the stop token is the first 9
        for _ in range(2):  # a duplicate finish notice is not a second document
            w.note_request_finished(rid="a", natural_stop=True)
        out["fed_back"] = sink.sent
        from prometheus_client import REGISTRY

        if w.drafter is not None:
            out["drafts_counted"] = REGISTRY.get_sample_value("sssd_drafts_total", {"width": "4"})
        if scenario == "interleaved":  # a sequence length that contradicts output and relay: counted
            b.output_ids = [3, 1, 2]
            w._prepare_draft_tokens(Batch([b], SpecInfo([4, 0, 0, 0], [1]), committed=[9]))
            if w.drafter is not None:
                out["misaligned"] = REGISTRY.get_sample_value("sssd_relay_misaligned_total")
    print(json.dumps(out), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
