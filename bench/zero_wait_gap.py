"""Where zero-wait drafting's τ falls short of a blocking lookup's: replay variants (a diagnostic).

The replay (``sssd bench replay``'s Replayer, the real Speculator, the in-process ShareGPT
datastore) in the product's zero-wait mode, with one thing changed per variant:

- ``zero-wait``: as shipped; ``blocking``: each step waits for its committed context's lookup;
- ``outcomes=N``: N likeliest ends prefetched per request instead of 4;
- ``oracle=S``: after the step's own tries are made, the suffix slots S (0: the 4-token suffix,
  1: the 2-token one, 2: the 1-token one) are replaced by what a blocking lookup of the
  committed context returns: how much of the gap each slot carries (not a product mode);
- ``per-child``: a slot whose descended trie exists is replaced by a fresh lookup of exactly the
  prefetched context + the bonus token (no backoff): what a prefetch answer that kept its own
  sample per first-level child would give (not built);
- ``oracle-picked=S``: ``oracle=S`` for the requests whose outcome was prefetched only (the
  ceiling of anything that improves the prefetched answers, with the outcomes asked unchanged);
- ``covered``: a slot left empty although its request's end was prefetched becomes a fresh
  lookup of exactly the prefetched context + the bonus token, where that occurs: what a prefetch
  answer whose first level held every token that follows the context would give (not built);
- ``backoff=C``: a slot of k tokens becomes a fresh lookup of the committed context's k-token
  suffix, backed off to m + 1 tokens, m the longest length below k whose C likeliest children
  (by a 256-occurrence sample) hold the bonus token: what a prefetch answer that kept, at each
  shorter suffix of the prefetched context, its own trie per likely child would give (not built);
- ``bigrams=N``: a 2-token slot left empty by the step's own sources becomes a fresh lookup of
  exactly the committed context's last 2 tokens when that bigram is among the N likeliest the
  single-token table shows (N = 0: any bigram): the ceiling of a prefilled bigram table (not built);
- ``prefetch=S:N``: the prefetch lookups sample S occurrences into tries of N nodes (128:64
  shipped since ac84217; 64:64 before);
- ``samples=S``: ``DraftConfig.remote_samples`` = S (64 shipped): what blocking lookups sample,
  and what zero-wait lookups sampled before ``prefetch_samples`` (ac84217)
  (``blocking-samples=S``: the same with a blocking lookup);
- ``shorter``: each suffix asked one token shorter (the 1-token one not at all), so that the
  descent by the bonus token gives the blocking lookup's lengths (4, 2; 1 from the table);
- ``suffixes=A+B``: the extra datastore suffix lengths (2+1 shipped), in both modes
  (``blocking-suffixes=A+B``: the same with a blocking lookup).

τ is deterministic (no timing enters it): one run is the figure.

    .venv/bin/python bench/zero_wait_gap.py [--datasets mtbench,math] [--budgets 4,16]
        [--variants zero-wait,blocking,outcomes=16,oracle=0,oracle=1,per-child,prefetch=256:256,shorter,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json

import numpy as np

from client_sdk.drafting import speculator
from client_sdk.drafting.cache import entries
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.types import DraftConfig
from sssd.bench import datasets, llama3, replay
from sssd.bench.provenance import stamped
from sssd_wire.types import TrieBatch

PREFETCHED = speculator.Speculator._prefetched_tries
ASK, OPTIONS = speculator.ask_for_ends, replay.lookup_options


def rebuilt(rows: list[tuple]) -> TrieBatch:
    """A TrieBatch of per-slot entries (``cache.entries``' tuples)."""
    offs = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r[0]) for r in rows], out=offs[1:])
    cat = lambda i: np.concatenate([r[i] for r in rows]).astype(np.int32)  # noqa: E731
    return TrieBatch(cat(0), cat(1), cat(2), offs, np.asarray([r[3] for r in rows], dtype=np.int64).reshape(-1, 3))


def oracle(slots: set[int], picked_only: bool = False):
    """The slots' tries replaced by fresh lookups of the committed contexts (``picked_only``: for
    the requests whose outcome was prefetched only)."""
    def tries(self, reqs, indexes, limit=0):  # whole tries: the variants add nodes after
        batch, indexes = PREFETCHED(self, reqs, indexes)
        per = len(self._lengths)
        fresh = entries(self.remote.fetch([r.tail(k) for r in reqs for k in self._lengths]))
        rows = [fresh[j] if j % per in slots and (not picked_only or reqs[j // per].pick is not None) else e
                for j, e in enumerate(entries(batch))]
        return rebuilt(rows), indexes
    return tries


def per_child(self, reqs, indexes, limit=0, empty: bool = False):
    batch, indexes = PREFETCHED(self, reqs, indexes)
    per, rows = len(self._lengths), entries(batch)
    for i, r in enumerate(reqs):
        for j, k in enumerate(self._lengths):
            e = rows[i * per + j]
            if r.pick is None or k == 1 or (len(e[0]) > 0) == empty or (not empty and e[3][0] != k + 1):
                continue  # per-child: a trie descended from the prefetched context; covered: an empty one
            options = dataclasses.replace(self.remote.options, max_match=k + 1)
            got = entries(self.remote.lookup([r.tail(k + 1)], options))[0]
            if got[3][0] == k + 1:
                rows[i * per + j] = got
    return rebuilt(rows), indexes


def backoff(children: int):
    def tries(self, reqs, indexes, limit=0):  # whole tries: the variants add nodes after
        batch, indexes = PREFETCHED(self, reqs, indexes)
        per, rows = len(self._lengths), entries(batch)
        for i, r in enumerate(reqs):
            tail = r.tail(16)
            for j, k in enumerate(self._lengths):
                if r.pick is None or k == 1:
                    continue
                for m in range(k - 1, 0, -1):  # the longest shorter suffix whose likely children hold the bonus
                    first = dataclasses.replace(self.remote.options, max_match=m, min_match=m, depth=1,
                                                max_nodes=children, sample_budget=256)
                    e = entries(self.remote.lookup([tail[-m - 1 : -1]], first))[0]
                    if e[3][0] == m and int(tail[-1]) in e[0].tolist():
                        exact = dataclasses.replace(self.remote.options, max_match=m + 1, min_match=m + 1)
                        got = entries(self.remote.lookup([tail[-m - 1 :]], exact))[0]
                        rows[i * per + j] = got if got[3][0] == m + 1 else rows[i * per + j]
                        break
        return rebuilt(rows), indexes
    return tries


def exact_tails(self, reqs, indexes, limit=0):
    """Each slot of a request whose end was prefetched (k tokens, k > 1) becomes a fresh lookup of
    exactly the committed context's last k tokens, where they occur."""
    batch, indexes = PREFETCHED(self, reqs, indexes)
    per, rows = len(self._lengths), entries(batch)
    for i, r in enumerate(reqs):
        for j, k in enumerate(self._lengths):
            if r.pick is None or k == 1:
                continue
            exact = dataclasses.replace(self.remote.options, max_match=k, min_match=k)
            got = entries(self.remote.lookup([r.tail(k)], exact))[0]
            if got[3][0] == k:
                rows[i * per + j] = got
    return rebuilt(rows), indexes


def bigram_ranks(table) -> dict[tuple[int, int], int]:
    """(a, b) -> rank of its estimated datastore count: the single-token table's trie of a, its
    root-level child b, occurrences of a times b's share of the sampled continuations."""
    whole, est = table.whole, []
    for a in range(len(whole)):
        lo, hi = int(whole.node_offsets[a]), int(whole.node_offsets[a + 1])
        root = np.flatnonzero(whole.parents[lo:hi] < 0) + lo
        if root.size:
            share = whole.counts[root] / whole.counts[root].sum()
            est += [(-float(whole.meta[a][1]) * s, a, int(whole.tokens[r])) for r, s in zip(root, share)]
    est.sort()
    return {(a, b): i for i, (_, a, b) in enumerate(est)}


def bigrams(top: int):
    ranks: dict = {}

    def tries(self, reqs, indexes, limit=0):  # whole tries: the variants add nodes after
        batch, indexes = PREFETCHED(self, reqs, indexes)
        if not ranks and self.unigrams is not None and self.unigrams.published:
            ranks.update(bigram_ranks(self.unigrams))
        per, rows, j2 = len(self._lengths), entries(batch), self._lengths.index(2)
        exact = dataclasses.replace(self.remote.options, max_match=2, min_match=2)
        for i, r in enumerate(reqs):
            key = tuple(int(t) for t in r.tail(2))
            if len(key) < 2 or len(rows[i * per + j2][0]) or (top and ranks.get(key, top) >= top):
                continue
            got = entries(self.remote.lookup([np.asarray(key, dtype=np.int32)], exact))[0]
            if got[3][0] == 2:
                rows[i * per + j2] = got
        return rebuilt(rows), indexes
    return tries


def shorter(batch, rows, history, per_request, lengths):
    """ask_for_ends with every length above 1 asked one token shorter, the 1-token one not asked."""
    asked = [i for i, k in enumerate(lengths) if k > 1]
    contexts, ends = ASK(batch, rows, history, per_request, tuple(lengths[i] - 1 for i in asked))
    out = np.full((ends.shape[0], len(lengths)), -1, dtype=np.int64)
    out[:, asked] = ends
    return contexts, out


def prefetch_options(samples: int, nodes: int):
    def options(c, depth, outcomes=False):
        p = OPTIONS(c, depth, outcomes)
        return dataclasses.replace(p, sample_budget=samples, max_nodes=nodes) if outcomes else p
    return options


def run_variant(variant: str, cases, budgets, lookup) -> list[float]:
    name, _, arg = variant.partition("=")
    tries, config, draft = PREFETCHED, SpeculatorConfig, DraftConfig()
    if name in ("suffixes", "blocking-suffixes"):
        draft = DraftConfig(remote_suffixes=tuple(int(k) for k in arg.split("+")))
    elif name in ("samples", "blocking-samples"):
        draft = DraftConfig(remote_samples=int(arg))
    elif name == "prefetch":
        replay.lookup_options = prefetch_options(*(int(x) for x in arg.split(":")))
    elif name == "shorter":
        speculator.ask_for_ends = shorter
    elif name == "outcomes":
        config = functools.partial(SpeculatorConfig, outcomes=int(arg))
    elif name == "oracle":
        tries = oracle({int(c) for c in arg.split("+")})
    elif name == "oracle-picked":
        tries = oracle({int(c) for c in arg.split("+")}, picked_only=True)
    elif name == "backoff":
        tries = backoff(int(arg))
    elif name == "bigrams":
        tries = bigrams(int(arg))
    elif name == "per-child":
        tries = per_child
    elif name == "exact-tails":
        tries = exact_tails
    elif name == "covered":
        tries = functools.partialmethod(per_child, empty=True)
    elif name not in ("zero-wait", "blocking"):
        raise ValueError(f"unknown variant {variant!r}")
    speculator.Speculator._prefetched_tries, replay.SpeculatorConfig = tries, config
    try:
        out = replay.replay(cases, replay.drafter_named("sssd", draft), budgets, lookup, progress=False, config=draft,
                            vocab_size=llama3.VOCAB_SIZE, prefetch_outcomes=not name.startswith("blocking"))
    finally:
        speculator.Speculator._prefetched_tries, replay.SpeculatorConfig = PREFETCHED, SpeculatorConfig
        replay.lookup_options, speculator.ask_for_ends = OPTIONS, ASK
    return [r["tau"] for r in out["results"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="mtbench,math")
    parser.add_argument("--budgets", default="4,16")
    parser.add_argument("--variants", default="zero-wait,blocking,outcomes=16,oracle=0,oracle=1,oracle=0+1+2,per-child")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    lookup = replay.InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE).lookup
    rows = []
    for name in args.datasets.split(","):
        cases = datasets.LOADERS[name]()
        for variant in args.variants.split(","):
            rows.append({"dataset": name, "variant": variant, "budgets": budgets,
                         "tau": run_variant(variant, cases, budgets, lookup)})
    print(json.dumps(stamped({"rows": rows}), indent=1))


if __name__ == "__main__":
    main()
