"""Roofline planner and the replay harness."""

import numpy as np
import pytest

from client_sdk.drafting.budget import PRESETS, AcceptanceByRank, BudgetPlanner, Model, forward_time
from client_sdk.drafting.drafters import CalibratedMerge
from sssd.bench.replay import Replayer, drafter_named, replay

LLAMA8B = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
           "intermediate_size": 14336, "vocab_size": 128256, "torch_dtype": "bfloat16"}


def test_model_from_config_counts_params():
    m = Model.from_config(LLAMA8B)
    assert 15.5e9 < m.weight_bytes < 16.5e9  # ~8.03B params in bf16
    assert m.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    with pytest.raises(ValueError, match="hidden_size"):
        Model.from_config({"num_attention_heads": 1})


def test_forward_time_regimes():
    hw, m = PRESETS["h100-sxm"], Model.from_config(LLAMA8B)
    # batch 1: memory bound, 16 tokens cost about what 1 costs
    assert forward_time(hw, m, 1, 16, 1024) / forward_time(hw, m, 1, 1, 1024) < 1.05
    # batch 256: compute bound, 8 tokens cost several times 1
    assert forward_time(hw, m, 256, 8, 1024) / forward_time(hw, m, 256, 1, 1024) > 2


@pytest.mark.parametrize(
    "p_accept,batch,expect",
    [
        (0.6, 1, lambda k: k >= 8),  # good acceptance, memory bound: speculate a lot
        (0.6, 512, lambda k: k <= 2),  # compute bound: little or none
        (0.0, 1, lambda k: k == 0),  # nothing is ever accepted: never speculate
    ],
)
def test_planner_choices(p_accept, batch, expect):
    acc = AcceptanceByRank(prior=0.0)
    acc.hits[:] = p_accept / np.arange(1, 65) ** 0.5
    planner = BudgetPlanner(PRESETS["h100-sxm"], Model.from_config(LLAMA8B), acceptance=acc)
    assert expect(planner.choose(batch, 1024))


def test_acceptance_by_rank_learns():
    acc = AcceptanceByRank(prior=0.3, decay=1.0)
    for _ in range(500):
        acc.update(np.array([0.9, 0.5, 0.1]), [0])  # the best node is always accepted, others never
    e = acc.expected_accepted()
    assert e[1] > 0.95 and e[3] - e[1] < 0.05


def test_replay_of_a_response_that_repeats_its_prompt_reaches_the_depth():
    text = list(range(10, 90))
    r = Replayer(CalibratedMerge(datastore=False), 8, None)
    r.run_case(text, text)
    assert r.result()["tau"] > 7.0  # the first step has nothing to go on, then ~8 + 1 per step


def test_replay_drafters_order():
    rng = np.random.default_rng(0)
    doc = rng.integers(0, 50, 300).tolist()
    cases = [{"prompt": doc[:40], "response": doc[40:200]}]

    class Store:
        def __init__(self):
            from sssd.bench.replay import InProcessDatastore

            self.ds = InProcessDatastore([np.array(doc)], 50)

    store = Store().ds
    taus = {d: replay(cases, drafter_named(d), [8], store.lookup, progress=False)["results"][0]["tau"]
            for d in ("none", "pld", "sssd")}
    assert taus["none"] == 1.0 and taus["sssd"] > 4.0 and taus["sssd"] > taus["pld"]


def test_the_in_process_datastore_compiles_its_kernels_when_built_not_at_the_first_timed_lookup():
    """The decode bench times its steps, the first lookup included: a cold compile there (seconds
    on this box) made a filled-datastore pass 0.5x plain. The datastore warms up as the service does."""
    from datastore_service.core.index import warm_up
    from sssd.bench.replay import InProcessDatastore

    warm_up.cache_clear()
    InProcessDatastore([np.arange(20, dtype=np.int32)], 50)
    assert warm_up.cache_info().currsize == 1


def test_a_speculator_without_measured_costs_plans_on_this_cpus_roofline(monkeypatch):
    """build_speculator(model_config) with no measured costs: the planner starts from the roofline
    of the measured local CPU, a step dearer the wider it verifies; with neither, one line."""
    from client_sdk.drafting.budget import measure_local
    from client_sdk.runtime import build_speculator

    hw = measure_local(0.1)
    assert hw.name == "local-cpu" and hw.peak_flops > 1e8 and hw.bandwidth > 1e8  # (a 2-core VM: ~1e11 and ~1e10)
    config = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
              "num_attention_heads": 9, "num_key_value_heads": 3}
    spec = build_speculator(config)
    costs = spec.planner.costs
    widths = sorted(costs.rows[1])
    assert widths == list(spec.config.planner.widths) and len(widths) > 2
    times = [costs.predict(1, n) for n in widths]
    assert all(0 < a <= b for a, b in zip(times, times[1:])) and times[-1] > times[0]
    spec.close()
    with pytest.raises(ValueError, match=r"^build_speculator needs a draft size: fixed_budget=N, or a planner's"):
        build_speculator()
    # said before a channel is opened (it came after a 5 s wait for an unreachable datastore and the
    # kernels' compile, and left that client open)
    import client_sdk.runtime as runtime

    def no_channel(*args, **kwargs):
        raise AssertionError("a channel was opened before the missing draft size was said")

    monkeypatch.setattr(runtime, "DatastoreClient", no_channel)
    with pytest.raises(ValueError, match=r"^build_speculator needs a draft size"):
        build_speculator(address="127.0.0.1:1", namespace="x")
    with pytest.raises(ValueError, match=r"^namespace 'a b' is no namespace name: it must match \^"):
        build_speculator(config, address="127.0.0.1:1", namespace="a b")  # before any channel is opened
    # (a DraftConfig as config, a dict of costs: AttributeError, at once or at the first step)
    with pytest.raises(ValueError, match=r"^config must be a SpeculatorConfig, such as SpeculatorConfig\(draft="
                                         r"DraftConfig\(...\)\), not DraftConfig$"):
        build_speculator(fixed_budget=4, address="127.0.0.1:1", config=CalibratedMerge().config)
    with pytest.raises(ValueError, match=r"^costs must be a StepCosts, such as StepCosts\(\{\(batch, width\): "
                                         r"seconds\}\), not dict$"):
        build_speculator(costs={(1, 1): 0.01})
