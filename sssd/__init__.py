"""sssd: Simply-Scalable Speculative Decoding.

This package is the composition root: the ``sssd`` command line and the benchmarks. The
wire contract generated from ``proto/`` lives under ``sssd.datastore.v1``.
"""

__version__ = "0.1.0"
