"""Adaptive CPU linear layers: same products as F.linear, the plan's row buckets, tuning on given timings."""

import pytest
import torch
import torch.nn.functional as F

from client_sdk.verification import cpu_linear
from client_sdk.verification.cpu_linear import (AdaptiveLinear, LinearPlan, adapt_linears, onednn_linear,
                                                onednn_usable, pack_weight, packed_bytes, transposed_linear, tune,
                                                tune_uniform)
from client_sdk.verification.decoder import ReferenceDecoder

SHAPES = [(1, 64), (3, 64), (2, 5, 64), (4, 1, 64), (17, 64)]
needs_onednn = pytest.mark.skipif(not onednn_usable(torch.float32), reason="oneDNN's linear is not usable here")


PRODUCTS = {"transposed": transposed_linear,
            "onednn": pytest.param(lambda x, w, b: onednn_linear(x, pack_weight(w), b), marks=needs_onednn)}


@pytest.mark.parametrize("product", PRODUCTS.values(), ids=PRODUCTS.keys())
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_each_way_equals_f_linear(product, shape, bias):
    torch.manual_seed(0)
    w = torch.randn(96, 64)
    b = torch.randn(96) if bias else None
    x = torch.randn(*shape)
    y = product(x, w, b)
    assert y.shape == (*shape[:-1], 96)
    assert y.is_contiguous()  # row-major like F.linear's, so later ops keep their fast paths
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


PLAN = LinearPlan((2, 4, 8, 16), ("transposed", "linear", "onednn", "linear"))


@pytest.mark.parametrize("rows, way", [
    (0, "linear"), (1, "transposed"),  # one row follows the grid's first count (padded to two rows)
    (2, "transposed"), (3, "linear"), (4, "linear"), (5, "onednn"), (8, "onednn"), (9, "linear"), (16, "linear"),
    (17, "linear"), (1000, "linear"),  # above the grid: F.linear (prefill)
])
def test_plan_buckets(rows, way):
    assert PLAN.way(rows) == way


def test_plan_table_by_rows():
    assert PLAN.by_rows() == tuple(PLAN.way(r) for r in range(17))
    assert LinearPlan().by_rows() == ("linear",)


def test_plan_rejects_bad_grid():
    with pytest.raises(ValueError, match="increasing"):
        LinearPlan((4, 2), ("transposed", "transposed"))
    with pytest.raises(ValueError, match="match"):
        LinearPlan((2, 4), ("transposed",))
    with pytest.raises(ValueError, match="unknown ways \\['fast'\\]"):
        LinearPlan((2,), ("fast",))


def test_tune_keeps_the_fastest_way_per_row_count():
    # transposed is fastest up to 4 rows; oneDNN from 6, but within the margin of F.linear at 8;
    # F.linear from 16 on
    def measure(way, rows):
        if way == "transposed":
            return 1.0 if rows <= 4 else 3.0
        if way == "onednn":
            return {2: 1.5, 6: 1.2, 8: 1.85}.get(rows, 2.5)
        return 2.0

    plan = tune(torch.nn.Linear(4, 4), grid=(2, 6, 8, 32), measure=measure)
    assert plan.ways == ("transposed", "onednn", "linear", "linear")
    assert plan.describe() == {"2": "transposed", "6": "onednn", "8": "linear", "32": "linear"}
    only = tune(torch.nn.Linear(4, 4), grid=(2, 6), measure=measure, ways=("linear", "onednn"))
    assert only.ways == ("onednn", "onednn")
    with pytest.raises(ValueError, match="must include 'linear'"):
        tune(torch.nn.Linear(4, 4), grid=(2,), measure=measure, ways=("onednn",))


def test_tune_uniform_takes_the_fastest_invariant_way_for_every_row_count(monkeypatch):
    # onednn is fastest in sum but keeps rows alike only up to 8 (< MIN_CHUNK); transposed beats linear
    times = {"linear": {2: 1.0, 6: 3.0}, "transposed": {2: 1.5, 6: 2.0}, "onednn": {2: 0.1, 6: 0.1}}
    keeps = {"linear": 64, "transposed": 32, "onednn": 8}
    monkeypatch.setattr(cpu_linear, "invariant_rows", lambda model, way: keeps[way])
    plan = tune_uniform(torch.nn.Linear(4, 4), grid=(2, 6), measure=lambda way, rows: times[way][rows],
                        ways=("linear", "transposed", "onednn"))
    assert plan.ways == ("transposed", "transposed") and plan.above == "transposed" and plan.chunk == 32
    assert plan.describe() == {"2": "transposed", "6": "transposed", ">6": "transposed", "chunk": "32"}
    assert [plan.way(r) for r in (1, 6, 7, 1000)] == ["transposed"] * 4  # above the grid too (prefill)
    monkeypatch.setattr(cpu_linear, "invariant_rows", lambda model, way: 16)
    with pytest.raises(ValueError, match="no linear way computes a row the same"):
        tune_uniform(torch.nn.Linear(4, 4), grid=(2,), measure=lambda way, rows: 1.0)


def test_invariant_rows_finds_where_a_ways_rows_start_to_depend_on_the_count(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 8))
    real = F.linear
    by_row = lambda x, w, b=None: torch.cat([real(row[None], w, b) for row in x])  # noqa: E731 - alike at any count
    monkeypatch.setattr(cpu_linear.F, "linear", by_row)
    assert cpu_linear.invariant_rows(model, "linear", up_to=40) == 40
    monkeypatch.setattr(cpu_linear.F, "linear", lambda x, w, b=None: by_row(x, w, b) + (x.shape[0] > 32))
    assert cpu_linear.invariant_rows(model, "linear", up_to=40) == 32


def test_an_adapted_layer_takes_the_plans_way_above_the_grid(monkeypatch):
    layer = torch.nn.Linear(64, 32)
    adapt_linears(layer, LinearPlan((2,), ("linear",), above="transposed"))
    called = []
    monkeypatch.setattr(cpu_linear, "transposed_linear", lambda x, w, b: called.append(x.shape[0]) or F.linear(x, w, b))
    layer(torch.randn(2, 64))
    layer(torch.randn(9, 64))
    assert called == [9]


def test_a_chunked_layer_takes_a_calls_rows_a_chunk_at_a_time(monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    adapt_linears(layer, LinearPlan((2,), ("linear",), above="linear", chunk=4))
    calls = []
    real = F.linear
    monkeypatch.setattr(cpu_linear.F, "linear", lambda x, w, b=None: calls.append(x.shape[0]) or real(x, w, b))
    x = torch.randn(2, 5, 64)  # 10 rows: 4 + 4 + 2, in order, back in the input's shape
    y = layer(x)
    assert calls == [4, 4, 2] and y.shape == (2, 5, 32)
    torch.testing.assert_close(y, real(x, layer.weight, layer.bias))


def test_onednn_usable_warns_once_and_says_why(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    onednn_usable.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="not usable for torch.float64 here \\(mkldnn is not available"):
            assert onednn_usable(torch.float64) is False
        assert onednn_usable(torch.float64) is False  # cached: no second warning (pytest's filters would raise)
    finally:
        onednn_usable.cache_clear()


def _counting(monkeypatch, name: str) -> list:
    """Patch cpu_linear's ``name`` product to record the input shape of each call."""
    calls, real = [], getattr(cpu_linear, name)
    monkeypatch.setattr(cpu_linear, name, lambda *a: calls.append(tuple(a[0].shape)) or real(*a))
    return calls


def test_adapted_model_computes_what_it_did_and_follows_the_plan(monkeypatch):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 8, bias=False))
    x, one = torch.randn(3, 32), torch.randn(1, 32)
    before, before_one = model(x), model(one)
    plan = LinearPlan((4,), ("transposed",))
    assert adapt_linears(model, plan) is plan
    assert all(type(m) is AdaptiveLinear and m.row_ways == plan.by_rows() and m.packed is None for m in model[::2])
    assert packed_bytes(model) == 0
    calls = _counting(monkeypatch, "transposed_linear")
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    assert calls == [(3, 32), (3, 48)]
    model(torch.randn(5, 32))  # above the grid: F.linear
    assert len(calls) == 2
    torch.testing.assert_close(model(one), before_one, rtol=1e-5, atol=1e-5)
    assert calls[2:] == [(1, 32), (1, 48)]  # one row: padded to two, the transposed way


@needs_onednn
def test_adapted_model_packs_its_weights_for_onednn(monkeypatch):
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 8, bias=False))
    x = torch.randn(2, 3, 32)
    before = model(x)
    adapt_linears(model, LinearPlan((2, 8), ("transposed", "onednn")))
    assert all(m.packed is not None for m in model[::2])
    assert packed_bytes(model) == 4 * (32 * 48 + 48 * 8)  # a second copy of every weight
    onednn, transposed = _counting(monkeypatch, "onednn_linear"), _counting(monkeypatch, "transposed_linear")
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)  # 6 rows: oneDNN
    assert onednn == [(2, 3, 32), (2, 3, 48)] and transposed == []
    model(torch.randn(2, 32))
    assert transposed == [(2, 32), (2, 48)] and len(onednn) == 2


def test_decoder_adapts_on_cpu_only_when_asked():
    from tests.test_decoder import tiny_llama

    model = tiny_llama(seed=3)
    assert ReferenceDecoder(model, set(), linears="torch").linear_plan is None
    assert not any(type(m) is AdaptiveLinear for m in model.modules())
    dec = ReferenceDecoder(model, set())
    assert dec.linear_plan is not None and type(model.lm_head) is AdaptiveLinear
    fields = dec.linear_fields()
    assert fields["linears"] == "adaptive" and fields["linear_plan"] == dec.linear_plan.describe()
    assert fields["linear_packed_mb"] == round(packed_bytes(model) / 2**20, 1)
    with pytest.raises(ValueError, match="linears 'fast'"):
        ReferenceDecoder(model, set(), linears="fast")
