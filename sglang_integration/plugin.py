"""Entry point of group ``sglang.srt.plugins``: SGLang runs ``register()`` in every process.

Registration is idempotent. A failure is printed to stderr and logged before it propagates:
SGLang only logs plugin exceptions, and later reports a bare "Unknown speculative algorithm".
"""

from __future__ import annotations

import logging
import sys
import traceback

log = logging.getLogger("sssd.sglang")


def register() -> None:
    try:
        _register()
    except Exception:
        message = "sssd: failed to register the SSSD speculative algorithm with SGLang:\n" + traceback.format_exc()
        print(message, file=sys.stderr, flush=True)
        log.error(message)
        raise


def _register() -> None:
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from sglang.srt.speculative.spec_registry import get_spec

    from sglang_integration.config import PluginConfig
    from sglang_integration.spec import NAME, SSSDSpecAlgo

    PluginConfig.from_env()  # a bad SSSD_* variable fails here, loudly, not in a subprocess later
    if get_spec(NAME) is not None:
        return  # already registered in this process

    @SpeculativeAlgorithm.register(NAME, supports_overlap=True, spec_class=SSSDSpecAlgo)
    def _factory(server_args):
        from sglang_integration.worker import worker_class

        return worker_class()
