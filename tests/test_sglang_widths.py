"""Per-batch verify widths: the pure parts (sglang_integration.widths) and the drafter's menu."""

import numpy as np
import pytest
import torch

from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.costs import StepCosts
from client_sdk.drafting.planner import PlannerConfig, StepPlanner
from client_sdk.drafting.speculator import Speculator
from sglang_integration.drafts import BatchDrafter, RequestView
from sglang_integration.widths import MenuPolicy, StepClock, round_up, widen, width_menu


@pytest.mark.parametrize("w_max,planner,menu", [
    (17, (1, 2, 3, 5, 9, 17), (1, 2, 3, 5, 9, 17)),
    (9, (1, 2, 3, 5, 9, 17), (1, 2, 3, 5, 9)),
    (12, (1, 2, 3, 5, 9, 17), (1, 2, 3, 5, 9, 12)),  # a launch width off the grid is the widest
    (4, (1, 8), (1, 4)),
    (2, (1,), (1, 2)),
])
def test_width_menu(w_max, planner, menu):
    assert width_menu(w_max, planner) == menu


def test_width_menu_needs_a_draft_token():
    with pytest.raises(ValueError, match="launch width 1"):
        width_menu(1, (1, 2))


@pytest.mark.parametrize("n,w", [(1, 1), (2, 2), (4, 5), (5, 5), (6, 9), (9, 9), (12, 9)])
def test_round_up(n, w):
    assert round_up(n, (1, 2, 3, 5, 9)) == w


def test_menu_policy_is_sglangs_adaptive_policy():
    from sglang.srt.speculative.adaptive_runtime_state import AdaptiveController, SpecRuntimeState

    class Worker:
        speculative_num_steps = 8
        applied = []

        def build_adaptive_runtime_state(self, speculative_num_steps, speculative_num_draft_tokens, cuda_graph_bs=None):
            return SpecRuntimeState(speculative_num_steps, speculative_num_draft_tokens, None, None, cuda_graph_bs,
                                    None, None, None)

        def apply_runtime_state(self, state):
            self.speculative_num_steps = state.speculative_num_steps
            self.applied.append((state.speculative_num_draft_tokens, state.target_attn_backend))

    policy, worker = MenuPolicy((1, 3, 9)), Worker()
    controller = AdaptiveController(worker, policy)
    controller.init_states(cuda_graph_bs=[1, 8, 32])
    assert worker.applied == [(9, [1, 8, 32])]  # every width's graphs cover every batch size
    policy.next_steps = 0
    controller.activate_step_by_batch(32)
    policy.next_steps = 2
    controller.activate_step_by_batch(1)
    controller.activate_step_by_batch(1)  # no switch when the width stays
    controller.on_verify_complete([1, 2], 2)  # SGLang's verify feedback switches nothing
    assert [w for w, _ in worker.applied] == [9, 1, 3]


def test_step_clock():
    clock = StepClock()
    assert clock.decode_started(10.0) is None  # the first step: nothing to measure
    clock.drafting_took(0.5)
    assert clock.decode_started(12.0) == pytest.approx(1.5)  # the interval less the drafting
    clock.other_batch()  # a prefill ran in between: the next interval is not one verify
    assert clock.decode_started(20.0) is None
    assert clock.decode_started(21.0) == pytest.approx(1.0)


def test_widen_pads_rows_to_the_launch_width():
    rows = torch.tensor([5, 6, 7, 1, 0, 0], dtype=torch.int32)
    out = widen(rows, 2, 3, 5)
    assert out.dtype == torch.int32 and out.tolist() == [5, 6, 7, 0, 0, 1, 0, 0, 0, 0]
    assert widen(rows, 2, 3, 3) is rows


def test_drafter_pads_each_step_to_a_menu_width():
    menu = (1, 3, 9)
    planner = StepPlanner(StepCosts({(1, n): 1e-3 for n in menu}), PlannerConfig(widths=menu))
    drafter = BatchDrafter(Speculator(SpeculatorConfig(), planner=planner), 9, 100, adaptive=True, menu=menu)
    prompt = [5, 6, 7, 8, 9] * 4
    out = [5, 6]
    for _ in range(12):
        drafts, mask = drafter.drafts([RequestView("r", prompt, out)])
        w = drafter.last_width
        assert w in menu and drafts.shape == (w,) and mask.shape == (w * w,)
        out = out + [7]
    with pytest.raises(ValueError, match="menu"):
        BatchDrafter(Speculator(SpeculatorConfig(), planner=planner), 9, 100, adaptive=True, menu=(2, 9))
    assert np.all(mask.reshape(w, w).diagonal())
