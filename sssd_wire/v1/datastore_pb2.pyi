from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenDocument(_message.Message):
    __slots__ = ("id", "tokens")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tokens: bytes
    def __init__(self, id: _Optional[str] = ..., tokens: _Optional[bytes] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("namespace", "documents")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    documents: _containers.RepeatedCompositeFieldContainer[TokenDocument]
    def __init__(self, namespace: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[TokenDocument, _Mapping]]] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("added", "duplicates", "evicted", "duplicate_ids", "conflict_ids")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_IDS_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_IDS_FIELD_NUMBER: _ClassVar[int]
    added: int
    duplicates: int
    evicted: int
    duplicate_ids: _containers.RepeatedScalarFieldContainer[str]
    conflict_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, added: _Optional[int] = ..., duplicates: _Optional[int] = ..., evicted: _Optional[int] = ..., duplicate_ids: _Optional[_Iterable[str]] = ..., conflict_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class IngestSummary(_message.Message):
    __slots__ = ("requests", "added", "duplicates", "evicted", "tokens", "conflicts", "conflict_ids")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_IDS_FIELD_NUMBER: _ClassVar[int]
    requests: int
    added: int
    duplicates: int
    evicted: int
    tokens: int
    conflicts: int
    conflict_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, requests: _Optional[int] = ..., added: _Optional[int] = ..., duplicates: _Optional[int] = ..., evicted: _Optional[int] = ..., tokens: _Optional[int] = ..., conflicts: _Optional[int] = ..., conflict_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupParams(_message.Message):
    __slots__ = ("max_match", "min_match", "min_occurrences", "sample_budget", "depth", "max_nodes")
    MAX_MATCH_FIELD_NUMBER: _ClassVar[int]
    MIN_MATCH_FIELD_NUMBER: _ClassVar[int]
    MIN_OCCURRENCES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_BUDGET_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_NODES_FIELD_NUMBER: _ClassVar[int]
    max_match: int
    min_match: int
    min_occurrences: int
    sample_budget: int
    depth: int
    max_nodes: int
    def __init__(self, max_match: _Optional[int] = ..., min_match: _Optional[int] = ..., min_occurrences: _Optional[int] = ..., sample_budget: _Optional[int] = ..., depth: _Optional[int] = ..., max_nodes: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("namespace", "contexts", "context_lengths", "params", "request_id", "background")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    contexts: bytes
    context_lengths: _containers.RepeatedScalarFieldContainer[int]
    params: LookupParams
    request_id: int
    background: bool
    def __init__(self, namespace: _Optional[str] = ..., contexts: _Optional[bytes] = ..., context_lengths: _Optional[_Iterable[int]] = ..., params: _Optional[_Union[LookupParams, _Mapping]] = ..., request_id: _Optional[int] = ..., background: _Optional[bool] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("tokens", "parents", "counts", "node_offsets", "match_lengths", "occurrences", "sampled", "request_id")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    NODE_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MATCH_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    OCCURRENCES_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tokens: bytes
    parents: bytes
    counts: bytes
    node_offsets: bytes
    match_lengths: bytes
    occurrences: bytes
    sampled: bytes
    request_id: int
    def __init__(self, tokens: _Optional[bytes] = ..., parents: _Optional[bytes] = ..., counts: _Optional[bytes] = ..., node_offsets: _Optional[bytes] = ..., match_lengths: _Optional[bytes] = ..., occurrences: _Optional[bytes] = ..., sampled: _Optional[bytes] = ..., request_id: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class NamespaceStats(_message.Message):
    __slots__ = ("name", "vocab_size", "tokenizer_fingerprint", "max_tokens", "documents", "tokens", "segments", "pending_tokens", "resident_bytes", "lookup_rate", "ingest_rate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_RATE_FIELD_NUMBER: _ClassVar[int]
    INGEST_RATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    vocab_size: int
    tokenizer_fingerprint: str
    max_tokens: int
    documents: int
    tokens: int
    segments: int
    pending_tokens: int
    resident_bytes: int
    lookup_rate: float
    ingest_rate: float
    def __init__(self, name: _Optional[str] = ..., vocab_size: _Optional[int] = ..., tokenizer_fingerprint: _Optional[str] = ..., max_tokens: _Optional[int] = ..., documents: _Optional[int] = ..., tokens: _Optional[int] = ..., segments: _Optional[int] = ..., pending_tokens: _Optional[int] = ..., resident_bytes: _Optional[int] = ..., lookup_rate: _Optional[float] = ..., ingest_rate: _Optional[float] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("namespaces", "compactions", "uptime_s", "max_live_tokens")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    COMPACTIONS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    MAX_LIVE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceStats]
    compactions: int
    uptime_s: float
    max_live_tokens: int
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceStats, _Mapping]]] = ..., compactions: _Optional[int] = ..., uptime_s: _Optional[float] = ..., max_live_tokens: _Optional[int] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ("namespace", "full")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    full: bool
    def __init__(self, namespace: _Optional[str] = ..., full: _Optional[bool] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("segments_retired",)
    SEGMENTS_RETIRED_FIELD_NUMBER: _ClassVar[int]
    segments_retired: int
    def __init__(self, segments_retired: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("tokens_flushed",)
    TOKENS_FLUSHED_FIELD_NUMBER: _ClassVar[int]
    tokens_flushed: int
    def __init__(self, tokens_flushed: _Optional[int] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("namespace", "ids", "missing_ok")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_OK_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    missing_ok: bool
    def __init__(self, namespace: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., missing_ok: _Optional[bool] = ...) -> None: ...

class DeleteDocumentsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateNamespaceRequest(_message.Message):
    __slots__ = ("name", "vocab_size", "tokenizer_fingerprint", "max_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    vocab_size: int
    tokenizer_fingerprint: str
    max_tokens: int
    def __init__(self, name: _Optional[str] = ..., vocab_size: _Optional[int] = ..., tokenizer_fingerprint: _Optional[str] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class Namespace(_message.Message):
    __slots__ = ("name", "vocab_size", "tokenizer_fingerprint", "max_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    vocab_size: int
    tokenizer_fingerprint: str
    max_tokens: int
    def __init__(self, name: _Optional[str] = ..., vocab_size: _Optional[int] = ..., tokenizer_fingerprint: _Optional[str] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces", "max_lookup_contexts")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    MAX_LOOKUP_CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[Namespace]
    max_lookup_contexts: int
    def __init__(self, namespaces: _Optional[_Iterable[_Union[Namespace, _Mapping]]] = ..., max_lookup_contexts: _Optional[int] = ...) -> None: ...

class DropNamespaceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropNamespaceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FollowRequest(_message.Message):
    __slots__ = ("epoch", "after", "segment_dir")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_DIR_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    after: int
    segment_dir: str
    def __init__(self, epoch: _Optional[str] = ..., after: _Optional[int] = ..., segment_dir: _Optional[str] = ...) -> None: ...

class SealedSegment(_message.Message):
    __slots__ = ("namespace", "segment_id", "retired", "dead")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    segment_id: int
    retired: _containers.RepeatedScalarFieldContainer[int]
    dead: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, namespace: _Optional[str] = ..., segment_id: _Optional[int] = ..., retired: _Optional[_Iterable[int]] = ..., dead: _Optional[_Iterable[int]] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("created", "dropped", "added", "deleted", "sealed")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    created: Namespace
    dropped: str
    added: IngestRequest
    deleted: DeleteDocumentsRequest
    sealed: SealedSegment
    def __init__(self, created: _Optional[_Union[Namespace, _Mapping]] = ..., dropped: _Optional[str] = ..., added: _Optional[_Union[IngestRequest, _Mapping]] = ..., deleted: _Optional[_Union[DeleteDocumentsRequest, _Mapping]] = ..., sealed: _Optional[_Union[SealedSegment, _Mapping]] = ...) -> None: ...

class ChangeBatch(_message.Message):
    __slots__ = ("epoch", "position", "reset", "changes", "copying")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    COPYING_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    position: int
    reset: bool
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    copying: bool
    def __init__(self, epoch: _Optional[str] = ..., position: _Optional[int] = ..., reset: _Optional[bool] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., copying: _Optional[bool] = ...) -> None: ...
