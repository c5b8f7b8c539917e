"""``sssd bench replay``: offline replay of recorded (prompt, response) pairs.

Each response is taken as the target model's greedy output. At every step the drafter
proposes a tree of at most ``budget`` tokens; the longest root path that matches the
response is accepted, plus one bonus token (the target's own next token). tau = response
tokens / steps (1.0 = no speculation). draft_us times the drafter with the datastore's
answer already in hand (local match + scoring + merge + selection); the datastore lookup is
timed separately as lookup_us.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import numpy as np

from client_sdk.local import LocalIndex
from client_sdk.runtime import lookup_options
from client_sdk.tree import Calibration, DraftTree, draft_tree
from client_sdk.types import DraftConfig, LookupOptions, TrieBatch
from sssd.bench.stats import percentiles

DRAFTERS = ("sssd", "local", "datastore", "pld", "none")


class InProcessDatastore:
    """The datastore core in this process (``--datastore-docs``), as a lookup function."""

    def __init__(self, docs: Sequence[np.ndarray], vocab_size: int) -> None:
        from datastore_service.core import Document, NamespaceIndex, NamespaceSpec, build_segment

        self.ns = NamespaceIndex(NamespaceSpec("replay", vocab_size))
        self.ns.add([Document(f"d{i}", np.asarray(d, dtype=np.int32)) for i, d in enumerate(docs)])
        self.ns.install(build_segment(1, vocab_size, self.ns.freeze()))

    def lookup(self, contexts: Sequence[np.ndarray], options: LookupOptions) -> TrieBatch:
        from datastore_service.core import LookupParams
        from datastore_service.core.index import pack_tails

        params = LookupParams(**{f: getattr(options, f) for f in options.__dataclass_fields__})
        b = self.ns.lookup_packed(*pack_tails(contexts, params.max_match), params)
        return TrieBatch(b.tokens, b.parents, b.counts, b.node_offsets, b.meta[:, 0])


class RemoteDatastore:
    """A running service (``--address/--namespace``) as a lookup function."""

    def __init__(self, address: str, namespace: str, token: str | None = None) -> None:
        from client_sdk.remote import DatastoreClient

        self.client = DatastoreClient(address, token)
        self.namespace = namespace

    def lookup(self, contexts, options) -> TrieBatch:
        return self.client.lookup_batch(self.namespace, contexts, options)


def pld_tree(local: LocalIndex, budget: int) -> DraftTree:
    """Prompt lookup: the tokens after the latest earlier match of the last 3..1 tokens, linear."""
    c = local.continuation(depth=budget, max_occ=1, max_nodes=budget)
    n = len(c)
    return DraftTree(c.tokens, c.parents, np.ones(n), np.full((n, 1, 4), -1, np.int8))


NO_TRIES = TrieBatch.empty()


class Replayer:
    """Replays cases for one drafter at one budget; calibration is learned online."""

    def __init__(self, drafter: str, budget: int, lookup: Callable | None, config: DraftConfig = DraftConfig(),
                 prior: np.ndarray | None = None) -> None:
        if drafter not in DRAFTERS:
            raise ValueError(f"drafter {drafter!r} not in {DRAFTERS}")
        if drafter in ("sssd", "datastore") and lookup is None:
            raise ValueError(f"drafter {drafter!r} needs a datastore (--datastore-docs or --address)")
        self.drafter, self.budget, self.lookup = drafter, budget, lookup
        self.config = config
        self.depth = min(config.max_depth, budget) if budget else 0
        self.cal = Calibration(prior)
        self.options = lookup_options(config, self.depth)
        self.steps = 0
        self.tokens = 0
        self.accepted = np.zeros(self.depth + 2, dtype=np.int64)  # histogram of accepted length
        self.draft_s: list[float] = []
        self.lookup_s: list[float] = []

    def run_case(self, prompt: Sequence[int], response: Sequence[int]) -> None:
        local = LocalIndex(prompt, max_ngram=3 if self.drafter == "pld" else self.config.local_ngram)
        truth = np.asarray(response, dtype=np.int32)
        pos = 0
        while pos < truth.shape[0]:
            tree = self._draft(local)
            path = tree.longest_match(truth[pos : pos + self.depth])
            new = truth[pos : pos + len(path) + 1]
            local.extend(new)
            self.cal.update(tree, path)
            self.accepted[len(path)] += 1
            self.steps += 1
            self.tokens += new.shape[0]
            pos += new.shape[0]

    def _draft(self, local: LocalIndex) -> DraftTree:
        if self.drafter == "none" or self.budget == 0:
            return DraftTree.empty()
        remote, count = NO_TRIES, 0
        if self.drafter in ("sssd", "datastore"):
            t = time.perf_counter()
            lengths = (self.config.remote_match,) + tuple(self.config.remote_suffixes)
            remote = self.lookup([local.tokens[-k:] for k in lengths], self.options)
            count = len(lengths)
            self.lookup_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        if self.drafter == "pld":
            tree = pld_tree(local, self.budget)
        else:
            c = self.config
            tree = draft_tree(local, remote, 0, count, self.cal, self.budget, self.depth, c.max_children,
                              c.local_occurrences, use_local=self.drafter != "datastore", combine=c.combine)
        self.draft_s.append(time.perf_counter() - t)
        return tree

    def result(self) -> dict:
        steps = max(self.steps, 1)
        at_least = self.accepted[::-1].cumsum()[::-1] / steps  # P(accepted length >= d)
        return {
            "budget": self.budget, "tau": round(self.tokens / steps, 4), "steps": self.steps, "tokens": self.tokens,
            "draft_us": percentiles(self.draft_s), "lookup_us": percentiles(self.lookup_s),
            "accept_by_depth": [round(float(x), 4) for x in at_least[1 : self.depth + 1]],
        }


def replay(cases: list[dict], drafter: str, budgets: Sequence[int], lookup: Callable | None, progress: bool = True,
           config: DraftConfig = DraftConfig()) -> dict:
    from tqdm import tqdm

    results = []
    for b in budgets:
        if cases:  # warm-up: compile the kernels and touch the datastore outside the timings
            Replayer(drafter, b, lookup, config).run_case(cases[0]["prompt"], cases[0]["response"][:16])
        r = Replayer(drafter, b, lookup, config)
        for case in tqdm(cases, desc=f"{drafter} b={b}", disable=not progress, leave=False):
            r.run_case(case["prompt"], case["response"])
        results.append(r.result())
    return {"drafter": drafter, "cases": len(cases), "results": results}


def read_cases(path: str) -> list[dict]:
    cases = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                rec = json.loads(line)
                if not rec.get("prompt") or not rec.get("response"):
                    raise ValueError(f"{path}:{lineno}: a case needs non-empty 'prompt' and 'response' id lists")
                cases.append(rec)
    return cases


def read_docs(path: str) -> list[np.ndarray]:
    docs = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    docs.append(np.asarray(json.loads(line)["tokens"], dtype=np.int32))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{path}:{lineno}: not a token document ({exc})") from exc
    return docs
