"""Index core: pure data structures and algorithms. No gRPC, asyncio, SQLite or file I/O."""

from datastore_service.core.index import AddResult, IndexCounts, NamespaceIndex, check_segment, lookup_packed
from datastore_service.core.segment import Segment, build_segment, merge_segments, restore_segment
from datastore_service.core.types import ContinuationTree, Document, LookupParams, NamespaceSpec, TrieBatch

__all__ = [
    "AddResult",
    "ContinuationTree",
    "Document",
    "IndexCounts",
    "LookupParams",
    "NamespaceIndex",
    "NamespaceSpec",
    "Segment",
    "TrieBatch",
    "build_segment",
    "check_segment",
    "lookup_packed",
    "merge_segments",
    "restore_segment",
]
