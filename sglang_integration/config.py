"""Plugin settings from environment variables (inherited by every SGLang subprocess)."""

from __future__ import annotations

import dataclasses
import os

from client_sdk.drafting.budget import PRESETS

ENV = {
    "datastore": "SSSD_DATASTORE",  # host:port of the datastore; empty = local drafting only
    "namespace": "SSSD_NAMESPACE",  # datastore namespace of this model's tokenizer
    "token": "SSSD_TOKEN",  # bearer token (lookup + ingest scopes for feedback)
    "hardware": "SSSD_HARDWARE",  # roofline preset: h100-sxm, h200, a100-80gb, l40s, rtx-4090
    "draft_tokens": "SSSD_DRAFT_TOKENS",  # fixed draft width incl. root; unset = roofline choice
    "lookup_deadline_ms": "SSSD_LOOKUP_DEADLINE_MS",  # longest a step waits for the datastore
    "feedback": "SSSD_FEEDBACK",  # 1 = send finished generations back to the datastore
}


@dataclasses.dataclass(frozen=True)
class PluginConfig:
    datastore: str = ""
    namespace: str = "default"
    token: str = ""
    hardware: str = "h100-sxm"
    draft_tokens: int = 0  # 0 = chosen by the roofline planner at start-up
    lookup_deadline_ms: float = 2.0
    feedback: bool = True

    @staticmethod
    def from_env(env=os.environ) -> "PluginConfig":
        """Raises ValueError naming the variable with a bad value."""
        d = PluginConfig()
        try:
            cfg = PluginConfig(
                datastore=env.get(ENV["datastore"], d.datastore),
                namespace=env.get(ENV["namespace"], d.namespace),
                token=env.get(ENV["token"], d.token),
                hardware=env.get(ENV["hardware"], d.hardware).lower(),
                draft_tokens=int(env.get(ENV["draft_tokens"], d.draft_tokens)),
                lookup_deadline_ms=float(env.get(ENV["lookup_deadline_ms"], d.lookup_deadline_ms)),
                feedback=env.get(ENV["feedback"], "1") not in ("0", "false", "no"),
            )
        except ValueError as exc:
            raise ValueError(f"bad SSSD_* environment value: {exc}") from exc
        if cfg.hardware not in PRESETS:
            raise ValueError(f"{ENV['hardware']}={cfg.hardware!r} is not one of {sorted(PRESETS)}")
        if cfg.draft_tokens < 0 or cfg.draft_tokens == 1 or cfg.draft_tokens > 64:
            raise ValueError(f"{ENV['draft_tokens']}={cfg.draft_tokens} must be 0 (auto) or 2..64")
        if cfg.lookup_deadline_ms < 0:
            raise ValueError(f"{ENV['lookup_deadline_ms']}={cfg.lookup_deadline_ms} must be >= 0")
        return cfg

    def describe(self) -> str:
        return (f"datastore={self.datastore or '(none: local drafting only)'} namespace={self.namespace} "
                f"auth={'on' if self.token else 'off'} hardware={self.hardware} "
                f"draft_tokens={self.draft_tokens or 'auto'} lookup_deadline_ms={self.lookup_deadline_ms} "
                f"feedback={'on' if self.feedback else 'off'}")
