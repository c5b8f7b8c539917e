"""The wire contract: the ground floor that the datastore service and the client SDK share.

- ``sssd_wire.v1``: modules generated from ``proto/`` (``python -m sssd.codegen``);
- ``sssd_wire.codec``: the one codec for packed tokens, ragged batches and tries;
- ``sssd_wire.types``: the boundary types both sides use (LookupParams, ContinuationTree, TrieBatch);
- ``sssd_wire.errors``: the error kinds, mapped to gRPC status codes by the service.

It imports numpy and protobuf only: never the service, the SDK or the CLI.
"""
