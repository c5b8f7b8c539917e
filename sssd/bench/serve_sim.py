"""``sssd bench serve-sim``: decode traffic against a real datastore service, on a simulated GPU.

A real ``sssd serve`` runs in a child process, filled with the ShareGPT datastore and merged
into one segment before anything is measured (a settled datastore: the fill's own background
compaction would otherwise keep a core busy through the first batch sizes). Recorded
responses of the dev sets (MT-Bench, HumanEval; Llama-3 tokens) are replayed as decode
traffic with continuous batching: ``batch`` requests are in flight; one that finishes is
replaced by the next case (its prompt indexed at admission, as at prefill). Every mode replays
the same cases in the same order; a batch size runs at least ``--steps`` steps per mode and at
least ``MIN_REQUEST_STEPS`` request-steps (more steps at batch 1 and 4), and each row reports its
steps and the requests each mode finished in them. Each step runs the
SGLang worker's own CPU path (``sglang_integration.drafts.BatchDrafter``: sync the committed
tokens, draft, emit the fixed-width token and mask arrays), on the requests as SGLang's overlap
mode hands them over (``OverlapRelay``: output_ids a step behind, the last step's tokens relayed,
the views made by the worker's ``relayed_views``), and then a simulated GPU verify:

- its time is the roofline of Llama-3.1-8B (bf16) on the H100-SXM preset
  (client_sdk.drafting.budget.forward_time: 989 TFLOP/s x 0.7, 3.35 TB/s x 0.8, 30 µs per
  forward) at the batch's mean context, for the width the step verifies: the product's
  StepPlanner sizes each step's drafts (width 1 = a plain step, no drafting), starting from
  that roofline's cost table and learning from the simulated step times it is told
  (``--gpu-costs FILE``: instead, the verify times that ``bench/gpu_decode.py`` measured on a
  real GPU, at that table's fixed context; ``sssd.bench.sim_gpu``);
- during it, the CPU does what runs beside a real GPU: ``prefetch`` (the worker's
  ``_update_ngram_corpus`` hook) and the verification outcome itself (the longest draft path
  that matches the recorded response, plus the next recorded token), then waits out the rest:
  asleep (the default), or ``--gpu-wait spin``, spinning without the GIL as CUDA's default
  synchronisation does (``sssd.bench.sim_gpu.wait``). On a 2-core box a spinning step thread
  keeps a core from the service and the client's thread, which a GPU host's other cores would not.

critical_path_us is the wall time between one step's verification result and the next step's
arrays (what the GPU waits for); critical_path_cpu_us is the step thread's CPU time in it
(time.thread_time): the difference is what the thread waited, for a core (the service and the
simulation share this machine's) or for the GIL (the client's threads taking an answer in). A
step lasts critical path + max(GPU, the CPU work beside it);
projected_speedup = (tokens / those seconds) / (batch / plain forward time): SSSD against
plain decoding on the same simulated GPU, every CPU overhead of drafting included.
time_share splits those seconds into the critical path, CPU work beside the GPU that outlasted
it, and the GPU itself; tau_drafted_steps is tau over the steps that drafted (the planner makes
the others plain steps, tau 1), which compares drafting quality between modes whose planners
drafted on different steps; tau_same_requests is each datastore mode's tau over the requests that
both zero-wait and blocking finished (``same_requests`` of them), tokens over steps, which
compares the two modes on exactly the same tokens (tau_zero_wait and tau_blocking count every
step of the run, whose unfinished requests differ between the modes). lookups: per datastore
mode, the worker's remote source's counts (lookups requested, answers used, late, refused while
its breaker was open: ``skipped_open``) and the prefetch answers whose picks they did not hold
(``misaligned_answers``; 0 expected). lookup_calls_per_step and server_cpu_us_per_request_step:
per datastore mode, the Lookup calls each decode step made and the service process's CPU time
(utime + stime, /proc) per request-step, over the measured steps: what sizes the service.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from array import array
from pathlib import Path

import numpy as np

from client_sdk.drafting.costs import StepCosts
from client_sdk.drafting.drafters import PromptLookup
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.types import DraftConfig
from client_sdk.runtime import build_speculator, lookup_options
from client_sdk.transport.remote import DatastoreClient
from client_sdk.transport.source import RemoteSource
from sglang_integration.drafts import BatchDrafter, RequestView, relayed_views
from sssd.bench.sim_gpu import HARDWARE, LLAMA_8B, RooflineGPU, wait  # noqa: F401 (HARDWARE: bench/step_cost.py's)
from sssd.bench.stats import percentiles, process_cpu_seconds

NAMESPACE = "sharegpt"
MODES = ("zero-wait", "blocking", "pld")
BLOCKING_DEADLINE_S = 0.02  # long enough that a healthy loopback service always answers
# request-steps each batch size runs at least (300 steps at batch 16): tau compared between modes
# over dozens of requests at every batch size, not over the first few responses at batch 1 and 4
MIN_REQUEST_STEPS = 4800
STEPS = 300  # decode steps each batch size runs per mode at least (the default of --steps)


@dataclasses.dataclass
class _Slot:
    rid: str
    prompt: list[int]
    truth: np.ndarray
    output: list[int] = dataclasses.field(default_factory=list)
    steps: int = 0  # the steps it was verified in (``advance`` calls)

    @staticmethod
    def of(case: dict, rid: str) -> "_Slot":
        return _Slot(rid, list(case["prompt"]), np.asarray(case["response"], dtype=np.int32))

    def view(self) -> RequestView:
        return RequestView(self.rid, self.prompt, self.output)

    def advance(self, tree, depth: int) -> int:
        """The verification outcome of a step that verified ``tree`` (None: nothing drafted): the
        longest path that matches the recorded response (up to ``depth`` tokens), then the next
        recorded token, appended to the output. Returns how many tokens it committed."""
        pos = len(self.output)
        path = tree.longest_match(self.truth[pos : pos + depth]) if tree is not None else []
        new = self.truth[pos : pos + len(path) + 1].tolist()
        self.output += new
        self.steps += 1
        return len(new)


class OverlapRelay:
    """The batch as the SGLang worker sees it in overlap mode, SGLang's default on a GPU: each
    request's prompt and output_ids as ``array("q")`` (sglang 0.5.23's Req), output_ids one step
    behind (result processing lags a step), the last step's tokens relayed in a flat
    accept_tokens list at the launch width's stride, and the views made by the worker's own
    ``relayed_views`` from that, as its ``_with_relayed`` makes them."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self._held: dict[str, tuple[array, array, list[int]]] = {}  # rid -> (prompt, output_ids, relayed)

    def admit(self, slot: "_Slot") -> None:
        self._held[slot.rid] = (array("q", slot.prompt), array("q", slot.output), [])

    def views(self, slots: list["_Slot"]) -> list[RequestView]:
        views, prev, lens, committed = [], [], [], []
        for s in slots:
            prompt, ids, relayed = self._held[s.rid]
            views.append(RequestView(s.rid, prompt, ids))
            prev += relayed + [0] * (self.stride - len(relayed))
            lens.append(len(relayed))
            committed.append(len(s.output))
        return relayed_views(views, prev, lens, self.stride, committed)[0]

    def verified(self, slot: "_Slot", count: int) -> None:
        """The step committed the slot's last ``count`` tokens: they are relayed at the next step,
        and the ones relayed at this step reach output_ids (result processing, a step late)."""
        _, ids, relayed = self._held[slot.rid]
        ids.extend(relayed)
        relayed[:] = slot.output[len(slot.output) - count :]

    def forget(self, rid: str) -> None:
        self._held.pop(rid, None)


def fill_service(address: str, docs: list[np.ndarray], vocab: int, progress: bool, settle: bool = True) -> None:
    """Ingest ``docs``; settle: then merge the namespace into one segment, so that no background
    compaction of the fill's segments (a core busy for tens of seconds on a small box) overlaps
    what is measured next (False: leave the segments the fill left, as compaction finds them)."""
    from tqdm import tqdm

    with DatastoreClient(address, timeout_s=600) as client:
        client.create_namespace(NAMESPACE, vocab)
        chunks = [docs[i : i + 2000] for i in range(0, len(docs), 2000)]
        batches = ([(f"s{i}-{j}", d.tolist()) for j, d in enumerate(chunk)] for i, chunk in enumerate(chunks))
        client.ingest_stream(NAMESPACE, tqdm(batches, total=len(chunks), desc="ingest", disable=not progress))
        if settle:
            client.compact(NAMESPACE, full=True)
        client.snapshot()


class Simulation:
    def __init__(self, cases: list[dict], address: str, batch: int, mode: str, steps: int, gpu=None,
                 draft_threads: int = 1, gpu_wait: str = "sleep", server_pid: int | None = None) -> None:
        """gpu: the simulated GPU (sim_gpu.RooflineGPU, the default, or MeasuredGPU); draft_threads:
        DraftConfig's (the cores each step's drafts are built on); gpu_wait: how a step waits out
        its verify (sim_gpu.wait); server_pid: the service's process, whose CPU time is reported."""
        self.cases, self.batch, self.mode, self.steps, self.gpu_wait = cases, batch, mode, steps, gpu_wait
        self.server_pid = server_pid
        self.gpu = RooflineGPU() if gpu is None else gpu
        widths = SpeculatorConfig().planner.widths
        costs = StepCosts({(batch, n): self.gpu.seed(batch, n) for n in widths})
        zero_wait = mode != "blocking"
        config = SpeculatorConfig(prefetch_outcomes=zero_wait, lookup_deadline_s=0.0 if zero_wait else BLOCKING_DEADLINE_S,
                                  draft=DraftConfig(draft_threads=draft_threads))
        self.client = DatastoreClient(address, timeout_s=5)
        remote = self.remote = None
        if mode != "pld":
            options = lookup_options(config.draft, config.draft.max_depth, zero_wait)
            remote = self.remote = RemoteSource(self.client, NAMESPACE, options, timeout_s=1.0)
            remote.connect()
        self.spec = build_speculator(costs=costs, remote=remote, config=config,
                                     drafter=PromptLookup() if mode == "pld" else None, vocab_size=LLAMA_8B.vocab)
        if not self.spec.wait_for_unigrams(120.0):  # a worker fetches it at start-up, before traffic
            raise TimeoutError("the datastore's single-token tries did not load within 120 s")
        self.drafter = BatchDrafter(self.spec, widths[-1], LLAMA_8B.vocab, adaptive=True)
        self.relay = OverlapRelay(widths[-1])  # the requests as SGLang's overlap mode hands them over
        self._next = 0

    def _admit(self) -> _Slot:
        case = self.cases[self._next % len(self.cases)]
        slot = _Slot.of(case, f"r{self._next}")
        self._next += 1
        self.drafter.admit(slot.view())
        self.relay.admit(slot)
        return slot

    def _load(self) -> tuple[float, int]:
        """(the service process's CPU seconds so far, 0 when its pid is not known; the Lookup
        calls this worker made so far)."""
        cpu = process_cpu_seconds(self.server_pid) if self.server_pid is not None else 0.0
        return cpu, self.remote.stats.requested if self.remote is not None else 0

    def run(self, warmup: int = 5) -> dict:
        slots = [self._admit() for _ in range(self.batch)]
        depth = self.spec.config.draft.max_depth if self.mode != "pld" else self.drafter.width - 1
        critical, critical_cpu, seconds, plain_seconds, tokens, matched, widths = [], [], 0.0, 0.0, 0, 0, []
        spent = {"critical_path": 0.0, "cpu_beyond_gpu": 0.0, "gpu": 0.0}
        drafted_tokens = drafted_requests = finished = 0
        done: dict[str, tuple[int, int]] = {}  # a finished request's (tokens, steps), warm-up included
        gpu = None
        for step in range(self.steps + warmup):
            if step == warmup:
                load = self._load()  # the lookups' load is counted over the measured steps
            c0, t0 = time.thread_time(), time.perf_counter()
            self.drafter.drafts(self.relay.views(slots), last_step_s=gpu)
            t1, c1 = time.perf_counter(), time.thread_time()
            context = float(np.mean([len(s.prompt) + len(s.output) for s in slots]))
            width = self.drafter.last_width
            gpu = self.gpu.seconds(self.batch, width, context)
            self.drafter.prefetch([s.rid for s in slots])  # beside the GPU: the worker's corpus-update hook
            # the verification outcome (the GPU's work, simulated)
            counts = [s.advance(self.drafter.last_tree(s.rid), depth) for s in slots]
            for s, n in zip(slots, counts):
                self.relay.verified(s, n)
            committed = sum(counts)
            beside = time.perf_counter() - t1
            wait(gpu - beside, self.gpu_wait)
            if step >= warmup:
                critical.append(t1 - t0)
                critical_cpu.append(c1 - c0)
                seconds += (t1 - t0) + max(gpu, beside)
                spent["critical_path"] += t1 - t0
                spent["cpu_beyond_gpu"] += max(0.0, beside - gpu)
                spent["gpu"] += gpu
                if width > 1:
                    drafted_tokens += committed
                    drafted_requests += self.batch
                plain_seconds += self.gpu.seconds(self.batch, 1, context) * committed / self.batch
                tokens += committed
                widths.append(width)
                matched += sum(1 for m in self.spec.last.match_lengths if m > 0)
            for i, s in enumerate(slots):
                if len(s.output) >= s.truth.shape[0]:
                    finished += step >= warmup
                    done[s.rid] = (len(s.output), s.steps)
                    self.drafter.forget([s.rid])
                    self.relay.forget(s.rid)
                    slots[i] = self._admit()
        server_cpu, calls = (b - a for a, b in zip(load, self._load()))
        self.spec.close()
        self.client.close()
        c = self.spec.counts
        requests = self.steps * self.batch
        return {
            "mean_width": round(float(np.mean(widths)), 2), "tau": round(tokens / requests, 4),
            "requests_finished": finished, "done": done,
            "drafted_steps": round(float(np.mean(np.asarray(widths) > 1)), 3),
            "tau_drafted_steps": round(drafted_tokens / drafted_requests, 4) if drafted_requests else None,
            "time_share": {k: round(v / seconds, 4) for k, v in spent.items()},
            "critical_path_us": percentiles(critical, "us", 1),
            "critical_path_cpu_us": percentiles(critical_cpu, "us", 1),
            "prefetch_hit_rate": round(c["arrived"] / max(c["asked"], 1), 4) if self.mode != "pld" else None,
            "remote_match_rate": round(matched / requests, 4) if self.mode != "pld" else None,
            "lookup_contexts_per_request_step": round(c["contexts"] / requests, 3),
            "lookup_calls_per_step": round(calls / self.steps, 3),
            "server_cpu_us_per_request_step": round(server_cpu / requests * 1e6, 2) if self.server_pid else None,
            "lookups": None if self.remote is None else {**dataclasses.asdict(self.remote.stats),
                                                         "misaligned_answers": c["misaligned"]},
            "projected_speedup": round(plain_seconds / seconds, 4),
        }


def tau_over(done: dict, rids) -> float | None:
    """Tokens over steps of the finished requests ``rids`` (done[r]: (tokens, steps)); None: no steps."""
    steps = sum(done[r][1] for r in rids)
    return round(sum(done[r][0] for r in rids) / steps, 4) if steps else None


def same_requests_tau(zero_wait: dict, blocking: dict) -> dict:
    """tau of each datastore mode over the requests that both finished (the modes replay the same
    cases in the same order, under the same ids): their tokens over the steps they took, so the
    two modes' tau compare on exactly the same tokens."""
    common = zero_wait.keys() & blocking.keys()
    return {"same_requests": len(common),
            "tau_same_requests": {"zero-wait": tau_over(zero_wait, common), "blocking": tau_over(blocking, common)}}


def steps_for(batch: int, steps: int, min_request_steps: int) -> int:
    """The decode steps a batch size runs per mode: at least ``steps``, and enough for
    ``min_request_steps`` request-steps (a small batch otherwise measures tau on a handful of
    requests: 300 steps at batch 1 finish about 7 of the replayed responses)."""
    return max(steps, -(-min_request_steps // batch))


def run(batches: list[int], steps: int, conversations: int, progress: bool = True, gpu=None,
        draft_threads: int = 1, min_request_steps: int | None = None, gpu_wait: str = "sleep") -> dict:
    """gpu: the simulated GPU (default: the H100 roofline; sim_gpu.MeasuredGPU: a measured table);
    draft_threads: the cores each step's drafts are built on (DraftConfig.draft_threads);
    gpu_wait: how each step waits out its simulated verify (sim_gpu.WAITS);
    each batch size runs ``steps_for(batch, steps, min_request_steps)`` steps per mode (None:
    MIN_REQUEST_STEPS)."""
    min_request_steps = MIN_REQUEST_STEPS if min_request_steps is None else min_request_steps
    from sssd.bench import datasets, llama3
    from sssd.serve_process import start_server

    gpu = RooflineGPU() if gpu is None else gpu
    for b in batches:
        gpu.check(b)  # a measured table covers its batches only
    wait(1e-6, gpu_wait)  # a bad name fails here; a spin compiles now, not in a measured step

    cases = datasets.mtbench_cases() + datasets.humaneval_cases()
    docs = datasets.sharegpt_datastore(2000, 2000 + conversations)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(str(Path(tmp) / "sim.db"), "--synchronous", "NORMAL")
        try:
            fill_service(address, docs, llama3.VOCAB_SIZE, progress)
            for b in batches:
                n = steps_for(b, steps, min_request_steps)
                runs = {m: Simulation(cases, address, b, m, n, gpu, draft_threads, gpu_wait, proc.pid).run() for m in MODES}
                zw, bl, pld = runs["zero-wait"], runs["blocking"], runs["pld"]
                same = same_requests_tau(zw.pop("done"), bl.pop("done"))
                pld.pop("done")
                rows.append({
                    "batch": b, "steps": n, "requests_finished": {m: runs[m]["requests_finished"] for m in MODES},
                    "mean_width": zw["mean_width"], "drafted_steps": zw["drafted_steps"],
                    "critical_path_us": zw["critical_path_us"], "critical_path_cpu_us": zw["critical_path_cpu_us"],
                    "prefetch_hit_rate": zw["prefetch_hit_rate"],
                    "tau_zero_wait": zw["tau"], "tau_blocking": bl["tau"], **same,
                    "tau_drafted_steps": {m: runs[m]["tau_drafted_steps"] for m in MODES},
                    "drafted_steps_by_mode": {m: runs[m]["drafted_steps"] for m in MODES},
                    "mean_width_by_mode": {m: runs[m]["mean_width"] for m in MODES},
                    "time_share": {m: runs[m]["time_share"] for m in MODES},
                    "projected_speedup": zw["projected_speedup"], "projected_speedup_blocking": bl["projected_speedup"],
                    "critical_path_us_blocking": bl["critical_path_us"],
                    "remote_match_rate": zw["remote_match_rate"], "remote_match_rate_blocking": bl["remote_match_rate"],
                    "lookup_contexts_per_request_step": zw["lookup_contexts_per_request_step"],
                    # the lookups' load on the service: calls per decode step, its CPU per request-step
                    "lookup_calls_per_step": {m: runs[m]["lookup_calls_per_step"] for m in MODES[:2]},
                    "server_cpu_us_per_request_step": {m: runs[m]["server_cpu_us_per_request_step"] for m in MODES[:2]},
                    "lookups": {m: runs[m]["lookups"] for m in MODES[:2]},
                    "pld": {k: pld[k] for k in ("tau", "critical_path_us", "projected_speedup", "mean_width")},
                })
                if progress:
                    print(f"batch {b}: {rows[-1]}", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {**gpu.describe(), "min_steps": steps, "min_request_steps": min_request_steps,
            "draft_threads": draft_threads, "gpu_wait": gpu_wait,
            "datastore": f"ShareGPT conversations 2000-{2000 + conversations} ({sum(d.shape[0] for d in docs)} tokens)",
            "cases": "MT-Bench (30) + HumanEval (164), cycled", "rows": rows}
