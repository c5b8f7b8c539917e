"""Run by tests/test_sdk_remote.py in a fresh process: after the kernels' warm-up, drafting with
datastore answers that went through the wire codec compiles nothing more. Prints the kernels
that compiled a new variant (nothing when all is well)."""

import numpy as np

from client_sdk.drafting import cache_kernels, kernels, merge_kernels, resolve_kernels, step_kernels
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.runtime import build_speculator, lookup_options
from datastore_service.core import Document, NamespaceIndex, NamespaceSpec, build_segment, kernels as index_kernels
from datastore_service.core.index import warm_up as warm_up_index
from sssd_wire import codec

TEXT = [5, 6, 7, 8, 9, 5, 6, 7, 10, 11] * 20


class WireSource:
    """The datastore behind the wire codec, without gRPC: requests encoded, decoded as the
    servicer decodes them, looked up, the answer encoded and decoded as the SDK decodes it."""

    def __init__(self, options) -> None:
        self.ns = NamespaceIndex(NamespaceSpec("w", 16))
        self.ns.add([Document.of("d", TEXT)])
        self.ns.install(build_segment(1, 16, self.ns.freeze()))
        self.options, self.pending = options, {}

    def request(self, key, contexts, samples=None) -> None:
        options = self.options.sampling(samples)
        req = codec.lookup_request("w", contexts, options)
        ctx, off = codec.contexts_from_proto(req)
        self.pending[key] = codec.tries_from_proto(codec.tries_to_proto(self.ns.lookup_packed(ctx, off, options)))

    def collect(self, key, contexts, deadline_s):
        return self.pending.pop(key, None)


def dispatchers():
    mods = (kernels, merge_kernels, step_kernels, resolve_kernels, cache_kernels, index_kernels, codec)
    return {f"{m.__name__}.{n}": f for m in mods for n, f in vars(m).items() if hasattr(f, "signatures")}


def steps(prefetch: bool, batch: int, cache: int) -> None:
    config = SpeculatorConfig(prefetch_outcomes=prefetch, lookup_deadline_s=0.0 if prefetch else 1.0, trie_cache=cache)
    source = WireSource(lookup_options(config.draft, config.draft.max_depth, prefetch))
    spec = build_speculator(fixed_budget=8, remote=source, config=config)
    ids = [f"r{i}" for i in range(batch)]
    for rid in ids:
        spec.start(rid, TEXT[:40])
    for _ in range(4):
        trees = spec.draft(ids)
        spec.prefetch(ids)
        spec.commit_many(ids, [[5, 6, 7] for _ in ids], trees, [t.longest_match([5, 6]) for t in trees])
    spec.close()


warm_up_index()
build_speculator(fixed_budget=8)  # the SDK's warm-up
before = {name: len(f.signatures) for name, f in dispatchers().items()}
for prefetch in (True, False):
    for batch in (1, 16):
        for cache in (0, 1000):  # without and with the trie cache
            steps(prefetch, batch, cache)
after = {name: len(f.signatures) for name, f in dispatchers().items()}
print(" ".join(sorted(name for name in after if after[name] > before.get(name, 0))))  # (.get: one made at first use)
