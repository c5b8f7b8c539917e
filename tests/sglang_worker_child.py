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
        self.reqs, self.spec_info = reqs, spec_info
        self.seq_lens_cpu = (torch.tensor([len(r.origin_input_ids) + c - 1 for r, c in zip(reqs, committed)])
                             if committed is not None else None)

    def grammar_needs_sync(self):
        return False


class Sink:
    def __init__(self):
        self.sent = []

    def submit(self, rid, tokens):
        self.sent.append([rid, [int(t) for t in tokens]])

    def close(self):
        pass


def make_worker(rank, overlap, width=4):
    from client_sdk.drafting.config import SpeculatorConfig
    from client_sdk.drafting.speculator import Speculator
    from sglang_integration.drafts import BatchDrafter
    from sglang_integration.worker import parallel_rank_and_group, worker_class

    cls = worker_class()
    w = cls.__new__(cls)
    w.enable_overlap, w.draft_token_num, w._prev_decode_rids = overlap, width, set()
    w.tp_rank, w.tp_group = parallel_rank_and_group()
    w._reqs, w.drafter, sink = {}, None, Sink()
    if w.tp_rank == 0:
        from sglang_integration.metrics import WorkerMetrics

        w.metrics = WorkerMetrics()
        w.drafter = BatchDrafter(Speculator(SpeculatorConfig(fixed_budget=width - 1), feedback=sink), width, 100)
    return w, sink


def main():
    rank, size, store, scenario = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from sglang.srt.distributed.parallel_state import GroupCoordinator
    from sglang.srt.runtime_context import get_parallel

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    group = GroupCoordinator([list(range(size))], rank, "gloo", False, False, False, False, False, False,
                             group_name="tp")
    out = {"rank": rank}
    with get_parallel().override(tp_rank=rank, tp_size=size, tp_group=group):
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
