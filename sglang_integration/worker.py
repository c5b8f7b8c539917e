"""The SGLang worker: NGRAM's worker with SSSD draft production.

Built lazily (``worker_class()``): importing NGRAMWorker pulls SGLang's GPU kernels, which
only the scheduler process on a GPU machine has. Everything the worker does that is not
plumbing lives in sglang_integration.drafts, tested on CPU.
"""

from __future__ import annotations

import atexit
import functools
import logging

import numpy as np

from sglang_integration.config import PluginConfig
from sglang_integration.drafts import BatchDrafter, RequestView, splice_overlap
from sglang_integration.metrics import WorkerMetrics

log = logging.getLogger("sssd.sglang")


def build_drafter(config: PluginConfig, width: int, vocab_size: int, model_config: dict | None) -> BatchDrafter:
    """The worker's drafter, assembled by the SDK's one builder. SGLang verifies a fixed width
    per launch (chosen by the roofline in spec.py), so no per-step planner runs here yet;
    model_config is kept for it."""
    from client_sdk.runtime import build_speculator

    spec = build_speculator(address=config.datastore or None, namespace=config.namespace, token=config.token or None,
                            fixed_budget=width - 1, feedback=config.feedback, config=config.speculator,
                            vocab_size=vocab_size, feedback_address=config.feedback_address or None)
    return BatchDrafter(spec, width, vocab_size)


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


@functools.cache
def worker_class():
    import sglang.srt.speculative.ngram_worker as ngram_worker

    class SSSDWorker(ngram_worker.NGRAMWorker):
        """NGRAMWorker whose drafts come from SSSD (local n-grams + shared datastore).

        Hooks used (sglang 0.5.23): ``_prepare_draft_tokens`` (the drafts, on the critical path),
        ``_update_ngram_corpus`` (right after the verify launch: the datastore prefetch) and
        ``note_request_finished`` (result processing: the generation goes back, once)."""

        def __init__(self, server_args, gpu_id, nccl_port, target_worker):
            real = ngram_worker.NgramCorpus
            ngram_worker.NgramCorpus = NoCorpus  # NGRAM's constructor would build its trie
            try:
                super().__init__(server_args, gpu_id, nccl_port, target_worker)
            finally:
                ngram_worker.NgramCorpus = real
            self.sssd_config = PluginConfig.from_env()
            self.tp_rank, self.tp_group = parallel_rank_and_group()
            hf = target_worker.model_runner.model_config.hf_config
            self.drafter = None
            self._reqs: dict = {}  # rid -> the scheduler's Req, for its output at finish
            if self.tp_rank == 0:  # rank 0 alone drafts and talks to the datastore
                self.drafter = build_drafter(self.sssd_config, self.draft_token_num, hf.vocab_size,
                                             hf.to_dict() if hasattr(hf, "to_dict") else None)
                atexit.register(self.drafter.spec.close)  # queued feedback is flushed at shutdown
                self.metrics = WorkerMetrics()
            log.info("SSSD worker on TP rank %d: %s", self.tp_rank, self.sssd_config.describe())

        def _prepare_draft_tokens(self, batch):
            use_prev = self.enable_overlap and not batch.grammar_needs_sync()
            stride = self.draft_token_num
            bs = len(batch.reqs)
            self.prev_token_ids, self.prev_accept_lens = [], [0] * bs  # NGRAM's staging, read after verify
            if use_prev:
                self.prev_token_ids = batch.spec_info.accept_tokens.cpu().tolist()
                self.prev_accept_lens = batch.spec_info.accept_lens.cpu().tolist()
            drafts, mask = None, None
            if self.tp_rank == 0:
                views = [RequestView(req.rid, req.origin_input_ids_unpadded, req.output_ids) for req in batch.reqs]
                if use_prev:
                    views = self._with_relayed(batch, views, stride)
                self._reqs.update((req.rid, req) for req in batch.reqs)
                drafts, mask = self.drafter.drafts(views)
                self.metrics.observe_step(bs, self.drafter.last_width, self.drafter.spec.remote)
            return share_from_rank0(drafts, mask, bs, stride, self.tp_group)

        def _with_relayed(self, batch, views, stride):
            """The views' outputs with the tokens relayed from the last step that result
            processing has not added yet (aligned by the committed length that the batch's
            sequence lengths give: the KV holds all committed tokens but the root)."""
            seq_lens = batch.seq_lens_cpu.tolist() if getattr(batch, "seq_lens_cpu", None) is not None else None
            if seq_lens is None:
                self.metrics.relays_unaligned()
            out = []
            for i, (view, req) in enumerate(zip(views, batch.reqs)):
                committed = seq_lens[i] + 1 - len(req.origin_input_ids) if seq_lens is not None else None
                output, aligned = splice_overlap(view.output, self.prev_token_ids, self.prev_accept_lens, i, stride, committed)
                if not aligned:
                    self.metrics.misaligned_relay(req.rid, len(view.output), self.prev_accept_lens[i], committed)
                out.append(view._replace(output=output))
            return out

        def _update_ngram_corpus(self, batch):
            # Runs right after the verify launch, while the GPU is busy: SSSD's outcome prefetch
            # for the next step goes here (the local index itself is fed at the next draft).
            if self.tp_rank == 0:
                self.drafter.drop(self._prev_decode_rids - {req.rid for req in batch.reqs})
                self.drafter.prefetch([req.rid for req in batch.reqs])

        def note_request_finished(self, *, rid: str, natural_stop: bool) -> None:
            super().note_request_finished(rid=rid, natural_stop=natural_stop)
            if self.tp_rank == 0:
                req = self._reqs.pop(rid, None)
                if req is not None:
                    self.drafter.finished(rid, req.output_ids_through_stop)

    return SSSDWorker


def share_from_rank0(drafts, mask, bs: int, width: int, group):
    """Identical drafts on every tensor-parallel rank: rank 0's arrays, broadcast on the CPU group.

    group: SGLang's GroupCoordinator (world_size, ranks, cpu_group) or a torch ProcessGroup.
    """
    import torch
    import torch.distributed as dist

    if group is None:
        return drafts, mask
    cpu_group = getattr(group, "cpu_group", group)
    world = group.world_size if hasattr(group, "world_size") else dist.get_world_size(cpu_group)
    if world == 1:
        return drafts, mask
    src = group.ranks[0] if hasattr(group, "ranks") else dist.get_global_rank(cpu_group, 0)
    t_drafts = torch.from_numpy(drafts) if drafts is not None else torch.empty(bs * width, dtype=torch.int64)
    t_mask = torch.from_numpy(mask.astype(np.uint8)) if mask is not None else torch.empty(bs * width * width, dtype=torch.uint8)
    dist.broadcast(t_drafts, src=src, group=cpu_group)
    dist.broadcast(t_mask, src=src, group=cpu_group)
    return t_drafts.numpy(), t_mask.numpy().astype(bool)
