"""SGLang plugin: ``python -m sglang.launch_server --speculative-algorithm sssd``.

Found through the ``sglang.srt.plugins`` entry point (``sglang_integration.plugin:register``);
configured by SSSD_* environment variables (see sglang_integration.config).
"""
