"""Adaptive CPU linear layers: same products as F.linear, the plan's row buckets, tuning on given timings."""

import pytest
import torch
import torch.nn.functional as F

from client_sdk.verification.cpu_linear import AdaptiveLinear, LinearPlan, adapt_linears, transposed_linear, tune
from client_sdk.verification.decoder import ReferenceDecoder


@pytest.mark.parametrize("shape", [(1, 64), (3, 64), (2, 5, 64), (4, 1, 64), (17, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_transposed_linear_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    w = torch.randn(96, 64)
    b = torch.randn(96) if bias else None
    x = torch.randn(*shape)
    y = transposed_linear(x, w, b)
    assert y.shape == (*shape[:-1], 96)
    assert y.is_contiguous()  # row-major like F.linear's, so later ops keep their fast paths
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


PLAN = LinearPlan((2, 4, 8, 16), (True, False, True, False))


@pytest.mark.parametrize("rows, transposed", [
    (0, False), (1, True),  # one row follows the grid's first count (padded to two rows)
    (2, True), (3, False), (4, False), (5, True), (8, True), (9, False), (16, False),
    (17, False), (1000, False),  # above the grid: F.linear (prefill)
])
def test_plan_buckets(rows, transposed):
    assert PLAN.use_transposed(rows) is transposed


def test_plan_table_by_rows():
    assert PLAN.by_rows() == tuple(PLAN.use_transposed(r) for r in range(17))
    assert LinearPlan().by_rows() == (False,)


def test_plan_rejects_bad_grid():
    with pytest.raises(ValueError, match="increasing"):
        LinearPlan((4, 2), (True, True))
    with pytest.raises(ValueError, match="match"):
        LinearPlan((2, 4), (True,))


def test_tune_keeps_the_faster_way_per_row_count():
    # transposed is faster up to 6 rows, linear from there on
    # transposed is faster up to 6 rows, ties (within the margin) at 8, slower from there on
    def measure(way, rows):
        return {True: 1.0, False: 1.95 if rows == 8 else 3.0}[rows <= 6] if way == "transposed" else 2.0

    plan = tune(torch.nn.Linear(4, 4), grid=(2, 6, 8, 32), measure=measure)
    assert plan.transposed == (True, True, False, False)
    assert plan.describe() == {"2": "transposed", "6": "transposed", "8": "linear", "32": "linear"}


def test_adapted_model_computes_what_it_did_and_follows_the_plan(monkeypatch):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 8, bias=False))
    x = torch.randn(3, 32)
    before = model(x)
    plan = LinearPlan((4,), (True,))
    assert adapt_linears(model, plan) is plan
    assert all(type(m) is AdaptiveLinear and m.transposed_rows == plan.by_rows() for m in (model[0], model[2]))
    calls = []
    import client_sdk.verification.cpu_linear as cpu_linear

    real = cpu_linear.transposed_linear
    monkeypatch.setattr(cpu_linear, "transposed_linear", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    assert calls == [(3, 32), (3, 48)]
    model(torch.randn(5, 32))  # above the grid: F.linear
    assert len(calls) == 2
    one = torch.randn(1, 32)
    torch.testing.assert_close(model(one), torch.nn.functional.linear(torch.relu(
        torch.nn.functional.linear(one, model[0].weight, model[0].bias)), model[2].weight), rtol=1e-5, atol=1e-5)
    assert calls[2:] == [(1, 32), (1, 48)]  # one row: padded to two, the transposed way


def test_decoder_adapts_on_cpu_only_when_asked():
    from tests.test_decoder import tiny_llama

    model = tiny_llama(seed=3)
    assert ReferenceDecoder(model, set(), linears="torch").linear_plan is None
    assert not any(type(m) is AdaptiveLinear for m in model.modules())
    dec = ReferenceDecoder(model, set())
    assert dec.linear_plan is not None and type(model.lm_head) is AdaptiveLinear
    with pytest.raises(ValueError, match="linears 'fast'"):
        ReferenceDecoder(model, set(), linears="fast")
