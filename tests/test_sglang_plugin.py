"""The SGLang plugin against the real sglang==0.5.23 package (registration path, CPU)."""

import json
import os
import subprocess
import sys
import textwrap
import time
from array import array
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.drafting.tree import Calibration

sglang = pytest.importorskip("sglang.srt.speculative.spec_info", reason="sglang is not installed")

from sglang_integration.config import PluginConfig  # noqa: E402
from sglang_integration.drafts import BatchDrafter, RequestView, missing_relayed, relayed_views  # noqa: E402
from client_sdk.drafting.planner import PlannerConfig  # noqa: E402
from client_sdk.drafting.config import SpeculatorConfig  # noqa: E402
from client_sdk.drafting.speculator import Speculator  # noqa: E402
from client_sdk.types import DraftConfig  # noqa: E402


def run_python(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_entry_point_loads_through_sglang_and_resolves():
    r = run_python("""
        from sglang.srt.plugins import load_plugins
        load_plugins()
        load_plugins()  # idempotent
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
        from sglang_integration.plugin import register
        register()  # a second registration in the same process is a no-op
        algo = SpeculativeAlgorithm.from_string("sssd")
        print(type(algo).__name__, algo.is_ngram(), algo.has_draft_kv(), algo.need_topk(),
              algo.carries_draft_hidden_states(), algo.is_speculative(), algo.is_eagle())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["SSSDSpecAlgo", "True", "False", "False", "False", "True", "False"]


def test_bad_configuration_fails_loudly():
    r = run_python("""
        from sglang_integration.plugin import register
        try:
            register()
        except ValueError:
            print("raised")
    """, env={"SSSD_HARDWARE": "abacus"})
    assert "raised" in r.stdout and "failed to register the SSSD" in r.stderr and "abacus" in r.stderr


RESOLVE_CASES = [
    # (extra launch flags, SSSD_* environment, what resolution must give or the error it must name)
    ([], {}, {"speculative_num_draft_tokens": 17, "speculative_eagle_topk": 10, "max_running_requests": 48}),
    ([], {"SSSD_DRAFT_TOKENS": "9"}, {"speculative_num_draft_tokens": 9}),  # the plugin's own variable
    (["--speculative-num-draft-tokens", "5"], {"SSSD_DRAFT_TOKENS": "9"}, {"speculative_num_draft_tokens": 5}),  # the flag wins
    (["--max-running-requests", "8"], {}, {"max_running_requests": 8}),  # NGRAM's default of 48 only when unset
    (["--speculative-ngram-max-bfs-breadth", "1"], {}, "--speculative-ngram-max-bfs-breadth 1"),
]


def test_sglang_resolves_a_launch_with_sssd_through_the_plugins_hook(tmp_path):
    """SGLang's own argument resolution (``handle_speculative_decoding``, which hands a registered
    algorithm's ``handle_server_args`` a recorder of its writes) on the real ``ServerArgs`` of
    ``launch_server --speculative-algorithm sssd``: the launch width, NGRAM's defaults and checks."""
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA_8B_CONFIG, "architectures": ["LlamaForCausalLM"]}))
    r = run_python(f"""
        import json, os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import sglang_standins  # noqa: F401
        from sglang_integration.plugin import register
        from sglang.srt.arg_groups.arg_utils import record_fields
        from sglang.srt.arg_groups.overrides import _page_size_default, resolving_view, run_post_process_pass
        from sglang.srt.arg_groups.speculative_hook import handle_speculative_decoding
        from sglang.srt.server_args import prepare_server_args

        register()
        for flags, env, _ in {RESOLVE_CASES!r}:
            for name in [k for k in os.environ if k.startswith("SSSD_")]:
                del os.environ[name]
            os.environ.update(env)
            args = prepare_server_args(["--model-path", {str(tmp_path)!r}, "--speculative-algorithm", "sssd",
                                        "--device", "cpu"] + flags)
            # what run_resolution_pipeline sets up, and the page size it declares before this hook
            args._raw_input = {{f.name: getattr(args, f.name) for f in record_fields(type(args))}}
            args._resolved_overrides = list(getattr(args, "_resolved_overrides", ()))
            run_post_process_pass(args, _page_size_default)
            try:
                handle_speculative_decoding(args)
            except ValueError as exc:
                print(json.dumps(str(exc)))
                continue
            view = resolving_view(args)
            print(json.dumps({{k: getattr(view, k) for k in ("speculative_num_draft_tokens", "speculative_eagle_topk",
                                                             "max_running_requests")}}))
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [json.loads(line) for line in r.stdout.splitlines() if line.startswith(("{", '"'))]
    assert len(got) == len(RESOLVE_CASES), r.stdout
    for (flags, env, want), seen in zip(RESOLVE_CASES, got):
        if isinstance(want, str):
            assert isinstance(seen, str) and want in seen, (flags, env, seen)
        else:
            assert {k: seen[k] for k in want} == want, (flags, env, seen)


def test_spec_class_passes_sglang_conformance_and_defines_every_scheduler_call():
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from sglang.srt.speculative.spec_registry import _assert_custom_spec_algo_conforms

    from sglang_integration.spec import SSSDSpecAlgo

    _assert_custom_spec_algo_conforms(SSSDSpecAlgo)
    enum_methods = {n for n, v in vars(SpeculativeAlgorithm).items() if callable(v) and not n.startswith("_")}
    enum_methods -= {"from_string", "register"}
    missing = sorted(m for m in enum_methods if not hasattr(SSSDSpecAlgo, m))
    assert not missing, f"SpeculativeAlgorithm methods the SSSD spec class lacks: {missing}"
    algo = SSSDSpecAlgo("SSSD", factory=lambda args: object, supports_overlap=True)
    assert algo.get_num_tokens_per_req_for_target_verify(12, False) == 12
    assert not algo.supports_mixed_chunk() and not algo.supports_ragged_verify()


ENV_CASES = [
    ({}, PluginConfig()),
    ({"SSSD_DATASTORE": "ds:50051", "SSSD_NAMESPACE": "llama3", "SSSD_DRAFT_TOKENS": "16", "SSSD_FEEDBACK": "0"},
     PluginConfig(datastore="ds:50051", namespace="llama3", draft_tokens=16, feedback=False)),
    ({"SSSD_MAX_DEPTH": "4", "SSSD_LOOKUP_DEADLINE_S": "0.005", "SSSD_WIDTHS": "1,2,5", "SSSD_HARDWARE": "H200"},
     PluginConfig(hardware="h200", speculator=SpeculatorConfig(
         draft=DraftConfig(max_depth=4), planner=PlannerConfig(widths=(1, 2, 5)), lookup_deadline_s=0.005))),
]


@pytest.mark.parametrize("env,expected", ENV_CASES)
def test_config_from_env(env, expected):
    assert PluginConfig.from_env(env) == expected


@pytest.mark.parametrize("env, said", [
    ({}, "feedback=off (no datastore)"),  # (it said "feedback=on" for a worker that sends nothing)
    ({"SSSD_DATASTORE": "ds:50051"}, "feedback=on"),
    ({"SSSD_DATASTORE": "ds:50051", "SSSD_FEEDBACK": "0"}, "feedback=off"),
])
def test_the_launch_line_says_whether_feedback_is_sent(env, said):
    assert PluginConfig.from_env(env).describe().endswith(said)


@pytest.mark.parametrize("env,message", [
    ({"SSSD_DRAFT_TOKENS": "1"}, "SSSD_DRAFT_TOKENS=1"),
    ({"SSSD_DRAFT_TOKENS": "many"}, "SSSD_DRAFT_TOKENS='many'"),
    ({"SSSD_FEEDBACK": "maybe"}, "SSSD_FEEDBACK='maybe'.*not a boolean"),
    ({"SSSD_WIDTHS": "2,3"}, "widths must be increasing and start at 1"),
    ({"SSSD_HARDWARE": "tpu"}, "SSSD_HARDWARE='tpu'"),
    ({"SSSD_LOOKUP_DEADLINE_S": "-1"}, "SSSD_LOOKUP_DEADLINE_S"),
    ({"SSSD_DATASTORE": "ds:99999"}, "SSSD_DATASTORE 'ds:99999': port 99999 is not in 1..65535"),
    ({"SSSD_DATASTORE": "ds:1", "SSSD_FEEDBACK_ADDRESS": "w:0"}, "SSSD_FEEDBACK_ADDRESS 'w:0': port 0 is not in"),
    ({"SSSD_TOKEN": "t0ken\n"}, r"^bad SSSD_\* environment \(SSSD_TOKEN=\(set, not shown\)\): SSSD_TOKEN holds a "
                                r"line break at its end \(a secret file's trailing newline\?\)"),
    # a secret is never said, whichever variable was wrong
    ({"SSSD_TOKEN": "t0ken", "SSSD_HARDWARE": "tpu"}, r"^bad SSSD_\* environment \(SSSD_TOKEN=\(set, not shown\), "
                                                      r"SSSD_HARDWARE='tpu'\): SSSD_HARDWARE='tpu' is not one of"),
    ({"SSSD_TLS_CA": "/nonexistent/ca.pem"}, r"\): SSSD_TLS_CA /nonexistent/ca.pem: No such file"),
    ({"SSSD_NAMESPACE": ""}, r"SSSD_NAMESPACE='' is no namespace name: it must match \^\[A-Za-z0-9\]"),
    ({"SSSD_NAMESPACE": "llama 3"}, "SSSD_NAMESPACE='llama 3' is no namespace name"),
    ({"SSSD_NAMESPACE": "x" * 65}, "SSSD_NAMESPACE='x{65}' is no namespace name"),
    ({"SSSD_DATASTORE": "sssd-read"}, "SSSD_DATASTORE 'sssd-read' names no port: plaintext gRPC would dial 443"),
])
def test_config_errors_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        PluginConfig.from_env(env)


def test_unknown_variable_is_named(caplog):
    """With the knob it nearly names; the cache's variable (every sssd process reads it) is no
    stranger (it was said to be ignored)."""
    with caplog.at_level("WARNING", logger="sssd.sglang"):
        env = {"SSSD_LOOKUP_DEADLINE_MS": "5", "SSSD_CACHE": "/c", "SSSD_SHARD": "2"}
        assert PluginConfig.from_env(env) == PluginConfig()
    assert caplog.messages == ["ignoring environment variables that name no SSSD plugin setting: "
                               "SSSD_LOOKUP_DEADLINE_MS (did you mean SSSD_LOOKUP_DEADLINE_S?), SSSD_SHARD"]


def check_rows(drafts, mask, bs, width):
    toks = drafts.reshape(bs, width)
    m = mask.reshape(bs, width, width)
    for b in range(bs):
        assert m[b, 0, 0] and not m[b, 0, 1:].any(), "the root sees only itself"
        parents = []
        for i in range(1, width):
            anc = [j for j in range(i) if m[b, i, j]]
            assert m[b, i, i] and not m[b, i, i + 1 :].any(), "a node never sees later slots"
            parent = max(anc)
            assert set(anc) == {j for j in range(parent + 1) if m[b, parent, j]}, "mask is not ancestors + self"
            parents.append(parent)
        siblings = [(p, int(toks[b, i + 1])) for i, p in enumerate(parents)]
        assert len(siblings) == len(set(siblings)), f"duplicate sibling tokens in row {b}: {siblings}"
    return toks


def test_drafts_layout_padding_and_sync():
    spec = Speculator(SpeculatorConfig(fixed_budget=7))
    drafter = BatchDrafter(spec, width=8, vocab_size=100)
    reqs = [RequestView("a", [5, 6, 7, 5, 6], [7, 5]), RequestView("b", [1, 2], [3])]
    drafts, mask = drafter.drafts(reqs)
    toks = check_rows(drafts, mask, 2, 8)
    assert toks[0, 0] == 5 and toks[1, 0] == 3  # roots: the last committed tokens
    assert toks[0, 1:3].tolist() == [6, 7]  # the request's own n-grams predict "6 7"
    assert sorted(toks[1, 1:].tolist()) == list(range(7))  # nothing to draft: unique padding
    # next step: "a" accepted 6, 7 and got bonus 9; "b" got 4
    reqs = [RequestView("a", [5, 6, 7, 5, 6], [7, 5, 6, 7, 9]), RequestView("b", [1, 2], [3, 4])]
    drafts, mask = drafter.drafts(reqs)
    check_rows(drafts, mask, 2, 8)
    assert spec.calibration.tests.sum() > Calibration().tests.sum()  # the outcome of the first draft was learned


class ScriptedPlanner:
    """A planner whose plan is a script (0 = a plain step), drafting at most 7 tokens."""

    def __init__(self, plans):
        self.plans = list(plans)  # a budget, or (0, width): a width probed with filler
        self.records = []
        self.drafting = []
        self.steps = []
        self.plain = []
        self.blank = 1
        self.look_rows = None

    def plan(self, batch):
        plan = self.plans.pop(0)
        budget, self.blank = plan if isinstance(plan, tuple) else (plan, 1)
        return budget

    def choose_for_drafts(self, scores, best_first=False, offsets=None):
        return 7

    def build_size(self):
        return 16  # every node built (the cut to 7 is choose_for_drafts')

    def observe_drafting(self, batch, seconds):
        self.drafting.append(seconds)

    def observe_plain(self, batch, seconds):
        self.plain.append(seconds)

    def observe_step(self, batch, width, seconds):
        self.steps.append(width)

    def record_many(self, predicted, realised):
        self.records.extend(realised)

    chosen_k = 0

    def record_drafts(self, parents, scores, offsets, rows, ends, verified):
        pass

    def may_draft_next(self):
        return True


@pytest.mark.parametrize("calls_prefetch", [True, False])
def test_adaptive_plain_steps_defer_their_bookkeeping(calls_prefetch):
    """A planned plain step returns the roots alone (width 1); its requests' new tokens and
    empty trees are booked beside the GPU (prefetch) or, for a caller without prefetch, at the
    next step, which then drafts from every token committed meanwhile."""
    planner = ScriptedPlanner([7, 0, 0, 7])
    spec = Speculator(SpeculatorConfig(), planner=planner)
    drafter = BatchDrafter(spec, width=8, vocab_size=100, adaptive=True)
    text = [5, 6, 7, 8]
    out = [5, 6]
    walls = []
    for step, plain in enumerate([False, True, True, False]):
        t = time.perf_counter()
        drafts, mask = drafter.drafts([RequestView("a", text, list(out))])
        walls.append(time.perf_counter() - t)
        assert (drafter.last_width == 1) == plain
        if plain:
            assert drafts.tolist() == [out[-1]] and mask.tolist() == [True]
        else:
            toks = check_rows(drafts, mask, 1, drafter.last_width)
            assert toks[0, 1:3].tolist() == [7, 8]  # after "5 6" the own text says "7 8"
        if calls_prefetch:
            drafter.prefetch(["a"])
        assert (drafter.last_tree("a") is None) == plain or not calls_prefetch
        out += [7, 8, 5, 6]  # the draft's 7, 8 accepted (or plain steps), then 5, 6
    # the drafted step's outcome was recorded once (the plain steps had no tree to learn from)
    assert planner.records == [3]  # 7 8 5 of the draft accepted
    # the planner is told each drafted step's whole drafting time (sync to arrays), once, and the
    # upkeep of a plain step that synced nothing (plain decoding's own: what drafting would
    # replace); the first plain step synced the drafted step's outcome, the second one, without
    # prefetch, its own predecessor's
    assert len(planner.drafting) == 2
    assert all(0 < d <= w for d, w in zip(planner.drafting, [walls[0], walls[3]]))
    assert len(planner.plain) == (1 if calls_prefetch else 0)
    assert all(0 < d <= walls[2] for d in planner.plain)
    assert spec.calibration.tests.sum() > Calibration().tests.sum()
    assert spec._requests["a"].index().tokens.tolist() == text + out[:-4]


def test_clear_drops_every_request_and_a_plain_steps_pending_sync():
    """A cache flush's clear(): every request dropped, nothing fed back; a plain step's requests,
    whose sync was left for prefetch, are not admitted again by it; one that decodes again is
    admitted with its whole context."""
    sink = []
    spec = Speculator(SpeculatorConfig(), planner=ScriptedPlanner([0, 7]))
    spec.feedback = type("Sink", (), {"submit": lambda self, rid, toks: sink.append(rid), "close": lambda self: None})()
    drafter = BatchDrafter(spec, width=8, vocab_size=100, adaptive=True)
    drafter.admit(RequestView("b", [1, 2, 3], [4]))
    drafter.drafts([RequestView("a", [5, 6, 7, 8], [5, 6])])  # a plain step: its sync waits for prefetch
    drafter.clear()
    drafter.prefetch(["a"])
    assert "a" not in spec and "b" not in spec and not drafter._state and sink == []
    drafter.drafts([RequestView("a", [5, 6, 7, 8], [5, 6, 7])])
    assert spec._requests["a"].index().tokens.tolist() == [5, 6, 7, 8, 5, 6, 7]


def test_a_width_probed_without_drafts_is_filler_at_that_width():
    """A plan of no drafts at a wider width (an idle planner's cost probe) emits the roots and
    distinct filler children at that width, drafts and looks up nothing, learns nothing from
    the filler (even where verification accepted it), and books the step to that width."""
    planner = ScriptedPlanner([7, (0, 3), 7])
    spec = Speculator(SpeculatorConfig(), planner=planner)
    drafter = BatchDrafter(spec, width=8, vocab_size=100, adaptive=True)
    reqs = [RequestView("a", [5, 6, 7, 8], [5, 6]), RequestView("b", [1, 2, 3], [4])]
    drafter.drafts(reqs)
    drafter.prefetch(["a", "b"])
    reqs = [RequestView("a", [5, 6, 7, 8], [5, 6, 7, 8, 9]), RequestView("b", [1, 2, 3], [4, 1])]
    drafts, mask = drafter.drafts(reqs, last_step_s=0.01)
    assert drafter.last_width == 3 and len(planner.drafting) == 1
    toks = check_rows(drafts, mask, 2, 3)
    assert toks[:, 0].tolist() == [9, 1] and (mask.reshape(2, 3, 3)[:, 1:, 1:] == np.eye(2, dtype=bool)).all()
    drafter.prefetch(["a", "b"])
    assert drafter.last_tree("a") is None and drafter.last_tree("b") is None
    recorded = list(planner.records)
    filler = int(toks[0, 1])
    drafter.drafts([RequestView("a", [5, 6, 7, 8], [5, 6, 7, 8, 9, filler, 4]),
                    RequestView("b", [1, 2, 3], [4, 1, 2])], last_step_s=0.01)
    assert planner.records == recorded  # the accepted filler taught nothing
    assert len(planner.steps) == 2 and planner.steps[0] > 1 and planner.steps[1] == 3  # the probe booked to 3
    assert spec._requests["a"].index().tokens.tolist()[-3:] == [9, filler, 4]


def test_a_sampled_look_syncs_its_own_requests_first_and_the_rest_beside_the_gpu(monkeypatch):
    """A look that drafts 2 of 4 requests feeds those 2 their new tokens before drafting them;
    the other 2 (no drafts this step) get theirs in prefetch, and every index ends up whole."""
    planner = ScriptedPlanner([0, 7])
    spec = Speculator(SpeculatorConfig(), planner=planner)
    drafter = BatchDrafter(spec, width=8, vocab_size=100, adaptive=True)
    texts = {f"r{i}": [10 + i, 20 + i, 30 + i] * 4 for i in range(4)}
    out = {rid: [] for rid in texts}
    views = lambda: [RequestView(rid, texts[rid], list(out[rid])) for rid in texts]  # noqa: E731
    drafter.drafts(views())  # a plain step
    drafter.prefetch(list(texts))
    for rid in out:
        out[rid].append(texts[rid][0])
    synced = []
    commit = spec.commit_drafted
    monkeypatch.setattr(spec, "commit_drafted", lambda rids, tokens: (synced.append(list(rids)), commit(rids, tokens)))
    planner.look_rows = 2
    drafts, mask = drafter.drafts(views())
    assert synced == [["r0", "r1"]] and drafter.last_width > 1
    rows = check_rows(drafts, mask, 4, drafter.last_width)
    filler = list(range(drafter.last_width - 1))  # the layout's padding: the smallest ids
    assert rows[2:, 1:].tolist() == [filler, filler] and rows[0, 1:].tolist() != filler  # r2, r3: no drafts
    drafter.prefetch(list(texts))
    assert synced == [["r0", "r1"], ["r2", "r3"]]
    assert all(spec._requests[rid].index().tokens.tolist() == texts[rid] + out[rid] for rid in texts)


def test_the_planner_weighs_everything_the_gpu_waits_for(monkeypatch):
    """The drafting time the planner is told includes emitting the arrays, not just drafting."""
    from sglang_integration import drafts as drafts_module

    planner = ScriptedPlanner([7])
    drafter = BatchDrafter(Speculator(SpeculatorConfig(), planner=planner), width=8, vocab_size=100, adaptive=True)
    rows = drafts_module.step_kernels.fixed_width_rows

    def slow_rows(*args):
        time.sleep(0.05)
        return rows(*args)

    monkeypatch.setattr(drafts_module.step_kernels, "fixed_width_rows", slow_rows)
    drafter.drafts([RequestView("a", [5, 6, 7, 8], [5, 6])])
    assert drafter.last_width > 1 and len(planner.drafting) == 1 and planner.drafting[0] >= 0.05


def test_overlap_relayed_tokens():
    # SGLang's flat accept_tokens [bs * stride] and accept_lens: row 1 accepted 3 tokens
    prev_tokens = [9, 0, 0, 0, 4, 5, 6, 0]
    prev_lens = [1, 3]
    assert missing_relayed([1, 2], prev_tokens, prev_lens, 1, 4) == ([4, 5, 6], True)
    assert missing_relayed([7], prev_tokens, prev_lens, 0, 4) == ([9], True)


@pytest.mark.parametrize("output, committed, want", [
    ([1, 2], 5, ([4, 5, 6], True)),  # one step behind: all three relayed tokens are new
    ([1, 2, 4, 5, 6], 5, ([], True)),  # caught up (an interleaved prefill): none
    ([1, 2, 4], 5, ([5, 6], True)),  # partly
    ([1, 2], None, ([4, 5, 6], True)),  # no sequence length: all
    ([1, 2], 7, ([4, 5, 6], False)),  # contradictions: all, flagged
    ([1, 2, 4, 5, 6, 7], 5, ([4, 5, 6], False)),
])
def test_relayed_tokens_align_by_committed_length(output, committed, want):
    before = list(output)
    assert missing_relayed(output, [9, 0, 0, 0, 4, 5, 6, 0], [1, 3], 1, 4, committed) == want
    assert output == before  # SGLang's list is read, never changed


def test_a_batch_of_views_gets_its_relayed_tokens_and_names_the_contradictions():
    views = [RequestView("a", [1], [7]), RequestView("b", [2], [1, 2]), RequestView("c", [3], [8, 8, 8, 8])]
    prev = [9, 0, 0, 0, 4, 5, 6, 0, 3, 0, 0, 0]
    got, misaligned = relayed_views(views, prev, [1, 3, 1], 4, [2, 4, 9])
    assert [(v.rid, v.output, v.relayed) for v in got] == [("a", [7], [9]), ("b", [1, 2], [5, 6]), ("c", [8] * 4, [3])]
    assert misaligned == [2]
    got, misaligned = relayed_views(views, prev, [1, 3, 1], 4, None)  # no sequence lengths: every relayed token
    assert [v.relayed for v in got] == [[9], [4, 5, 6], [3]] and misaligned == []


texts = st.lists(st.integers(0, 5), min_size=1, max_size=24)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=texts, steps=st.lists(st.tuples(texts, st.integers(0, 4)), min_size=1, max_size=6),
       sglang_arrays=st.booleans())
def test_a_view_with_relayed_tokens_drafts_as_its_whole_output(prompt, steps, sglang_arrays):
    """A request whose output arrives as SGLang's output_ids plus relayed tokens it lacks yet
    drafts, step by step, exactly what the same output as one list drafts (a request first seen
    with relayed tokens included), and its index holds the same text. sglang 0.5.23 keeps prompt
    and output_ids as array("q"); lists work the same."""
    kept = (lambda x: array("q", x)) if sglang_arrays else list
    split = BatchDrafter(Speculator(SpeculatorConfig(fixed_budget=5)), 6, 10)
    whole = BatchDrafter(Speculator(SpeculatorConfig(fixed_budget=5)), 6, 10)
    output = []
    for new, relayed in steps:
        output += new
        cut = max(len(output) - relayed, 0)
        got = split.drafts([RequestView("r", kept(prompt), kept(output[:cut]), output[cut:])])
        want = whole.drafts([RequestView("r", prompt, list(output))])
        assert [a.tolist() for a in got] == [a.tolist() for a in want]
    assert split.spec._requests["r"].index().tokens.tolist() == prompt + output


def test_departed_requests_are_fed_back():
    class Sink:
        def __init__(self):
            self.got = []

        def submit(self, rid, tokens):
            self.got.append((rid, list(tokens)))

    sink = Sink()
    drafter = BatchDrafter(Speculator(SpeculatorConfig(fixed_budget=3), feedback=sink), 4, 50)
    drafter.drafts([RequestView("r", [1, 2], [3])])
    drafter.drafts([RequestView("r", [1, 2], [3, 4, 5])])
    drafter.forget({"r"})
    assert sink.got == [("r", [3, 4, 5])]


def _broadcast_worker(rank, world, port, out):
    import torch.distributed as dist

    from sglang_integration.width_states import share_from_rank0

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    got = []
    # two steps of 2 requests, 2 and then 3 wide, under a launch width of 4: the width is rank 0's
    # choice, and the other ranks learn it from the one message
    for width, drafts, mask in [(2, [3, 4, 5, 6], [1, 0, 1, 1, 1, 0, 0, 1]),
                                (3, [7, 8, 9, 10, 11, 12], [1, 0, 0, 1, 1, 0, 1, 0, 1] * 2)]:
        mine = (np.array(drafts, dtype=np.int64), np.array(mask, dtype=bool), width) if rank == 0 else (None,) * 3
        d, m, w = share_from_rank0(mine[0], mine[1], 2, mine[2], dist.group.WORLD, 4)
        got.append((d.dtype.name, d.tolist(), m.dtype.name, m.tolist(), w))
    out.put((rank, got))
    dist.destroy_process_group()


def test_tensor_parallel_ranks_get_rank0_drafts():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_broadcast_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    want = [("int64", [3, 4, 5, 6], "bool", [True, False, True, True, True, False, False, True], 2),
            ("int64", [7, 8, 9, 10, 11, 12], "bool", [True, False, False, True, True, False, True, False, True] * 2, 3)]
    assert results == [(0, want), (1, want)]


@pytest.mark.parametrize("settings,message", [
    (dict(speculative_eagle_topk=1, speculative_ngram_max_bfs_breadth=1), "max-bfs-breadth 1"),
    (dict(speculative_eagle_topk=10, speculative_ngram_max_bfs_breadth=10,
          speculative_ngram_external_corpus_path="/c.jsonl"), "external-corpus-path"),
    (dict(speculative_eagle_topk=10, speculative_ngram_max_bfs_breadth=10), None),
])
def test_inherited_ngram_settings_are_checked(settings, message):
    from types import SimpleNamespace

    from sglang_integration.spec import check_ngram_settings

    cfg = SimpleNamespace(**{"speculative_ngram_external_corpus_path": None, **settings})
    if message is None:
        check_ngram_settings(cfg)
    else:
        with pytest.raises(ValueError, match=message):
            check_ngram_settings(cfg)


def test_model_shape_reads_a_vlm_text_config_and_warns_on_an_unknown_id(tmp_path, caplog):
    import json

    from sglang_integration.spec import model_shape

    text = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
            "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": text}))
    assert model_shape(str(tmp_path)).layers == 2
    with caplog.at_level("WARNING", logger="sssd.sglang"):
        assert model_shape("no-such-org/no-such-model") is None
    assert "cannot read the model config" in caplog.text


LLAMA_8B_CONFIG = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "intermediate_size": 14336, "vocab_size": 128256, "torch_dtype": "bfloat16"}


@pytest.mark.parametrize("env,want", [
    ({}, 17),  # per-batch widths: the launch width is the planner's widest
    ({"SSSD_WIDTHS": "1,3,9"}, 9),
    ({"SSSD_DRAFT_TOKENS": "6"}, 6),  # set explicitly: kept
    ({"SSSD_PER_BATCH_WIDTHS": "0"}, None),  # one width per launch: the roofline's for a full batch
])
def test_launch_width(tmp_path, env, want):
    import json
    from types import SimpleNamespace

    from client_sdk.drafting.budget import PRESETS, BudgetPlanner, Model
    from sglang_integration.spec import default_width

    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B_CONFIG))
    config = PluginConfig.from_env(env)
    cfg = SimpleNamespace(model_path=str(tmp_path), max_running_requests=48)
    got = config.draft_tokens or default_width(config, cfg)
    if want is None:  # narrower than the per-batch launch width at a full batch of an 8B model on an H100
        want = 1 + max(1, BudgetPlanner(PRESETS["h100-sxm"], Model.from_config(LLAMA_8B_CONFIG), max_budget=31)
                       .choose(48, 2048))
        assert want < 17
    assert got == want


def test_start_up_costs_are_the_hardware_roofline():
    from client_sdk.drafting.budget import PRESETS, Model, forward_time
    from sglang_integration.worker import start_up_costs

    config = PluginConfig(hardware="h200")
    costs = start_up_costs(config, LLAMA_8B_CONFIG, (1, 3, 9), max_batch=64)
    want = forward_time(PRESETS["h200"], Model.from_config(LLAMA_8B_CONFIG), 64, 9, 2048)
    assert costs.predict(64, 9) == pytest.approx(want) and costs.predict(64, 9) > costs.predict(64, 1)


def test_start_up_costs_without_a_shape_are_flat_and_say_so(caplog):
    from sglang_integration.worker import start_up_costs

    with caplog.at_level("WARNING", logger="sssd.sglang"):
        costs = start_up_costs(PluginConfig(), {"model_type": "mystery"}, (1, 3, 9), max_batch=32)
    assert costs.predict(32, 9) == costs.predict(32, 1) and "no roofline for this model config" in caplog.text


@pytest.mark.parametrize("menu", [(1, 3, 9, 17), None])  # per-batch widths (not the default grid); one width
def test_the_worker_builds_its_drafter_from_the_plugin_config(server, menu):
    """``build_drafter``, what the worker's rank 0 runs at start-up: the planner's widths are the
    menu and its first costs the roofline of SSSD_HARDWARE (per-batch widths), or every step
    drafts the launch width; the datastore and feedback are the config's, and a step drafts."""
    from client_sdk.drafting.budget import PRESETS, Model, forward_time
    from client_sdk.transport.remote import DatastoreClient
    from sglang_integration.worker import build_drafter

    with DatastoreClient(server.address) as c:
        c.create_namespace("w", 100)
        c.ingest("w", [("d", [5, 6, 7, 8, 9] * 4)])
        c.snapshot()
    config = PluginConfig(datastore=server.address, namespace="w", hardware="h200")
    drafter = build_drafter(config, 17, 100, LLAMA_8B_CONFIG, menu, max_batch=64)
    spec = drafter.spec
    try:
        assert spec.remote is not None and spec.feedback is not None and drafter.width == 17
        if menu is None:
            assert spec.planner is None and spec.config.fixed_budget == 16 and not drafter.adaptive
        else:
            want = forward_time(PRESETS["h200"], Model.from_config(LLAMA_8B_CONFIG), 64, 9, 2048)
            assert spec.planner.config.widths == menu and drafter.menu == menu and drafter.adaptive
            assert spec.planner.costs.predict(64, 9) == pytest.approx(want)  # a row for the largest batch
        assert spec.wait_for_unigrams(30)
        drafter.admit(RequestView("r", [5, 6, 7, 8, 9, 5, 6], []))
        tokens, mask = drafter.drafts([RequestView("r", [5, 6, 7, 8, 9, 5, 6], [])])
        assert tokens.shape[0] == drafter.last_width and mask.shape[0] == drafter.last_width ** 2
        if menu is None:
            assert drafter.last_width == 17 and tokens[1] == 7  # own text and datastore both say 7 follows 5 6
    finally:
        spec.close()


def test_worker_metrics_follow_the_feedback_sinks_counts():
    """The worker's feedback counters follow its sink's running counts, each change once; a
    sink that is not a FeedbackSink (or none: feedback off) adds nothing."""
    from prometheus_client import CollectorRegistry

    from client_sdk.transport.feedback import FeedbackSink
    from sglang_integration.metrics import WorkerMetrics

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    sink = FeedbackSink.__new__(FeedbackSink)  # (its counts alone: no client, no sender thread)
    sink.sent, sink.conflicts, sink.failed, sink.dropped, sink.resends = 30, 1, 2, 0, 4
    metrics.observe_feedback(sink)
    sink.sent, sink.dropped = 32, 5
    metrics.observe_feedback(sink)
    metrics.observe_feedback(sink)
    metrics.observe_feedback(None)
    metrics.observe_feedback(type("Sink", (), {"sent": [1, 2]})())
    value = registry.get_sample_value
    got = {o: value("sssd_feedback_generations_total", {"outcome": o}) for o in ("sent", "conflicts", "failed", "dropped")}
    assert got == {"sent": 32, "conflicts": 1, "failed": 2, "dropped": 5}
    assert value("sssd_feedback_resends_total") == 4


def test_worker_metrics_count_lookup_outcomes_and_breaker_openings_once():
    """The worker's Prometheus counters follow its remote source's counts: each step's upkeep
    adds what changed since the last (the breaker's openings too: drafting went on without the
    datastore), and the drafts noted on the critical path since then."""
    from prometheus_client import CollectorRegistry

    from client_sdk.transport.source import SourceStats
    from sglang_integration.metrics import WorkerMetrics

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    source = type("Source", (), {"stats": SourceStats(used=3, late=2, opened=1)})()
    metrics.drafted(4, 5)
    value = registry.get_sample_value
    assert value("sssd_drafts_total", {"width": "5"}) is None  # noted on the critical path, counted beside the GPU
    metrics.observe_upkeep(0, None, source)
    source.stats.used, source.stats.opened = 5, 2
    metrics.drafted(4, 5)
    metrics.drafted(4, 1)
    metrics.observe_upkeep(0, None, source)
    metrics.observe_upkeep(0, None, None)
    assert value("sssd_datastore_lookups_total", {"outcome": "used"}) == 5
    assert value("sssd_datastore_lookups_total", {"outcome": "late"}) == 2
    assert value("sssd_datastore_breaker_openings_total") == 2
    assert value("sssd_drafts_total", {"width": "5"}) == 8 and value("sssd_drafts_total", {"width": "1"}) == 4


def test_worker_metrics_count_drafts_when_no_upkeep_runs():
    """Drafts noted without an upkeep are counted once the note list reaches its bound: it never grows without end."""
    from prometheus_client import CollectorRegistry

    from sglang_integration.metrics import UNBOOKED_LIMIT, WorkerMetrics

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    for _ in range(UNBOOKED_LIMIT - 1):
        metrics.drafted(2, 3)
    assert registry.get_sample_value("sssd_drafts_total", {"width": "3"}) is None
    metrics.drafted(2, 3)
    assert registry.get_sample_value("sssd_drafts_total", {"width": "3"}) == 2 * UNBOOKED_LIMIT
    assert len(metrics._unbooked) == 0


@pytest.mark.parametrize("model, cuda, said", [
    ("/models/x", False, "needs a CUDA GPU"),
    ("/nonexistent/model", True, "--model-path /nonexistent/model: no such directory"),
    ("./nonexistent", True, "no such directory"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", True, ""),  # a hub id: SGLang's to fetch
    ("/", True, ""),  # (a folder that is there)
])
def test_the_smoke_test_names_a_missing_prerequisite_before_launching(model, cuda, said):
    """(On a CPU box SGLang started and failed on a torchvision import, naming neither.)"""
    from sglang_integration.smoke import missing_prerequisite

    assert (said in missing_prerequisite(model, cuda)) and bool(missing_prerequisite(model, cuda)) == bool(said)


def test_the_smoke_test_refuses_at_once_without_a_gpu(capsys):
    import torch

    from sglang_integration.smoke import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the smoke test would launch SGLang")
    assert main(["--model-path", "/models/x"]) == 2
    assert capsys.readouterr().err.startswith("smoke: the smoke test needs a CUDA GPU")


@pytest.mark.parametrize(
    "metas,speculative,want",
    [
        ([{"completion_tokens": 8, "spec_verify_ct": 4}, {"completion_tokens": 4, "spec_verify_ct": 2}], True, 2.0),
        ([{"completion_tokens": 8, "spec_verify_ct": 4}, {"completion_tokens": 4}], True, None),  # one not reported
        ([{"completion_tokens": 8, "spec_verify_ct": 0}], True, None),  # no verify step counted
        ([{"completion_tokens": 8}], False, 1.0),  # plain decoding: one token a step
    ],
)
def test_the_smoke_tests_acceptance_length_is_never_a_fallback(metas, speculative, want):
    from sglang_integration.smoke import accept_length

    assert accept_length(metas, speculative) == want
