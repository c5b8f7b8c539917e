"""The SSSD algorithm as SGLang sees it: a CustomSpecAlgo that behaves like NGRAM.

SSSD reuses NGRAM's verification, KV handling and CUDA graphs (its tree lives only in the
verify mask, there is no draft model and no draft KV); only draft production differs.
"""

from __future__ import annotations

import logging

from sglang.srt.speculative.spec_registry import CustomSpecAlgo

from sglang_integration.config import PluginConfig

log = logging.getLogger("sssd.sglang")
NAME = "SSSD"


class SSSDSpecAlgo(CustomSpecAlgo):
    def is_ngram(self) -> bool:
        return True

    def has_draft_kv(self) -> bool:
        return False

    def need_topk(self) -> bool:
        return False

    def carries_draft_hidden_states(self) -> bool:
        return False

    def get_platform_worker_cls(self):
        return None  # out-of-tree hardware platforms replace builtin workers, not plugin ones

    def create_future_map(self, device, req_to_token_pool, needs_cpu_seq_lens: bool = True,
                          needs_confidence_relay: bool = False):
        from sglang.srt.managers.overlap_utils import FutureMap

        return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens, needs_confidence_relay)

    def handle_server_args(self, server_args) -> None:
        """NGRAM's defaults and checks, then SSSD's draft width (env or roofline planner)."""
        from sglang.srt.arg_groups.overrides import declare_resolution, resolving_view
        from sglang.srt.arg_groups.speculative_hook import _handle_ngram

        config = PluginConfig.from_env()
        cfg = resolving_view(server_args)
        if config.draft_tokens and cfg.speculative_num_draft_tokens is None:
            declare_resolution(server_args, "sssd", speculative_num_draft_tokens=config.draft_tokens)
        elif cfg.speculative_num_draft_tokens is None:
            declare_resolution(server_args, "sssd", speculative_num_draft_tokens=default_width(config, cfg))
        _handle_ngram(server_args)
        log.info("SSSD speculative decoding: %s, draft width %s", config.describe(),
                 resolving_view(server_args).speculative_num_draft_tokens)


def default_width(config: PluginConfig, cfg) -> int:
    """Draft width (root included) the roofline planner picks for the expected batch size."""
    from client_sdk.drafting.budget import PRESETS, BudgetPlanner

    shape = _model_shape(cfg)
    if shape is None:
        return 12
    batch = cfg.max_running_requests or 48
    planner = BudgetPlanner(PRESETS[config.hardware], shape, max_budget=31)
    return 1 + max(1, planner.choose(max(1, batch // 4), 2048))  # a quarter full: the typical load


def _model_shape(cfg):
    import json
    from pathlib import Path

    from client_sdk.drafting.budget import Model

    path = Path(str(getattr(cfg, "model_path", "") or "")) / "config.json"
    try:
        return Model.from_config(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
