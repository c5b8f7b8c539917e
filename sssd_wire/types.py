"""Boundary types that both sides of the wire use: what a lookup asks for and what it returns.

A lookup answers a batch of contexts with one counted continuation trie per context; the
batch travels flat (one buffer per field plus node offsets), as on the wire, and the core's
kernel and the SDK's drafting kernel read it without copies.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from array import array
from collections.abc import Sequence

import numpy as np

from sssd_wire.errors import InvalidArgument


MAX_TOKEN_ID = 2**31 - 1  # the largest id that int32 carries
NOT_CONTEXTS = "contexts must be a sequence of contexts, each a sequence of token ids (one context: [ids])"
MAX_VOCAB = 1 << 24  # 16.7M ids: far above any real tokenizer, keeps a datastore's packed keys sane
NAMESPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # what a service takes as a namespace's name
DOCUMENT_ID = "a string of 1..256 printable characters"  # what a service takes as a document's id


def good_document_id(doc_id) -> bool:
    """Whether a service takes ``doc_id`` as a document's id (DOCUMENT_ID)."""
    return isinstance(doc_id, str) and 0 < len(doc_id) <= 256 and doc_id.isprintable()


def namespace_checked(namespace, what: str = "namespace") -> str:
    """``namespace`` when a service takes it as a namespace's name (NAMESPACE_NAME); else a one-line
    ValueError naming ``what`` (a bad one showed only as each call refused, or each lookup)."""
    if not isinstance(namespace, str) or not NAMESPACE_NAME.match(namespace):
        raise ValueError(f"{what} {namespace!r} is no namespace name: it must match {NAMESPACE_NAME.pattern}")
    return namespace


def worker_name(worker_id) -> str:
    """``worker_id`` when it can begin each document id a decode worker feeds back (1..96 printable
    characters, so that the ids fit DOCUMENT_ID); else a one-line ValueError."""
    if not (isinstance(worker_id, str) and 0 < len(worker_id) <= 96 and worker_id.isprintable()):
        raise ValueError(f"worker_id {worker_id!r} must be 1..96 printable characters")
    return worker_id


def token_array(tokens, what: str = "tokens") -> np.ndarray:
    """``tokens`` as an int32 array (an int32 array as it is; others through the buffer protocol
    where they have one: numpy, array("q")); a one-line ValueError naming ``what`` when they are
    not token ids: floats, nested lists, or integers outside [0, 2**31). (A float was truncated
    and stored, an int64 past int32 wrapped around, a Python int past it raised OverflowError.)"""
    if isinstance(tokens, np.ndarray) and tokens.dtype == np.int32 and tokens.ndim == 1:
        return tokens  # the SDK's own contexts: no pass over them
    if isinstance(tokens, (list, tuple)):  # Python ints to int64 in C: array("q") refuses floats and nesting
        try:  # (a third faster than numpy's discovery of a list's type: 430 against 600 µs for 32K tokens)
            tokens = array("q", tokens)
        except (TypeError, OverflowError) as exc:
            raise ValueError(f"{what}: want a flat sequence of integer token ids ({exc})") from None
    a = np.asarray(tokens)
    if a.size == 0:
        return np.empty(0, dtype=np.int32)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{what}: want a flat sequence of integer token ids, not {a.dtype} of shape {a.shape}")
    unsigned = a.view(f"u{a.itemsize}") if a.dtype.kind == "i" else a  # one pass: a negative id is huge unsigned
    if unsigned.max() > MAX_TOKEN_ID:
        low = a.min()
        raise ValueError(f"{what} holds {low if low < 0 else a.max()}, not a token id")
    return a.astype(np.int32)


def listed(values, what: str, kind: str = "ids", error: type[Exception] = ValueError) -> None:
    """``error`` when ``values``, due to be a list of ids, is one string: it was read as one id per
    character (deleting "ab" deleted the documents "a" and "b")."""
    if isinstance(values, (str, bytes)):
        raise error(f"{what} {values!r} must be a list of {kind}, not one string (give [{values!r}])")


def whole_numbers(obj, names=None, error: type[Exception] = InvalidArgument) -> None:
    """``error`` for the first field of the frozen dataclass ``obj`` in ``names`` (None: each field
    whose default is an int) that is not an integer (a float, a string, a bool: a float depth
    reached the compiled kernels, a string vocabulary size was stored); numpy's integers become
    Python ints (what SQLite stores and the kernels were compiled for)."""
    if names is None:
        names = [f.name for f in dataclasses.fields(obj) if type(f.default) is int]
    for name in names:
        value = getattr(obj, name)
        if type(value) is not int:
            object.__setattr__(obj, name, integer(value, name, error))


def integer(value, name: str, error: type[Exception] = ValueError) -> int:
    """``value`` as a Python int (numpy's integers too); ``error`` naming ``name`` for a float, a
    string or a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{name} {value!r} must be an integer, not {type(value).__name__}")
    return int(value)


def vocabulary(value, name: str = "vocab_size") -> int | None:
    """A model's vocabulary size as an int in [2, MAX_VOCAB] (None: not known); a one-line ValueError
    otherwise (0 turned the single-token table off without a word, -5 failed in its words, 10**12 sized
    the single-token table's chunk list in gigabytes: no datastore namespace holds more than MAX_VOCAB)."""
    if value is None:
        return None
    if integer(value, name) < 2:
        raise ValueError(f"{name} {value} must be at least 2 (the model's embedding rows), or None")
    if value > MAX_VOCAB:
        raise ValueError(f"{name} {value} must be at most {MAX_VOCAB} (what a datastore namespace takes), or None")
    return int(value)


@dataclasses.dataclass(frozen=True)
class LookupParams:
    """How one context tail is matched and how big its continuation tree may grow.

    max_match: longest context suffix tried (tokens).
    min_match: shortest suffix tried before giving up.
    min_occurrences: a suffix length is used only if it occurs at least this often;
        otherwise the next shorter one is tried ("shorter while matches are scarce").
    sample_budget: at most this many occurrences are read to build the tree; when there are
        more, an evenly spaced sample over the suffix-array range is taken.
    depth: maximum depth of the continuation tree (tokens after the match).
    max_nodes: maximum nodes in the tree; the most frequent prefixes are kept.
    """

    max_match: int = 4
    min_match: int = 1
    min_occurrences: int = 1
    sample_budget: int = 64
    depth: int = 8
    max_nodes: int = 64

    def __post_init__(self) -> None:
        whole_numbers(self, ("max_match", "min_match", "min_occurrences", "sample_budget", "depth", "max_nodes"))
        checks = [
            (1 <= self.max_match <= 16, f"max_match {self.max_match} not in [1, 16]"),
            (1 <= self.min_match <= self.max_match, f"min_match {self.min_match} not in [1, max_match]"),
            (1 <= self.min_occurrences <= 1 << 20, f"min_occurrences {self.min_occurrences} out of range"),
            (1 <= self.sample_budget <= 4096, f"sample_budget {self.sample_budget} not in [1, 4096]"),
            (1 <= self.depth <= 64, f"depth {self.depth} not in [1, 64]"),
            (1 <= self.max_nodes <= 4096, f"max_nodes {self.max_nodes} not in [1, 4096]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidArgument(message)

    def sampling(self, samples: int | None) -> "LookupParams":
        """These parameters with ``samples`` occurrences read per context (None: as they are)."""
        return self if samples is None or samples == self.sample_budget else dataclasses.replace(
            self, sample_budget=samples)


class ContinuationTree:
    """What followed a context tail in the datastore, as a counted trie.

    tokens/parents/counts are parallel arrays in topological order (parents before
    children); ``parents[i] == -1`` means a child of the (implicit) root, which is the last
    context token. ``counts[i]`` is how many sampled occurrences pass through node i.
    match_length: the suffix length that matched (0 = nothing found).
    occurrences: how many live occurrences of that suffix exist (exact when they fit the
        sample budget; estimated from the sample otherwise).
    sampled: how many occurrences were read to build the tree.

    A plain slotted class rather than a dataclass: one is built per context per decode step.
    """

    __slots__ = ("tokens", "parents", "counts", "match_length", "occurrences", "sampled")

    def __init__(self, tokens, parents, counts, match_length=0, occurrences=0, sampled=0) -> None:
        self.tokens = tokens  # [N] int32
        self.parents = parents  # [N] int32, -1 = root
        self.counts = counts  # [N] int32
        self.match_length = match_length
        self.occurrences = occurrences
        self.sampled = sampled

    @staticmethod
    def empty() -> "ContinuationTree":
        z = np.zeros(0, dtype=np.int32)
        return ContinuationTree(z, z, z, 0, 0, 0)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return f"ContinuationTree(nodes={len(self)}, match_length={self.match_length}, occurrences={self.occurrences})"

    def paths(self) -> dict[tuple[int, ...], int]:
        """Every root-to-node path with its count (for tests and debugging)."""
        out: dict[tuple[int, ...], int] = {}
        prefix: list[tuple[int, ...]] = []
        for tok, par, cnt in zip(self.tokens.tolist(), self.parents.tolist(), self.counts.tolist()):
            path = (prefix[par] if par >= 0 else ()) + (tok,)
            prefix.append(path)
            out[path] = cnt
        return out


class TrieBatch:
    """ContinuationTree trees of a batch of contexts, ragged and flat (what the kernel returns).

    Tree b is nodes [node_offsets[b], node_offsets[b + 1]) of tokens/parents/counts; its
    parents index within the tree. meta[b] = (match_length, occurrences, sampled).
    (A slotted class: one is built per lookup call.)
    """

    __slots__ = ("tokens", "parents", "counts", "node_offsets", "meta", "match_lengths")

    def __init__(self, tokens, parents, counts, node_offsets, meta) -> None:
        self.tokens = tokens  # [N] int32
        self.parents = parents  # [N] int32
        self.counts = counts  # [N] int32
        self.node_offsets = node_offsets  # [B + 1] int64
        self.meta = meta  # [B, 3] int64
        self.match_lengths = np.ascontiguousarray(meta[:, 0])  # [B] int64, once: the drafting kernel reads it per request

    @staticmethod
    def empty(batch: int = 0) -> "TrieBatch":
        z = np.zeros(0, dtype=np.int32)
        return TrieBatch(z, z, z, np.zeros(batch + 1, dtype=np.int64), np.zeros((batch, 3), dtype=np.int64))

    @staticmethod
    def joined(parts: Sequence[TrieBatch]) -> TrieBatch:
        """One batch of the tries of ``parts``, in order (the answers of a lookup sent in parts)."""
        if len(parts) == 1:
            return parts[0]
        sizes = [int(p.node_offsets[-1]) for p in parts]
        starts = np.cumsum([0] + sizes[:-1])
        offsets = [parts[0].node_offsets[:1]] + [p.node_offsets[1:] + s for p, s in zip(parts, starts)]
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return TrieBatch(cat("tokens"), cat("parents"), cat("counts"), np.concatenate(offsets), cat("meta"))

    def __len__(self) -> int:
        return int(self.node_offsets.shape[0] - 1)

    def rows_from(self, first: int) -> "TrieBatch":
        """Tries ``first`` .. the last as a batch of their own (views of these arrays)."""
        a = int(self.node_offsets[first])
        return TrieBatch(self.tokens[a:], self.parents[a:], self.counts[a:], self.node_offsets[first:] - a,
                         self.meta[first:])

    def trie(self, i: int) -> ContinuationTree:
        a, b = int(self.node_offsets[i]), int(self.node_offsets[i + 1])
        m = self.meta[i]
        return ContinuationTree(self.tokens[a:b], self.parents[a:b], self.counts[a:b], int(m[0]), int(m[1]), int(m[2]))

    def trees(self) -> list[ContinuationTree]:
        bounds = self.node_offsets.tolist()
        return [
            ContinuationTree(self.tokens[a:b], self.parents[a:b], self.counts[a:b], m[0], m[1], m[2])
            for a, b, m in zip(bounds[:-1], bounds[1:], self.meta.tolist())
        ]
