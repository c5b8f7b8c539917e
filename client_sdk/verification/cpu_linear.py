"""Linear layers that verify a few rows at the cost of about one, on CPU.

A decode step multiplies every weight matrix by the step's rows: one per sequence for plain
decoding, 1 + k per sequence when k draft tokens are verified. Torch's CPU ``F.linear``
computes ``x @ W.T``; for one row that is a matrix-vector product that streams the weights
once, but for 2..~16 rows the BLAS takes a small-matrix GEMM path that, on the machines
measured here (MKL on an AMD EPYC VM), costs 1.5-2x the one-row product (BENCHMARKS.md,
"What one verify step costs here"). The same product computed the other way round,
``(W @ x.T).T``, keeps the weights as the big streamed operand and stays near the cost of
one row for a few rows.

Which way is faster depends on the CPU and its BLAS, so it is measured, not assumed:
``tune`` times both over the model's own weight matrices for a grid of row counts and
``adapt_linears`` makes each ``nn.Linear`` of the model take the faster way for the rows of
each call. One row and more than the grid's largest count always take ``F.linear``, so plain
single-sequence decoding and prefill run exactly as before. Results agree with ``F.linear``
to float rounding, like any change of GEMM path (torch's own path is not bit-identical
across row counts either); the decoders' identical-to-plain checks cover what that allows.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# Row counts the plan is measured at: the planner's widths 1 + k (1, 2, 3, 5, 9, 17) and their
# neighbours, then batches of them up to 8 x 17.
GRID = (2, 3, 4, 5, 6, 8, 9, 12, 16, 17, 24, 34, 48, 68, 96, 136)
TUNE_BYTES = 64 << 20  # time over at least this much weight, more than a CPU's caches hold
WAYS = ("linear", "transposed")


@dataclasses.dataclass(frozen=True)
class LinearPlan:
    """For each grid row count, whether the transposed product is the faster way; a call with
    ``rows`` rows follows the smallest grid count >= rows (F.linear above the grid or at 1 row)."""

    grid: tuple[int, ...] = ()
    transposed: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if len(self.grid) != len(self.transposed) or list(self.grid) != sorted(set(self.grid)):
            raise ValueError(f"LinearPlan: grid {self.grid} must be increasing and match transposed {self.transposed}")

    def use_transposed(self, rows: int) -> bool:
        if rows <= 1 or not self.grid or rows > self.grid[-1]:
            return False
        return self.transposed[bisect.bisect_left(self.grid, rows)]

    def describe(self) -> dict[str, str]:
        return {str(r): WAYS[int(t)] for r, t in zip(self.grid, self.transposed)}


class AdaptiveLinear(torch.nn.Linear):
    """An ``nn.Linear`` that computes ``(W @ x.T).T`` where its ``plan`` says that is faster."""

    plan: LinearPlan = LinearPlan()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features if x.dim() else 0
        if x.device.type != "cpu" or not self.plan.use_transposed(rows):
            return F.linear(x, self.weight, self.bias)
        return transposed_linear(x, self.weight, self.bias)


def transposed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed as ``(weight @ x.T).T``."""
    y = torch.mm(weight, x.reshape(-1, x.shape[-1]).t()).t()
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight.shape[0])


Measure = Callable[[str, int], float]


def _layers_measure(linears: Sequence[torch.nn.Linear], repeats: int) -> Measure:
    """Best-of-``repeats`` seconds of one pass over ``linears`` with ``rows`` rows, one way."""

    def measure(way: str, rows: int) -> float:
        xs = [torch.randn(rows, m.in_features, dtype=m.weight.dtype) for m in linears]
        best = float("inf")
        with torch.no_grad():
            for _ in range(repeats):
                t = time.perf_counter()
                for m, x in zip(linears, xs):
                    if way == "transposed":
                        transposed_linear(x, m.weight, m.bias)
                    else:
                        F.linear(x, m.weight, m.bias)
                best = min(best, time.perf_counter() - t)
        return best

    return measure


def tune(model: torch.nn.Module, grid: Sequence[int] = GRID, repeats: int = 3, measure: Measure | None = None) -> LinearPlan:
    """Time both ways over the model's linear layers (the first ones holding TUNE_BYTES of
    weights) at each grid row count, the two ways alternating, and keep the faster."""
    if measure is None:
        linears, held = [], 0
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and held < TUNE_BYTES:
                linears.append(m)
                held += m.weight.numel() * m.weight.element_size()
        measure = _layers_measure(linears, repeats)
    transposed = []
    for rows in grid:
        measure("linear", rows)  # warm-up: the first pass at a new shape pays for allocation
        transposed.append(measure("transposed", rows) < measure("linear", rows))
    return LinearPlan(tuple(grid), tuple(transposed))


def adapt_linears(model: torch.nn.Module, plan: LinearPlan | None = None) -> LinearPlan:
    """Make every plain ``nn.Linear`` of a CPU model an ``AdaptiveLinear`` following ``plan``
    (measured by ``tune`` when None), in place; returns the plan."""
    plan = plan if plan is not None else tune(model)
    for m in model.modules():
        if type(m) in (torch.nn.Linear, AdaptiveLinear):
            m.__class__ = AdaptiveLinear
            m.plan = plan
    return plan
