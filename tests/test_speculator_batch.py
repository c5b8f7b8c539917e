"""A step's requests committed at once: the same state as one commit per request."""

import re
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.drafting import local as local_module
from client_sdk.drafting import speculator as speculator_module
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.costs import StepCosts
from client_sdk.drafting.planner import PlannerConfig, StepPlanner
from client_sdk.drafting.speculator import Speculator


class Records:
    """What a planner is told of the committed steps (the Speculator's other calls are not made
    with an explicit budget)."""

    def __init__(self):
        self.steps = []

    def record_many(self, predicted, realised):
        self.steps.append((list(predicted), list(realised)))

    chosen_k = 16

    def record_drafts(self, parents, scores, offsets, rows, ends, verified):
        pass


def _run(prompts, steps, mode):
    spec = Speculator(SpeculatorConfig(fixed_budget=4, background_index_tokens=0), planner=Records())
    for i, p in enumerate(prompts):
        spec.start(i, p)
    for tokens in steps:
        ids = list(range(len(prompts)))
        if mode == "drafted":  # the accepted paths read from the tokens, in one compiled pass
            spec.draft_batch(ids, budget=4)
            spec.commit_drafted(ids, tokens)
            continue
        trees = spec.draft(ids, budget=4)
        accepted = [t.longest_match(np.asarray(tok[:-1], np.int32)) for t, tok in zip(trees, tokens)]
        if mode == "many":
            spec.commit_many(ids, tokens, trees, accepted)
        else:
            for i, tok, tree, acc in zip(ids, tokens, trees, accepted):
                spec.commit(i, tok, tree, acc)
    spec._learn()
    return spec


def _told(spec):
    """(predicted, realised) the planner was told, request by request in order."""
    return [p for st in spec.planner.steps for p in st[0]], [r for st in spec.planner.steps for r in st[1]]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=15), min_size=n, max_size=n),
    st.lists(st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=5), min_size=n, max_size=n), max_size=4))))
def test_commit_many_and_commit_drafted_equal_one_commit_per_request(case):
    """commit_many, and commit_drafted (which reads the accepted paths from the tokens), leave
    the state one commit per request leaves: indexes, last tokens, what the calibration learned
    and what the planner was told."""
    prompts, steps = case
    # the batched kernels, and one call per index / one tree walk per request (a few requests)
    for small_append, small_batch in ((0, 0), (local_module.SMALL_APPEND, speculator_module.SMALL_BATCH)):
        with mock.patch.object(local_module, "SMALL_APPEND", small_append), \
                mock.patch.object(speculator_module, "SMALL_BATCH", small_batch):
            one = _run(prompts, steps, "one")
            for other in (_run(prompts, steps, "many"), _run(prompts, steps, "drafted")):
                for i in range(len(prompts)):
                    assert other._requests[i].index().tokens.tolist() == one._requests[i].index().tokens.tolist()
                    assert other._requests[i].last == one._requests[i].last
                np.testing.assert_array_equal(other.calibration.tests, one.calibration.tests)
                np.testing.assert_array_equal(other.calibration.hits, one.calibration.hits)
                got, want = _told(other), _told(one)
                assert got[1] == want[1] and got[0] == pytest.approx(want[0])
                np.testing.assert_array_equal(other.draft(list(range(len(prompts))), budget=4)[0].tokens,
                                              one.draft(list(range(len(prompts))), budget=4)[0].tokens)


def test_a_request_twice_in_one_commit_is_refused():
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    spec.start("r", [1, 2, 3])
    with pytest.raises(ValueError, match="twice"):
        spec.commit_many(["r", "r"], [[4], [5]])
    assert spec._requests["r"].index().tokens.tolist() == [1, 2, 3]  # nothing half-committed


@pytest.mark.parametrize("call,args,message", [
    ("commit_many", (["r"], [[4], [5]]), "1 request ids committed with 2 tokens"),
    ("commit_many", (["r", "s"], [[4]]), "2 request ids committed with 1 tokens"),
    ("commit_many", (["r"], [[4]], [None, None]), "1 request ids committed with 2 trees"),
    ("commit_many", (["r"], [[4]], None, [[], []]), "1 request ids committed with 2 accepted"),
    ("commit_drafted", (["r"], [[4], [5]]), "1 request ids committed with 2 tokens"),
    ("commit_drafted", (["r", "s"], [[4]]), "2 request ids committed with 1 tokens"),
])
def test_a_commit_whose_lists_do_not_match_its_ids_is_refused(call, args, message):
    """(zip dropped the extra tokens, or left the last requests uncommitted, without a word.)"""
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    spec.start("r", [1, 2, 3])
    spec.start("s", [1, 2, 3])
    spec.draft_batch(["r", "s"])
    with pytest.raises(ValueError, match=message):
        getattr(spec, call)(*args)
    assert spec._requests["r"].index().tokens.tolist() == spec._requests["s"].index().tokens.tolist() == [1, 2, 3]


@pytest.mark.parametrize("call", ["draft", "draft_batch", "commit_many", "commit_drafted"])
def test_one_string_of_request_ids_is_refused(call):
    """(A string was read as one id per character: draft("r") drafted for "r", draft("rs") for "r" and "s".)"""
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    for rid in "rs":
        spec.start(rid, [1, 2, 3])
    spec.draft_batch(["r", "s"])
    args = {"commit_many": ([[4], [4]],), "commit_drafted": ([[4], [4]],)}.get(call, ())
    with pytest.raises(ValueError, match=r"^request ids 'rs' must be a list of ids, not one string \(give \['rs'\]\)$"):
        getattr(spec, call)("rs", *args)
    assert spec._requests["r"].index().tokens.tolist() == [1, 2, 3]


def test_accepted_nodes_outside_the_draft_are_refused_at_the_commit():
    """(They were taken, and the next prefetch's learning failed on an IndexError.)"""
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    spec.start("r", [1, 2, 3, 1, 2, 3])
    (tree,) = spec.draft(["r"])
    n = tree.tokens.shape[0]
    assert n >= 1
    for bad, node in (([n], n), ([0, -1], -1), ([0, 0], 0)):  # past the draft; negative; not a path
        said = f"the accepted nodes {bad} of request 'r' are not a path from the root of its {n}-node draft (node {node})"
        with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
            spec.commit("r", [1, 2], tree, bad)
    assert tree.tokens[0] == 1  # (what follows the text's last 3)
    said = "the accepted nodes [0] of request 'r' are not its committed tokens [2]: node 0 is token 1"
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):  # (learned as accepted, which the model did not say)
        spec.commit("r", np.array([2, 2]), tree, [0])
    assert spec._requests["r"].index().tokens.tolist() == [1, 2, 3, 1, 2, 3]
    spec.commit("r", [1, 2], tree, [0])
    spec.prefetch(["r"])  # the learning takes it
    (tree,) = spec.draft(["r"])
    spec.commit("r", [tree.tokens[0]], tree, [0, 1])  # a step cut at its token limit commits fewer


def test_an_unknown_request_fails_the_commit_before_anything_changes():
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    spec.start("r", [1, 2, 3])
    with pytest.raises(KeyError):
        spec.commit_many(["r", "gone"], [[4], [5]])
    assert spec._requests["r"].index().tokens.tolist() == [1, 2, 3] and spec._requests["r"].last == 3


@pytest.mark.parametrize("call", ["draft", "draft_batch", "commit", "commit_drafted", "tree"])
def test_an_unknown_request_is_named_as_one(call):
    """(It was a bare KeyError: 'gone'.) Still a KeyError, for callers that catch one."""
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    spec.start("r", [1, 2, 3])
    calls = {"draft": lambda: spec.draft(["r", "gone"]), "draft_batch": lambda: spec.draft_batch(["gone"]),
             "commit": lambda: spec.commit("gone", [4]), "commit_drafted": lambda: spec.commit_drafted(["gone"], [[4]]),
             "tree": lambda: spec.tree("gone")}
    if call == "commit_drafted":
        spec.draft_batch(["r"], budget=4)
    with pytest.raises(KeyError) as info:
        calls[call]()
    assert str(info.value) == "request 'gone' is not in flight here: never started (Speculator.start), or finished"


@pytest.mark.parametrize("prompt,output,message", [
    ([1, -2, 3], (), "the prompt of request 'x' holds -2, not a token id"),
    ([1, 2], [2**31], "the output of request 'x' holds 2147483648, not a token id"),
    (np.array([1, 2**40]), (), "the prompt of request 'x' holds 1099511627776, not a token id"),  # (wrapped to 0)
    ([1.5, 2], (), "the prompt of request 'x': want a flat sequence of integer token ids"),  # (truncated)
    (np.array([1.5, 2]), (), "the prompt of request 'x': want a flat sequence of integer token ids, not float64"),
    ([[1, 2]], (), "want a flat sequence of integer token ids"),
    (np.array([[1, 2]]), (), "want a flat sequence of integer token ids, not int64 of shape \\(1, 2\\)"),
    ([1, 2**70], (), "want a flat sequence of integer token ids"),
    ((1, 2**40), (), "the prompt of request 'x' holds 1099511627776, not a token id"),
])
def test_a_prompt_or_output_that_is_not_token_ids_is_refused_at_start(prompt, output, message):
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    with pytest.raises(ValueError, match=message):
        spec.start("x", prompt, output)
    assert "x" not in spec


def _a_step_committing(call, batch, last, prefetch=False):
    """A drafted step of ``batch`` requests (r0, r1, ...) whose last one commits ``last`` and the
    others [3, 1], through ``call`` (commit: r0 alone): (spec, ids, the tokens list, the commit)."""
    spec = Speculator(SpeculatorConfig(fixed_budget=4, background_index_tokens=0))
    rids = [f"r{i}" for i in range(batch)]
    for rid in rids:
        spec.start(rid, [1, 2, 3, 1, 2, 3, 1, 2])
    spec.draft_batch(rids, budget=4)
    if prefetch:
        spec.prefetch(rids)
    tokens = [[3, 1] for _ in rids]
    tokens[-1] = last
    calls = {"commit": lambda: spec.commit(rids[0], tokens[0]), "commit_many": lambda: spec.commit_many(rids, tokens),
             "commit_drafted": lambda: spec.commit_drafted(rids, tokens)}
    return spec, rids, tokens, calls[call]


@pytest.mark.parametrize("bad,message", [(-1, "hold -1"), (2**31, "hold 2147483648"),
                                         (np.int64(2**40), "hold 1099511627776")])
@pytest.mark.parametrize("call,batch", [("commit", 1), ("commit_many", 3), ("commit_drafted", 3),
                                        ("commit_drafted", 12)])
def test_committed_tokens_that_are_not_token_ids_are_refused_before_any_is_committed(call, batch, bad, message):
    """(A -1, an engine's pad, went into the request's text and came back in its drafts: the
    model's embedding index; 2**31 failed halfway through the step.) The step's other requests
    are not committed either: the caller can drop the bad one and commit again."""
    spec, rids, tokens, commit = _a_step_committing(call, batch, [3, bad], prefetch=True)
    with pytest.raises(ValueError, match=f"the tokens committed for request '{rids[-1]}' {message}, not a token id"):
        commit()
    assert all(spec._requests[rid].index().tokens.tolist() == [1, 2, 3, 1, 2, 3, 1, 2] for rid in rids)
    tokens[-1] = [3, 1]
    commit()  # (the same step, committed again without the bad token)
    assert spec._requests[rids[0]].index().tokens.tolist()[-2:] == [3, 1]


@pytest.mark.parametrize("bad,message", [(1.5, "hold 1.5"), (np.float32(2.0), "hold np.float32\\(2.0\\)"),
                                         ("5", "hold '5'"), (None, "hold None")])
@pytest.mark.parametrize("call,batch", [("commit", 1), ("commit_many", 3), ("commit_many", 12), ("commit_drafted", 3)])
def test_committed_lists_holding_what_is_no_integer_are_refused(call, batch, bad, message):
    """(A float was truncated into the request's text; a string or None failed in Python's words.)
    A step of SMALL_BATCH or more through commit_drafted packs its lists at once, and there only
    None and what is no number are refused: the packing truncates a float (see packed_tokens)."""
    spec, rids, _, commit = _a_step_committing(call, batch, [3, bad])
    with pytest.raises(ValueError, match=f"^the tokens committed for request '{rids[-1]}' {message}, not a token id$"):
        commit()
    assert all(spec._requests[rid].index().tokens.tolist() == [1, 2, 3, 1, 2, 3, 1, 2] for rid in rids)


@pytest.mark.parametrize("bad", [None, "x"])
def test_a_packed_step_refuses_what_is_no_number_in_one_line(bad):
    """(None failed in int()'s words, "x" in numpy's.)"""
    spec = Speculator(SpeculatorConfig(fixed_budget=4, background_index_tokens=0))
    rids = [f"r{i}" for i in range(12)]
    for rid in rids:
        spec.start(rid, [1, 2, 3, 1, 2])
    spec.draft_batch(rids, budget=4)
    with pytest.raises(ValueError, match=f"^the tokens committed for request 'r11' hold {bad!r}, not a token id$"):
        spec.commit_drafted(rids, [[3, 1]] * 11 + [[3, bad]])
    assert all(spec._requests[rid].index().tokens.tolist() == [1, 2, 3, 1, 2] for rid in rids)


@pytest.mark.parametrize("bad,message", [
    (np.array([3.0, 1.7]), "want a flat sequence of integer token ids, not float64 of shape \\(2,\\)"),  # (was 3, 1)
    (np.array([[3, 1]]), "want a flat sequence of integer token ids, not int64 of shape \\(1, 2\\)"),
    ((3, 1.5), "want a flat sequence of integer token ids"),
    (np.array([3, -1]), "holds -1, not a token id"),
])
@pytest.mark.parametrize("call,batch", [("commit", 1), ("commit_many", 3), ("commit_drafted", 3),
                                        ("commit_drafted", 12)])
def test_committed_arrays_that_are_not_token_ids_are_refused_before_any_is_committed(call, batch, bad, message):
    """Tokens handed as an array or a tuple rather than a list: a float array was truncated into
    the request's text (its last token kept as a float)."""
    spec, rids, _, commit = _a_step_committing(call, batch, bad)
    with pytest.raises(ValueError, match=f"the tokens committed for request '{rids[-1]}'.*{message}"):
        commit()
    assert all(spec._requests[rid].index().tokens.tolist() == [1, 2, 3, 1, 2, 3, 1, 2] for rid in rids)


@pytest.mark.parametrize("tokens", [np.array([3, 1], dtype=np.int64), np.array([3, 1], dtype=np.uint32), (3, 1)])
def test_committed_tokens_as_integer_arrays_or_tuples_are_taken(tokens):
    import torch

    spec = Speculator(SpeculatorConfig(fixed_budget=4, background_index_tokens=0))
    spec.start("r", [1, 2, 3, 1, 2])
    spec.commit("r", tokens)
    spec.commit("r", torch.tensor([2, 3]))
    assert spec._requests["r"].index().tokens.tolist() == [1, 2, 3, 1, 2, 3, 1, 2, 3]
    assert type(spec._requests["r"].last) is int


def test_a_request_started_twice_is_refused_and_keeps_its_state():
    """(The second start replaced the request's text and step silently: its output never went
    back to the datastore, and a draft in flight was committed against the new text.)"""
    spec = Speculator(SpeculatorConfig(fixed_budget=4, background_index_tokens=0))
    spec.start("r", [1, 2, 3, 1, 2])
    spec.commit("r", [3, 1])
    with pytest.raises(ValueError, match="^request 'r' is already in flight here: finish it before starting it again$"):
        spec.start("r", [9, 9])
    assert spec._requests["r"].index().tokens.tolist() == [1, 2, 3, 1, 2, 3, 1]
    spec.finish("r")
    spec.start("r", [9, 9])  # a finished id may come back
    assert spec._requests["r"].index().tokens.tolist() == [9, 9]


@pytest.mark.parametrize("prompt", [[], [0, 5, 2**31 - 1], np.array([3, 4], dtype=np.uint16), np.array([7], dtype=np.int64)])
def test_token_ids_of_any_integer_type_are_taken(prompt):
    from array import array

    spec = Speculator(SpeculatorConfig(fixed_budget=4, background_index_tokens=0))
    spec.start("x", prompt, array("q", [9]))
    assert spec._requests["x"].index().tokens.tolist() == [int(t) for t in prompt] + [9]


def test_a_request_indexed_at_start_joins_the_arena_there_not_at_its_first_step():
    """Registering an index in the kernels' arena costs typed-list writes: at admission, beside
    the GPU, rather than on the first step's critical path. A long prompt's index, built in the
    background, joins at its first step (the arena has one owner thread)."""
    spec = Speculator(SpeculatorConfig(fixed_budget=4, background_index_tokens=100))
    for rid in ("a", "b", "c"):
        spec.start(rid, [1, 2, 3, 1, 2])
    assert len(spec.arena) == 3
    spec.start("long", list(range(200)))
    spec._requests["long"].index(wait=True)
    assert len(spec.arena) == 3
    spec.draft(["a", "b", "c", "long"])  # a batch the arena's kernel drafts
    assert len(spec.arena) == 4


def _zero_wait_run(docs, prompts, truths, steps, small, threads=1):
    """Zero-wait steps (prefetch, the trie cache, the single-token table) of a batch of requests
    whose committed tokens follow ``truths``; returns every step's drafts as (tokens, offsets).
    threads: DraftConfig.draft_threads, the draft kernel spread from one request up."""
    from client_sdk.drafting import outcomes as outcomes_module
    from client_sdk.drafting import parallel
    from client_sdk.runtime import lookup_options
    from client_sdk.types import DraftConfig
    from sssd.bench.replay import InProcessDatastore, InProcessSource

    config = SpeculatorConfig(fixed_budget=6, background_index_tokens=0, draft=DraftConfig(draft_threads=threads))
    ds = InProcessDatastore(docs, 20)
    remote = InProcessSource(ds.lookup, lookup_options(config.draft, config.draft.max_depth, True))
    with mock.patch.object(speculator_module, "SMALL_BATCH", small), mock.patch.object(parallel, "MIN_ROWS", 1), \
            mock.patch.object(outcomes_module, "SMALL_BATCH", small), mock.patch.object(local_module, "SMALL_APPEND", small):
        spec = Speculator(config, remote=remote, vocab_size=20)
        assert spec.wait_for_unigrams(30)
        ids = list(range(len(prompts)))
        for i, p in enumerate(prompts):
            spec.start(i, p)
        seen, out = [len(p) for p in prompts], []
        for _ in range(steps):
            batch = spec.draft_batch(ids, budget=6)
            out.append((batch.tokens.tolist(), batch.offsets.tolist()))
            spec.prefetch(ids)
            new = []
            for i in ids:
                tree = spec.tree(i)
                truth = truths[i][seen[i] - len(prompts[i]):]
                path = tree.longest_match(np.asarray(truth[:6], np.int32)) if tree is not None else []
                new.append(list(truth[: len(path) + 1]))
                seen[i] += len(new[-1])
            spec.commit_drafted(ids, new)
        spec.close()
    return out


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.integers(0, 5), min_size=4, max_size=40), min_size=1, max_size=6),
    st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=6), min_size=n, max_size=n),
    st.lists(st.lists(st.integers(0, 5), min_size=30, max_size=30), min_size=n, max_size=n))))
def test_zero_wait_steps_draft_alike_batched_and_one_request_at_a_time(case):
    """The batched paths of a zero-wait step (outcome table, cache keys from the tails array,
    deferred indexing) give the drafts the per-request paths give, and so does the draft kernel
    spread over two threads."""
    docs, prompts, truths = case
    want = _zero_wait_run(docs, prompts, truths, 6, 10_000)
    assert _zero_wait_run(docs, prompts, truths, 6, 0) == want
    assert _zero_wait_run(docs, prompts, truths, 6, 0, threads=2) == want


@pytest.mark.parametrize("budget", [-1, 2.5, True, "4", 4097, 10**9, None])
def test_a_budget_that_is_no_count_of_draft_tokens_is_a_one_line_error(budget):
    """(A float or a bool reached the compiled kernels: a numba typing error, screens long; -1
    drafted nothing, as 0 does; 10**9 failed their allocation as a MemoryError.)"""
    spec = Speculator(SpeculatorConfig(fixed_budget=4))
    spec.start("r", [1, 2, 3, 1, 2])
    if budget is None:  # the config's own
        with pytest.raises(ValueError, match=r"^fixed_budget 1.5 must be an integer in \[0, 4096\] \(0: no drafts\)$"):
            SpeculatorConfig(fixed_budget=1.5)
        return
    with pytest.raises(ValueError, match=rf"^budget {budget!r} must be an integer in \[0, 4096\] \(0: no drafts\)$"):
        spec.draft(["r"], budget=budget)
    assert spec.draft(["r"], budget=np.int64(2))[0].tokens.tolist() == [3, 1]  # (numpy's integers are counts too)


@pytest.mark.parametrize("call, message", [
    (lambda s: s.plan(-3), r"batch -3 must be an integer in \[0, 65536\] \(the step's requests\)"),
    (lambda s: s.plan(1.5), r"batch 1.5 must be an integer in \[0, 65536\]"),
    (lambda s: s.plan(10**6), r"batch 1000000 must be an integer in \[0, 65536\]"),
    (lambda s: s.observe_step(0, 2, 1e-3), r"batch 0 must be an integer in \[1, 65536\]"),  # was ZeroDivisionError
    (lambda s: s.observe_step(-1, 2, 1e-3), r"batch -1 must be an integer in \[1, 65536\]"),  # "math domain error"
    (lambda s: s.observe_step(1, 0, 1e-3), r"width 0 must be an integer in \[1, 4097\] \(1 \+ the step's draft tokens\)"),
    (lambda s: s.observe_step(1, "2", 1e-3), r"width '2' must be an integer in \[1, 4097\]"),
])
@pytest.mark.parametrize("planned", [True, False])
def test_a_step_batch_or_width_that_is_no_count_is_a_one_line_error(call, message, planned):
    """(The planner divided by a batch of 0 and failed on -1 as "math domain error"; without a
    planner such calls passed unseen.) Counts are accepted as numpy integers, and a draft of no
    requests still plans a batch of 0."""
    planner = StepPlanner(StepCosts({(1, n): 1e-3 for n in PlannerConfig().widths})) if planned else None
    spec = Speculator(SpeculatorConfig(fixed_budget=4), planner=planner)
    with pytest.raises(ValueError, match=f"^{message}"):
        call(spec)
    spec.observe_step(np.int64(1), np.int32(2), 1e-3)
    assert spec.draft([]) == [] and spec.plan(np.int64(1)) == (planner.max_budget if planned else 4)
