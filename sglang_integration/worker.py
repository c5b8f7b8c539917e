"""The SGLang worker: NGRAM's worker with SSSD draft production.

Built lazily (``worker_class()``): importing NGRAMWorker pulls SGLang's GPU kernels, which
only the scheduler process on a GPU machine has. Everything the worker does that is not
plumbing lives in sglang_integration.drafts, tested on CPU.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging

from sglang_integration.config import PluginConfig
from sglang_integration.drafts import BatchDrafter, relayed_views
from sglang_integration.live_requests import LiveRequests
from sglang_integration.metrics import WorkerMetrics
from sglang_integration.width_states import PerBatchWidths

log = logging.getLogger("sssd.sglang")


def build_drafter(config: PluginConfig, width: int, vocab_size: int, model_config: dict | None,
                  menu: tuple[int, ...] | None = None, max_batch: int = 48) -> BatchDrafter:
    """The worker's drafter, assembled by the SDK's one builder. menu: the verify widths with
    CUDA graphs (per-batch widths: the SDK's planner sizes every step, its start-up costs the
    roofline of ``config.hardware``); None: every step verifies ``width`` tokens."""
    from client_sdk.runtime import build_speculator

    common = dict(address=config.datastore or None, namespace=config.namespace, token=config.token or None,
                  tls_ca=config.tls_ca or None, feedback=config.feedback, vocab_size=vocab_size,
                  feedback_address=config.feedback_address or None)
    if menu is None:
        spec = build_speculator(fixed_budget=width - 1, config=config.speculator, **common)
        return BatchDrafter(spec, width, vocab_size)
    speculator = dataclasses.replace(config.speculator,
                                     planner=dataclasses.replace(config.speculator.planner, widths=menu))
    spec = build_speculator(costs=start_up_costs(config, model_config, menu, max_batch), config=speculator, **common)
    return BatchDrafter(spec, width, vocab_size, adaptive=True, menu=menu)


def start_up_costs(config: PluginConfig, model_config: dict | None, menu, max_batch: int, context: int = 2048):
    """The planner's first cost table: the roofline of the model on ``config.hardware`` at a few
    batch sizes; flat (every width a plain step's cost, learned from the first steps) with one
    warning when the model's shape cannot be read."""
    from client_sdk.drafting.budget import PRESETS, Model, forward_time
    from client_sdk.drafting.costs import StepCosts

    batches = sorted({1, 8, 32, max(1, max_batch)})
    try:
        shape = Model.from_config(model_config or {})
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("SSSD: no roofline for this model config (%s); the planner learns step costs from the "
                    "first steps instead", exc)
        return StepCosts({(b, n): 1e-3 * b for b in batches for n in menu})
    return StepCosts({(b, n): forward_time(PRESETS[config.hardware], shape, b, n, context)
                      for b in batches for n in menu})


def parallel_rank_and_group():
    """(tensor-parallel rank, group or None when tp_size is 1) from SGLang's parallel state.

    Raises RuntimeError when SGLang has not set them (drafting on a guessed rank would give
    ranks different drafts, a wrong output under greedy verification, then a hang)."""
    from sglang.srt.runtime_context import get_parallel

    p = get_parallel()
    try:
        rank, size = int(p.tp_rank), int(p.tp_size)
        group = p.tp_group if size > 1 else None
    except (RuntimeError, ValueError, AttributeError) as exc:
        raise RuntimeError(f"SSSD worker: no tensor-parallel rank in SGLang's parallel state ({exc})") from exc
    return rank, group


class NoCorpus:
    """What SSSD's worker keeps of NGRAM's trie: the calls NGRAM's own code still makes on it
    (the trie itself, ~1.75 GB of host memory per rank and a C++ build, is never created)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def erase_match_state(self, rids) -> None:
        pass

    def batch_put(self, batch_tokens) -> None:
        pass


def finish_held(drafter: BatchDrafter, metrics: WorkerMetrics, req) -> None:
    """A finished request's ``Req``, held until SGLang's finish notice: its generation goes back to
    the datastore through its stop token, unless SGLang aborted it (``FINISH_ABORT``: a cancel, a
    timeout or an error), which is kept from the shared datastore and counted. The notice's
    ``natural_stop`` cannot tell: it is False for an abort and a length cap alike."""
    from sglang.srt.managers.schedule_batch import FINISH_ABORT

    if isinstance(getattr(req, "finished_reason", None), FINISH_ABORT):
        drafter.drop([req.rid])
        metrics.aborted()
    else:
        drafter.finished(req.rid, req.output_ids_through_stop)


@functools.cache
def worker_class():
    import sglang.srt.speculative.ngram_worker as ngram_worker

    class SSSDWorker(PerBatchWidths, ngram_worker.NGRAMWorker):
        """NGRAMWorker whose drafts come from SSSD (local n-grams + shared datastore).

        Hooks used (sglang 0.5.23): ``_prepare_for_speculative_decoding`` (the drafts, on the
        critical path, then the step's width activated), ``_prepare_draft_tokens`` (hands them to
        NGRAM's preparation), ``_update_ngram_corpus`` (right after the verify launch: the
        datastore prefetch and the step's counters), ``note_request_finished`` (result processing:
        the generation back once, unless aborted), ``clear_cache_pool`` (every request dropped);
        for per-batch widths, ``init_cuda_graphs`` (a runtime state per menu width, after SGLang
        captured the launch width's), the ``AdaptiveSpecWorker`` protocol
        (``build_adaptive_runtime_state``, ``apply_runtime_state``), ``_init_preallocated_tensors``
        (buffer views per width) and ``forward_batch_generation`` (outputs padded to the launch
        width's stride)."""

        def __init__(self, server_args, gpu_id, nccl_port, target_worker):
            real = ngram_worker.NgramCorpus
            ngram_worker.NgramCorpus = NoCorpus  # NGRAM's constructor would build its trie
            try:
                super().__init__(server_args, gpu_id, nccl_port, target_worker)
            finally:
                ngram_worker.NgramCorpus = real
            self.sssd_config = PluginConfig.from_env()
            self.tp_rank, self.tp_group = parallel_rank_and_group()
            self._set_up_widths(self.sssd_config)
            hf = target_worker.model_runner.model_config.hf_config
            self.drafter = None
            self._reqs = LiveRequests()  # rid -> the scheduler's Req, for its output at finish
            if self.tp_rank == 0:  # rank 0 alone drafts and talks to the datastore
                self.drafter = build_drafter(self.sssd_config, self.w_max, hf.vocab_size,
                                             hf.to_dict() if hasattr(hf, "to_dict") else None,
                                             self.menu if len(self.menu) > 1 else None,
                                             getattr(self.model_runner, "max_running_requests", None) or 48)
                atexit.register(self.drafter.spec.close)  # queued feedback is flushed at shutdown
                self.metrics = WorkerMetrics()
            log.info("SSSD worker on TP rank %d: %s; verify widths %s", self.tp_rank, self.sssd_config.describe(),
                     self.menu)

        def _with_relayed(self, batch, views, stride):
            """The views with the tokens relayed from the last step that result processing has
            not added to their outputs yet (aligned by the committed length that the batch's
            sequence lengths give: the KV holds all committed tokens but the root)."""
            seq_lens = batch.seq_lens_cpu.tolist() if getattr(batch, "seq_lens_cpu", None) is not None else None
            committed = None
            if seq_lens is None:
                self.metrics.relays_unaligned()
            else:
                committed = [n + 1 - len(req.origin_input_ids) for n, req in zip(seq_lens, batch.reqs)]
            views, misaligned = relayed_views(views, self.prev_token_ids, self.prev_accept_lens, stride, committed)
            for i in misaligned:
                self.metrics.misaligned_relay(batch.reqs[i].rid, len(views[i].output), self.prev_accept_lens[i],
                                              committed[i])
            return views

        def _update_ngram_corpus(self, batch):
            # right after the verify launch, beside the GPU: the next step's outcome prefetch
            if self.tp_rank == 0:
                current = {req.rid for req in batch.reqs}
                left = self._prev_decode_rids - current
                self.drafter.drop(left)
                self.drafter.prefetch([req.rid for req in batch.reqs])
                self._reqs.departed(current, left)
                self.metrics.observe_upkeep(self._reqs.forgotten, self.drafter.spec.feedback, self.drafter.spec.remote)

        def clear_cache_pool(self):
            # only while nothing decodes (/flush_cache, weight updates); NGRAM forgets its rids: drop every request
            super().clear_cache_pool()
            if self.tp_rank == 0:
                self.drafter.clear()
                self._reqs.clear()
                self.metrics.observe_forgotten(self._reqs.forgotten)

        def note_request_finished(self, *, rid: str, natural_stop: bool) -> None:
            super().note_request_finished(rid=rid, natural_stop=natural_stop)
            if self.tp_rank == 0 and (req := self._reqs.pop(rid)) is not None:
                finish_held(self.drafter, self.metrics, req)

    return SSSDWorker
