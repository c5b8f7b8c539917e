"""sssd datastore: a persistent, continuously updated suffix-array datastore of token sequences.

Layers, inner to outer: ``core`` (pure index, numpy + pydivsufsort, no I/O), ``store``
(SQLite durability), ``datastore`` (the two composed: durable ingest, restart, compaction),
and the gRPC service on top.
"""
