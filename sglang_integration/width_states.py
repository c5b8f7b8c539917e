"""Per-batch verify widths in the SGLang worker: SGLang's adaptive runtime states (an attention
backend and CUDA graphs per width, as its EAGLE v2 worker builds them) over the menu of
sglang_integration.widths, switched to the width each step's drafts need.

``PerBatchWidths`` is a mixin of the worker class (sglang_integration.worker), placed before
NGRAMWorker. Nothing here imports SGLang at module import: its GPU kernels load only in the
scheduler process.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from sglang_integration.config import PluginConfig
from sglang_integration.drafts import RequestView
from sglang_integration.masks import full_tree_mask
from sglang_integration.widths import MenuPolicy, StepClock, widen, width_menu

log = logging.getLogger("sssd.sglang")


class PerBatchWidths:
    """The width half of SSSDWorker. The launch width (``--speculative-num-draft-tokens``) is the
    widest: SGLang sizes KV reservation, the relay buffer and its startup graphs by it, and
    result processing reads every step's outputs at its stride. Each decode step drafts first,
    then activates the menu width its drafts need (the same on every rank: rank 0's width is
    broadcast with the drafts), then NGRAM's own preparation and verify run at that width."""

    def _set_up_widths(self, config: PluginConfig) -> None:
        """The launch width is the widest (KV reservation, relay stride, startup graphs);
        with per-batch widths every menu width gets its own graphs at init_cuda_graphs."""
        import sglang.srt.speculative.ngram_worker as ngram
        from sglang.srt.speculative.adaptive_runtime_state import AdaptiveController

        self._ngram = ngram  # NGRAM's module: its full-mask flag, read and set every decode step
        self.w_max = self.draft_token_num
        self.menu = width_menu(self.w_max, config.speculator.planner.widths) if config.per_batch_widths \
            else (self.w_max,)
        self.clock = StepClock()
        self._staged = None  # this step's (drafts, mask), drafted before its width was activated
        self.adaptive_controller = None
        if len(self.menu) > 1:
            self.speculative_num_steps = self.w_max - 1  # the controller's name for the launch state
            self.adaptive_controller = AdaptiveController(self, MenuPolicy(self.menu))

    def _init_preallocated_tensors(self):
        super()._init_preallocated_tensors()  # at the launch width: the storage every width views
        self._views = {w: width_views(self, w) for w in getattr(self, "menu", (self.draft_token_num,))}

    def init_cuda_graphs(self):
        super().init_cuda_graphs()  # the launch width's graphs are SGLang's (captured before this)
        if self.adaptive_controller is None:
            return
        from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, check_cuda_graph_backend
        from sglang.srt.runtime_context import get_exec

        graphs_off = check_cuda_graph_backend(Phase.DECODE, Backend.DISABLED)
        self._register_widths(None if graphs_off else get_exec().graph.cuda_graph_bs_decode)

    def _register_widths(self, cuda_graph_bs) -> None:
        """The launch width's state (SGLang's startup backend and graphs), then one state per
        other menu width (``build_adaptive_runtime_state``); the launch width is active."""
        from sglang.srt.speculative.adaptive_runtime_state import SpecRuntimeState

        runner = self.model_runner
        self.adaptive_controller.register(SpecRuntimeState(
            self.w_max - 1, self.w_max, None, None, runner.attn_backend, runner.decode_cuda_graph_runner, None, None))
        self.adaptive_controller.init_states(cuda_graph_bs=cuda_graph_bs)

    def build_adaptive_runtime_state(self, speculative_num_steps, speculative_num_draft_tokens, cuda_graph_bs=None):
        """A target attention backend and verify graphs at this width (no draft model)."""
        return build_verify_state(self, speculative_num_steps, speculative_num_draft_tokens, cuda_graph_bs)

    def apply_runtime_state(self, state) -> None:
        """Verify at this state's width. speculative_num_draft_tokens stays the launch width:
        it is the output stride that result processing and the relay buffer were built with."""
        w = state.speculative_num_draft_tokens
        self.speculative_num_steps, self.draft_token_num = state.speculative_num_steps, w
        (self.draft_tokens_batch, self.tree_mask_batch, self.positions_batch, self.retrieve_indexes_batch,
         self.retrieve_next_token_batch, self.retrieve_next_sibling_batch) = self._views[w]
        self.model_runner.attn_backend = state.target_attn_backend
        self.model_runner.decode_cuda_graph_runner = state.target_graph_runner

    def _prepare_for_speculative_decoding(self, batch):
        ngram = self._ngram
        decode = batch.forward_mode.is_decode()
        if decode:  # draft first: the drafts decide the step's width
            drafts, mask, width = self._draft_step(batch)
            if self.adaptive_controller is not None:
                self.adaptive_controller.params.next_steps = width - 1
                self.adaptive_controller.activate_step_by_batch(len(batch.reqs))
            self._staged = (drafts, mask)
        # on a GPU NGRAM builds the attention's full mask request by request (ngram_worker.py
        # 326-332, 355-370: 7 tensor operations per request); it is built below in 19 for the batch
        flag = ngram.USE_FULL_MASK
        full = decode and flag and not ngram._is_cpu
        ngram.USE_FULL_MASK = flag and not full
        try:
            super()._prepare_for_speculative_decoding(batch)
        finally:
            ngram.USE_FULL_MASK = flag
            self._staged = None  # taken by _prepare_draft_tokens; never left for another step
        if full:  # NGRAM left the n x n masks it copied to the device as the custom mask
            info = batch.spec_info
            info.custom_mask = full_tree_mask(info.custom_mask, batch.seq_lens_cpu, self.draft_token_num)

    def forward_batch_generation(self, batch, on_publish=None, pp_proxy_tensors=None):
        verify = batch.forward_mode.is_decode()
        if not verify:
            self.clock.other_batch()
        result = super().forward_batch_generation(batch, on_publish=on_publish, pp_proxy_tensors=pp_proxy_tensors)
        return widen_result(result, len(batch.reqs), self.draft_token_num, self.w_max, verify)

    def _prepare_draft_tokens(self, batch):
        staged, self._staged = self._staged, None
        return staged if staged is not None else self._draft_step(batch)[:2]

    def _draft_step(self, batch):
        """(drafts, mask, width) of this decode step, rank 0's on every rank."""
        use_prev = self.enable_overlap and not batch.grammar_needs_sync()
        stride = self.w_max  # the relay buffer's row width, whatever width the last step had
        bs = len(batch.reqs)
        self.prev_token_ids, self.prev_accept_lens = [], [0] * bs  # NGRAM's staging, read after verify
        if use_prev:
            self.prev_token_ids = batch.spec_info.accept_tokens.cpu().tolist()
            self.prev_accept_lens = batch.spec_info.accept_lens.cpu().tolist()
        drafts = mask = width = None
        if self.tp_rank == 0:
            start = time.perf_counter()
            last_step = self.clock.decode_started(start)
            views = [RequestView(req.rid, req.origin_input_ids_unpadded, req.output_ids) for req in batch.reqs]
            if use_prev:
                views = self._with_relayed(batch, views, stride)
            self._reqs.update(batch.reqs)
            drafts, mask = self.drafter.drafts(views, last_step_s=last_step)
            width = self.drafter.last_width
            self.clock.drafting_took(time.perf_counter() - start)
            self.metrics.drafted(bs, width)  # (counted beside the GPU, in _update_ngram_corpus)
        return share_from_rank0(drafts, mask, bs, width, self.tp_group, self.w_max)


def width_views(worker, w: int) -> tuple[list, ...]:
    """NGRAM's per-batch-size views of its preallocated verify buffers, at width w: the first
    bs * w (and bs * w * w) elements of the launch width's storage, contiguous like its own."""
    def rows(t, bs):
        return t.view(-1)[: bs * w].view(bs, w)

    sizes = range(worker.max_batch_size + 1)
    return ([worker.draft_tokens[: bs * w] for bs in sizes], [worker.tree_mask[: bs * w * w] for bs in sizes],
            [worker.positions[: bs * w] for bs in sizes], [rows(worker.retrieve_indexes, bs) for bs in sizes],
            [rows(worker.retrieve_next_token, bs) for bs in sizes],
            [rows(worker.retrieve_next_sibling, bs) for bs in sizes])


def build_verify_state(worker, steps: int, width: int, cuda_graph_bs):
    """SGLang's SpecRuntimeState for verifying at ``width``: a new target attention backend and,
    unless CUDA graphs are off, a DecodeCudaGraphRunner captured at that width (for
    ``cuda_graph_bs``), built with SGLang's resolved config temporarily at that width, as its
    EAGLE worker builds its adaptive states. Logs the time and GPU memory each width took."""
    from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, check_cuda_graph_backend
    from sglang.srt.model_executor.runner import DecodeCudaGraphRunner
    from sglang.srt.runtime_context import get_context, get_exec, get_spec
    from sglang.srt.speculative.adaptive_runtime_state import SpecRuntimeState

    runner, started = worker.model_runner, time.perf_counter()
    graph = get_exec().graph
    saved = dict(speculative_num_steps=get_spec().speculative_num_steps,
                 speculative_num_draft_tokens=get_spec().speculative_num_draft_tokens,
                 cuda_graph_bs_decode=graph.cuda_graph_bs_decode, disable_cuda_graph=graph.disable_cuda_graph)
    at_width = dict(speculative_num_steps=steps, speculative_num_draft_tokens=width)
    if cuda_graph_bs is not None:
        at_width["cuda_graph_bs_decode"] = cuda_graph_bs
        if not cuda_graph_bs:  # a width no batch size uses: no graphs
            at_width["disable_cuda_graph"] = True
    free_before = _free_gpu_bytes()
    get_context().override("sssd.width_capture", **at_width)
    try:
        workspace = runner.init_new_workspace
        try:
            backend = runner._get_attention_backend(init_new_workspace=True)
        finally:
            runner.init_new_workspace = workspace
        graphs = None
        if not check_cuda_graph_backend(Phase.DECODE, Backend.DISABLED):
            graphs = DecodeCudaGraphRunner(runner, attn_backend=backend, speculative_num_steps=steps,
                                           speculative_num_draft_tokens=width)
    finally:
        get_context().override("sssd.width_capture_restore", **saved)
    used = None if free_before is None else (free_before - (_free_gpu_bytes() or free_before)) / 2**30
    log.info("SSSD: verify width %d ready in %.1f s (attention backend%s), %s GPU memory", width,
             time.perf_counter() - started, " + CUDA graphs" if graphs is not None else "",
             "unknown" if used is None else f"{used:.2f} GiB")
    return SpecRuntimeState(steps, width, None, None, backend, graphs, None, None)


def _free_gpu_bytes() -> int | None:
    import torch

    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None


def widen_result(result, bs: int, width: int, w_max: int, verify: bool):
    """A step's result at the launch width's stride: a narrower verify's accepted tokens padded
    to w_max per request (the relay buffer's row width and result processing's stride)."""
    result.speculative_output_stride = w_max
    relay = result.next_draft_input
    if width < w_max and relay is not None and relay.accept_tokens is not None:
        relay.accept_tokens = widen(relay.accept_tokens, bs, width, w_max)
        relay.draft_token_num = relay.num_tokens_per_req = relay.num_tokens_for_logprob_per_req = w_max
        if verify:  # a verify's next_token_ids are its accepted tokens (a prefill's: one per request)
            result.next_token_ids = relay.accept_tokens
    return result


def share_from_rank0(drafts, mask, bs: int, width: int | None, group, max_width: int):
    """Identical drafts on every tensor-parallel rank: rank 0's (drafts, mask, width), the other
    ranks passing None for all three, in one broadcast on the CPU group (on the critical path:
    three broadcasts, the width first, kept a receiving rank 753 / 730 µs against 282 / 282 for
    one at batch 16, worst / median of 3 runs of bench/tp_broadcast.py on the 2-core Intel Xeon VM;
    BENCHMARKS.md, "Rank 0's drafts to the other ranks in one broadcast").

    The message is [width: int64][drafts: int32, bs * max_width][mask: bits, bs * max_width^2],
    sized by the launch width ``max_width`` (no step is wider), which every rank knows before it
    knows the step's width. group: SGLang's GroupCoordinator (world_size, ranks, cpu_group) or a
    torch ProcessGroup.
    """
    import torch
    import torch.distributed as dist

    if group is None:
        return drafts, mask, width
    cpu_group = getattr(group, "cpu_group", group)
    world = group.world_size if hasattr(group, "world_size") else dist.get_world_size(cpu_group)
    if world == 1:
        return drafts, mask, width
    src = group.ranks[0] if hasattr(group, "ranks") else dist.get_global_rank(cpu_group, 0)
    tokens_at = 8
    mask_at = tokens_at + 4 * bs * max_width
    buf = torch.zeros(mask_at + (bs * max_width * max_width + 7) // 8, dtype=torch.uint8)
    raw = buf.numpy()
    if drafts is not None:
        if width > max_width:
            raise ValueError(f"a step {width} wide is wider than the launch width {max_width}")
        raw[:tokens_at].view(np.int64)[0] = width
        raw[tokens_at : tokens_at + 4 * drafts.shape[0]].view(np.int32)[:] = drafts  # token ids fit int32
        bits = np.packbits(mask)
        raw[mask_at : mask_at + bits.shape[0]] = bits
    dist.broadcast(buf, src=src, group=cpu_group)
    if drafts is not None:
        return drafts, mask, width
    width = int(raw[:tokens_at].view(np.int64)[0])
    drafts = raw[tokens_at : tokens_at + 4 * bs * width].view(np.int32).astype(np.int64)
    mask = np.unpackbits(raw[mask_at:], count=bs * width * width).astype(bool)
    return drafts, mask, width
