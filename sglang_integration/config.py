"""Plugin settings from ``SSSD_*`` environment variables (inherited by every SGLang subprocess).

One variable per knob, derived from the tree below by sssd_wire.settings: ``SSSD_DATASTORE``,
``SSSD_NAMESPACE``, ``SSSD_TOKEN``, ``SSSD_HARDWARE``, ``SSSD_DRAFT_TOKENS``, ``SSSD_FEEDBACK``,
and every knob of the decode side (``SSSD_LOOKUP_DEADLINE_S``, ``SSSD_MAX_DEPTH``, ...).
"""

from __future__ import annotations

import dataclasses
import logging
import os

from client_sdk.drafting.budget import PRESETS
from client_sdk.drafting.config import SpeculatorConfig
from sssd_wire import settings
from sssd_wire.types import NAMESPACE_NAME

log = logging.getLogger("sssd.sglang")


@dataclasses.dataclass(frozen=True)
class PluginConfig:
    datastore: str = ""  # host:port of the datastore; empty = local drafting only
    namespace: str = "default"  # datastore namespace of this model's tokenizer
    token: str = dataclasses.field(default="", repr=False)  # bearer token (lookup + ingest scopes for feedback)
    tls_ca: str = ""  # PEM CA bundle of the datastore's certificate: connect over TLS; empty = plaintext
    hardware: str = "h100-sxm"  # roofline preset: h100-sxm, h200, a100-80gb, l40s, rtx-4090
    # the launch (widest) draft width incl. root; 0 = auto: the planner's widest with per-batch
    # widths, else the roofline's choice for a full batch
    draft_tokens: int = 0
    per_batch_widths: bool = True  # verify each step at the width its drafts need (a CUDA graph set per width)
    feedback: bool = True  # send finished generations back to the datastore
    # where feedback goes when SSSD_DATASTORE names read replicas (dns:///sssd-read:50051):
    # the writer's host:port; empty = SSSD_DATASTORE itself
    feedback_address: str = ""
    speculator: SpeculatorConfig = SpeculatorConfig()

    def __post_init__(self) -> None:
        if not NAMESPACE_NAME.match(self.namespace):  # (a name no service takes was one warning per worker)
            raise ValueError(f"SSSD_NAMESPACE={self.namespace!r} is no namespace name: it must match "
                             f"{NAMESPACE_NAME.pattern}")
        if self.hardware not in PRESETS:
            raise ValueError(f"SSSD_HARDWARE={self.hardware!r} is not one of {sorted(PRESETS)}")
        if self.draft_tokens < 0 or self.draft_tokens == 1 or self.draft_tokens > 64:
            raise ValueError(f"SSSD_DRAFT_TOKENS={self.draft_tokens} must be 0 (auto) or 2..64")
        settings.bearer_metadata(self.token, "SSSD_TOKEN")  # (a Secret's trailing newline: at launch, not per call)
        if self.tls_ca:
            settings.tls_ca_bytes(self.tls_ca, "SSSD_TLS_CA")
        for name, address in (("SSSD_DATASTORE", self.datastore), ("SSSD_FEEDBACK_ADDRESS", self.feedback_address)):
            if address:  # at launch, not at the first worker's channel (gRPC wrapped such a port)
                settings.check_address(address, name, tls=bool(self.tls_ca))

    @staticmethod
    def from_env(env=os.environ) -> "PluginConfig":
        """Raises ValueError naming the variable with a bad value; warns about unknown SSSD_* names."""
        unknown = settings.unknown_variables(PluginConfig, env)
        if unknown:
            meant = dict(settings.misspelled_variables(PluginConfig, env))
            log.warning("ignoring environment variables that name no SSSD plugin setting: %s", ", ".join(
                f"{k} (did you mean {meant[k]}?)" if k in meant else k for k in unknown))
        return settings.from_env(PluginConfig, {k: (v.lower() if k == "SSSD_HARDWARE" else v) for k, v in env.items()})

    def describe(self) -> str:
        return (f"datastore={self.datastore or '(none: local drafting only)'} namespace={self.namespace} "
                f"auth={'on' if self.token else 'off'} tls={'on' if self.tls_ca else 'off'} hardware={self.hardware} "
                f"draft_tokens={self.draft_tokens or 'auto'} "
                f"widths={'per batch' if self.per_batch_widths else 'fixed'} "
                f"lookup_deadline_ms={self.speculator.lookup_deadline_s * 1e3:g} "
                f"feedback={'off' if not self.feedback else 'on' if self.datastore else 'off (no datastore)'}")
