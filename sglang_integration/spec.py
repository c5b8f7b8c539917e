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
        check_ngram_settings(resolving_view(server_args))
        log.info("SSSD speculative decoding: %s, draft width %s", config.describe(),
                 resolving_view(server_args).speculative_num_draft_tokens)


def check_ngram_settings(cfg) -> None:
    """Refuse inherited NGRAM settings that would make SSSD's verification wrong or silently
    unused (ValueError, naming the flag)."""
    if (cfg.speculative_eagle_topk or 0) == 1 or cfg.speculative_ngram_max_bfs_breadth == 1:
        raise ValueError("--speculative-ngram-max-bfs-breadth 1: SSSD drafts branching trees, and with a top-k "
                         "of 1 the attention backend verifies a tree as one chain; leave it at its default (10)")
    if getattr(cfg, "speculative_ngram_external_corpus_path", None):
        raise ValueError("--speculative-ngram-external-corpus-path: SSSD drafts from its shared datastore "
                         "(SSSD_DATASTORE); ingest the corpus there with `sssd ingest` instead")


def default_width(config: PluginConfig, cfg) -> int:
    """The launch draft width (root included). Per-batch widths: the planner's widest (each step
    then verifies at the width its drafts need). Fixed width: what the roofline planner picks
    for a full batch, since a too-wide verify costs most when the batch is full."""
    from client_sdk.drafting.budget import PRESETS, BudgetPlanner

    if config.per_batch_widths:
        return config.speculator.planner.widths[-1]

    shape = model_shape(str(getattr(cfg, "model_path", "") or ""))
    if shape is None:
        return 12
    batch = cfg.max_running_requests or 48
    planner = BudgetPlanner(PRESETS[config.hardware], shape, max_budget=31)
    return 1 + max(1, planner.choose(batch, 2048))


def model_shape(model_path: str):
    """The model's shape from its config.json (a directory) or, for a Hugging Face id, from
    transformers (its local cache; nothing is downloaded here). None, with one warning, when
    neither works."""
    import json
    from pathlib import Path

    from client_sdk.drafting.budget import Model

    try:
        path = Path(model_path) / "config.json"
        if path.exists():
            return Model.from_config(json.loads(path.read_text()))
        from transformers import AutoConfig

        return Model.from_config(AutoConfig.from_pretrained(model_path, local_files_only=True).to_dict())
    except (OSError, ValueError) as exc:
        log.warning("SSSD: cannot read the model config of %r (%s); draft width 12 (set SSSD_DRAFT_TOKENS)",
                    model_path, exc)
        return None
