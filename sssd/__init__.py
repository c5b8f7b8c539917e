"""sssd: Simply-Scalable Speculative Decoding.

This package is the composition root: the ``sssd`` command line and the benchmarks; nothing
imports it. The wire contract (generated from ``proto/``) is the ground-floor package
``sssd_wire``.
"""

__version__ = "0.1.0"
