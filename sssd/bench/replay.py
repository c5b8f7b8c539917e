"""``sssd bench replay``: offline replay of recorded (prompt, response) pairs through the product.

Each response is taken as the target model's greedy output. At every step the real
Speculator (the one a decode worker embeds) drafts a tree of at most ``budget`` tokens with
the given Drafter; the longest root path that matches the response is accepted, plus one
bonus token (the target's own next token), and committed back to the Speculator, which
learns its calibration online as in serving. tau = response tokens / steps (1.0 = no
speculation). draft_us is the Speculator's drafting with the datastore's answer in hand
(own-text match + scoring + merge + selection); the datastore lookup is lookup_us. With
``records`` every step is kept: case, match length, draft size, accepted, µs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence

import numpy as np

from client_sdk.drafting.drafters import CalibratedMerge, Drafter, NoDrafts, PromptLookup
from client_sdk.runtime import build_speculator, lookup_options
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.tree import Calibration
from client_sdk.types import DraftConfig
from sssd_wire.types import LookupParams, TrieBatch
from sssd.bench.stats import percentiles


# the CLI's drafter names (--drafter): SSSD, its two halves alone, prompt lookup, no drafts
_NAMED = {
    "sssd": lambda c: CalibratedMerge(c),
    "local": lambda c: CalibratedMerge(c, datastore=False),
    "datastore": lambda c: CalibratedMerge(c, own_text=False),
    "pld": lambda c: PromptLookup(),
    "none": lambda c: NoDrafts(),
}
DRAFTERS = tuple(_NAMED)


def drafter_named(name: str, config: DraftConfig = DraftConfig()) -> Drafter:
    if name not in _NAMED:
        raise ValueError(f"drafter {name!r}: one of {', '.join(DRAFTERS)}")
    return _NAMED[name](config)


class InProcessDatastore:
    """The datastore core in this process (``--datastore-docs``), as a lookup function."""

    def __init__(self, docs: Sequence[np.ndarray], vocab_size: int) -> None:
        from datastore_service.core import Document, NamespaceIndex, NamespaceSpec, build_segment
        from datastore_service.core.index import warm_up

        warm_up()  # as the service does before it serves: not inside the first timed step (seconds, cold)
        self.ns = NamespaceIndex(NamespaceSpec("replay", vocab_size))
        self.ns.add([Document(f"d{i}", np.asarray(d, dtype=np.int32)) for i, d in enumerate(docs)])
        self.ns.install(build_segment(1, vocab_size, self.ns.freeze()))

    def lookup(self, contexts: Sequence[np.ndarray], params: LookupParams) -> TrieBatch:
        from datastore_service.core.index import pack_tails

        return self.ns.lookup_packed(*pack_tails(contexts, params.max_match), params)


class RemoteDatastore:
    """A running service (``--address/--namespace``) as a lookup function."""

    def __init__(self, address: str, namespace: str, token: str | None = None) -> None:
        from client_sdk.transport.remote import DatastoreClient

        self.client = DatastoreClient(address, token)
        self.namespace = namespace

    def lookup(self, contexts, options) -> TrieBatch:
        return self.client.lookup_batch(self.namespace, contexts, options)


class InProcessSource:
    """A lookup function behind the RemoteSource interface (request / collect), answered at
    collect time: in process there is nothing to overlap and no deadline to miss."""

    def __init__(self, lookup: Callable, options: LookupParams) -> None:
        self.lookup, self.options = lookup, options
        self._pending: dict = {}

    def request(self, key, contexts, samples: int | None = None) -> None:
        self._pending[key] = (contexts, self.options.sampling(samples))

    def collect(self, key, contexts, deadline_s: float) -> TrieBatch | None:
        asked = self._pending.pop(key, None)
        if asked is None:
            return None
        requested, options = asked
        return self.lookup(requested if contexts is None else contexts, options)

    def fetch(self, contexts) -> TrieBatch:
        return self.lookup(contexts, self.options)


@dataclasses.dataclass(frozen=True)
class StepRecord:
    case: int
    match: int  # the datastore's match length for the longest suffix (0: none)
    draft: int  # draft tokens proposed
    accepted: int  # draft tokens accepted (the bonus token not counted)
    draft_us: float
    lookup_us: float


class Replayer:
    """Replays cases through one Speculator with one drafter at one budget."""

    def __init__(self, drafter: Drafter, budget: int, lookup: Callable | None, config: DraftConfig = DraftConfig(),
                 prior: np.ndarray | None = None, records: bool = False, prefetch_outcomes: bool = True,
                 vocab_size: int | None = None, calibration: Calibration | None = None,
                 verify_depth: int | None = None) -> None:
        """prefetch_outcomes: the product's zero-wait path (the datastore is asked, as the step
        verifies, for its likely ends, and always answers in time here); off: each step asks
        for its committed context and waits for the answer. vocab_size: zero-wait holds the
        datastore's single-token tries (fetched before the first case: the steady state).
        calibration: the one the Speculator learns into (None: a new one from ``prior``).
        verify_depth: the deepest path a step verifies (None: the draft's depth); smaller, an
        oracle takes the first tokens of a larger draft (``bench/selection_ceiling.py``)."""
        if drafter.asks_datastore and lookup is None:
            raise ValueError(f"{type(drafter).__name__} needs a datastore (--datastore-docs, --address or --sharegpt-datastore)")
        self.budget = budget
        self.depth = min(config.max_depth, budget) if budget else 0
        self.verify_depth = self.depth if verify_depth is None else min(verify_depth, self.depth)
        spec_config = SpeculatorConfig(draft=config, prefetch_outcomes=prefetch_outcomes,
                                       lookup_deadline_s=0.0 if prefetch_outcomes else 1.0)
        options = lookup_options(config, self.depth, prefetch_outcomes)
        source = InProcessSource(lookup, options) if lookup is not None else None
        calibration = Calibration(prior) if calibration is None else calibration
        self.spec = build_speculator(fixed_budget=budget, remote=source, drafter=drafter, calibration=calibration,
                                     config=spec_config, vocab_size=vocab_size)
        if not self.spec.wait_for_unigrams(600.0):
            raise TimeoutError("the datastore's single-token tries did not load within 600 s")
        self.cases = self.steps = self.tokens = 0
        self.accepted = np.zeros(self.depth + 2, dtype=np.int64)  # histogram of accepted length
        self.draft_s: list[float] = []
        self.lookup_s: list[float] = []
        self.records: list[StepRecord] | None = [] if records else None

    @property
    def calibration(self) -> Calibration:
        return self.spec.calibration

    def run_case(self, prompt: Sequence[int], response: Sequence[int]) -> None:
        case, truth, pos = self.cases, np.asarray(response, dtype=np.int32), 0
        self.spec.start(case, prompt)
        while pos < truth.shape[0]:
            (tree,) = self.spec.draft([case])
            self.spec.prefetch([case])
            path = tree.longest_match(truth[pos : pos + self.verify_depth])
            new = truth[pos : pos + len(path) + 1]
            self.spec.commit(case, new, tree, path)
            self._count(case, len(tree), len(path), new.shape[0])
            pos += new.shape[0]
        self.spec.finish(case)
        self.cases += 1

    def _count(self, case: int, drafted: int, accepted: int, committed: int) -> None:
        last = self.spec.last
        if self.budget:
            self.draft_s.append(last.draft_s)
            if self.spec.drafter.asks_datastore:
                self.lookup_s.append(last.lookup_s)
        if self.records is not None:
            self.records.append(StepRecord(case, last.match_lengths[0] if last.match_lengths else 0, drafted, accepted,
                                           round(last.draft_s * 1e6, 1), round(last.lookup_s * 1e6, 1)))
        self.accepted[accepted] += 1
        self.steps += 1
        self.tokens += committed

    def result(self) -> dict:
        steps = max(self.steps, 1)
        at_least = self.accepted[::-1].cumsum()[::-1] / steps  # P(accepted length >= d)
        return {
            "budget": self.budget, "tau": round(self.tokens / steps, 4), "steps": self.steps, "tokens": self.tokens,
            "draft_us": percentiles(self.draft_s), "lookup_us": percentiles(self.lookup_s),
            "accept_by_depth": [round(float(x), 4) for x in at_least[1 : self.depth + 1]],
        }


def replay(cases: list[dict], drafter: Drafter, budgets: Sequence[int], lookup: Callable | None, progress: bool = True,
           config: DraftConfig = DraftConfig(), records: str | None = None, label: str | None = None,
           prefetch_outcomes: bool = True, vocab_size: int | None = None) -> dict:
    """Replay every case at every budget; records: a path for per-step JSONL (budget added);
    vocab_size: the datastore's, for zero-wait's single-token table (None: without it)."""
    label = label or type(drafter).__name__
    from tqdm import tqdm

    results, sink = [], open(records, "w") if records else None
    try:
        for b in budgets:
            if cases:  # warm-up: compile the kernels and touch the datastore outside the timings
                Replayer(drafter, b, lookup, config).run_case(cases[0]["prompt"], cases[0]["response"][:16])
            r = Replayer(drafter, b, lookup, config, records=sink is not None, prefetch_outcomes=prefetch_outcomes,
                         vocab_size=vocab_size)
            try:
                for case in tqdm(cases, desc=f"{label} b={b}", disable=not progress, leave=False):
                    r.run_case(case["prompt"], case["response"])
            finally:
                r.spec.close()
            results.append(r.result())
            for rec in r.records or ():
                sink.write(json.dumps({"budget": b, **dataclasses.asdict(rec)}) + "\n")
    finally:
        if sink is not None:
            sink.close()
    return {"drafter": label, "cases": len(cases), "lookup": "outcome prefetch" if prefetch_outcomes else "blocking",
            "results": results}


def read_cases(path: str) -> list[dict]:
    """The replay cases of a JSONL file, {"prompt": [ids], "response": [ids]} per line; a one-line
    ValueError naming the line of the first malformed one."""
    from sssd.client_commands import jsonl_records, token_ids

    cases = []
    for where, rec in jsonl_records(path):
        for field in ("prompt", "response"):
            if not isinstance(rec.get(field), list) or not rec[field]:
                raise ValueError(f"{where}: a case needs non-empty 'prompt' and 'response' id lists")
            token_ids(rec[field], f"{where}: {field!r}")
        cases.append(rec)
    if not cases:  # (it replayed nothing and reported tau 0.0 at every budget)
        raise ValueError(f"{path} holds no cases (want one {{\"prompt\": [ids], \"response\": [ids]}} per line)")
    return cases


def read_docs(path: str) -> list[np.ndarray]:
    """The token documents of a JSONL file (the reader ``sssd ingest`` uses)."""
    from sssd.client_commands import read_token_documents

    docs = [np.asarray(tokens, dtype=np.int32) for _, tokens in read_token_documents(path)]
    if not docs:  # (the "sssd" drafter then replayed against an empty datastore, unsaid)
        raise ValueError(f"{path} holds no documents (want one {{\"tokens\": [ids]}} per line)")
    return docs
