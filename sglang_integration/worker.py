"""The SGLang worker: NGRAM's worker with SSSD draft production.

Built lazily (``worker_class()``): importing NGRAMWorker pulls SGLang's GPU kernels, which
only the scheduler process on a GPU machine has. Everything the worker does that is not
plumbing lives in sglang_integration.drafts, tested on CPU.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from sglang_integration.config import PluginConfig
from sglang_integration.drafts import BatchDrafter, RequestView, splice_overlap

log = logging.getLogger("sssd.sglang")


def build_drafter(config: PluginConfig, width: int, vocab_size: int, model_config: dict | None) -> BatchDrafter:
    """The worker's drafter, assembled by the SDK's one builder. SGLang verifies a fixed width
    per launch (chosen by the roofline in spec.py), so no per-step planner runs here yet;
    model_config is kept for it."""
    from client_sdk.runtime import build_speculator

    spec = build_speculator(address=config.datastore or None, namespace=config.namespace, token=config.token or None,
                            fixed_budget=width - 1, feedback=config.feedback, config=config.speculator)
    return BatchDrafter(spec, width, vocab_size)


@functools.cache
def worker_class():
    from sglang.srt.speculative.ngram_worker import NGRAMWorker

    class SSSDWorker(NGRAMWorker):
        """NGRAMWorker whose drafts come from SSSD (local n-grams + shared datastore)."""

        def __init__(self, server_args, gpu_id, nccl_port, target_worker):
            super().__init__(server_args, gpu_id, nccl_port, target_worker)
            self.sssd_config = PluginConfig.from_env()
            hf = target_worker.model_runner.model_config.hf_config
            self.tp_rank = getattr(target_worker, "tp_rank", 0)
            self.tp_group = getattr(target_worker.model_runner, "tp_group", None)
            self.drafter = None
            if self.tp_rank == 0:  # rank 0 alone drafts and talks to the datastore
                self.drafter = build_drafter(self.sssd_config, self.draft_token_num, hf.vocab_size,
                                             hf.to_dict() if hasattr(hf, "to_dict") else None)
            log.info("SSSD worker on TP rank %d: %s", self.tp_rank, self.sssd_config.describe())

        def _prepare_draft_tokens(self, batch):
            use_prev = self.enable_overlap and not batch.grammar_needs_sync()
            stride = self.draft_token_num
            if use_prev:
                prev_tokens = batch.spec_info.accept_tokens.cpu().tolist()
                prev_lens = batch.spec_info.accept_lens.cpu().tolist()
            views = [
                RequestView(req.rid, req.origin_input_ids_unpadded,
                            splice_overlap(req.output_ids, prev_tokens, prev_lens, i, stride) if use_prev
                            else req.output_ids)
                for i, req in enumerate(batch.reqs)
            ]
            drafts, mask = None, None
            if self.tp_rank == 0:
                drafts, mask = self.drafter.drafts(views)
            return share_from_rank0(drafts, mask, len(views), stride, self.tp_group)

        def _update_ngram_corpus(self, batch):
            # Runs right after the verify launch, while the GPU is busy: SSSD's outcome prefetch
            # for the next step goes here (the local index itself is fed at the next draft).
            current = {req.rid for req in batch.reqs}
            if self.tp_rank == 0:
                self.drafter.forget(self._prev_decode_rids - current)
                self.drafter.prefetch([req.rid for req in batch.reqs])

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
