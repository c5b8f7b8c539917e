"""Linear layers that verify a few rows at the cost of about one, on CPU.

A decode step multiplies every weight matrix by the step's rows: one per sequence for plain
decoding, 1 + k per sequence when k draft tokens are verified. Torch's CPU ``F.linear``
computes ``x @ W.T``. On the machine measured here (MKL on a 2-core AMD EPYC VM) both of its
paths for decoding's shapes are slow: one row takes a matrix-vector kernel, and 2..~16 rows a
small-matrix GEMM path that makes a step verifying a few tokens cost 1.2-1.8x a plain one
(BENCHMARKS.md, "Verify at about one row's cost"). The same product computed the other way
round, ``(W @ x.T).T``, keeps the weights as the big streamed operand and stays near one row's
cost for a few rows; one row is padded to two to take that path.

Which way is faster depends on the CPU and its BLAS, so it is measured, not assumed:
``tune`` times both over the model's own weight matrices for a grid of row counts and
``adapt_linears`` makes each ``nn.Linear`` of the model take the faster way for the rows of
each call; above the grid's largest count (prefill) it is ``F.linear``. Plain decoding and
verification go through the same layers, so both get faster and their comparison stays fair.
Results agree with ``F.linear`` to float rounding, like any change of GEMM path (torch's own
path is not bit-identical across row counts either); the decoders' identical-to-plain checks
cover what that allows.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# Row counts the plan is measured at: every count up to the widest verify of one sequence (17)
# (a BLAS's speed is lumpy in the count: 13 rows can be slow where 16 are fast), then batches of
# widths up to 8 x 17.
GRID = tuple(range(1, 18)) + (24, 34, 48, 68, 136)
TUNE_BYTES = 128 << 20  # time over at least this much weight, several times what a CPU's caches hold
MARGIN = 0.10  # the transposed way must be this much faster: where the two tie, torch's own path stays
WAYS = ("linear", "transposed")


@dataclasses.dataclass(frozen=True)
class LinearPlan:
    """For each grid row count, whether the transposed product is the faster way; a call with
    ``rows`` rows follows the smallest grid count >= rows (F.linear above the grid)."""

    grid: tuple[int, ...] = ()
    transposed: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if len(self.grid) != len(self.transposed) or list(self.grid) != sorted(set(self.grid)):
            raise ValueError(f"LinearPlan: grid {self.grid} must be increasing and match transposed {self.transposed}")

    def use_transposed(self, rows: int) -> bool:
        if rows < 1 or not self.grid or rows > self.grid[-1]:
            return False
        return self.transposed[bisect.bisect_left(self.grid, rows)]

    def by_rows(self) -> tuple[bool, ...]:
        """``use_transposed`` for 0 .. grid[-1] rows, as a table indexed by the row count."""
        return tuple(self.use_transposed(r) for r in range((self.grid[-1] if self.grid else 0) + 1))

    def describe(self) -> dict[str, str]:
        return {str(r): WAYS[int(t)] for r, t in zip(self.grid, self.transposed)}


class AdaptiveLinear(torch.nn.Linear):
    """An ``nn.Linear`` that computes ``(W @ x.T).T`` where its plan says that is faster.
    ``transposed_rows[r]``: whether a call with r rows does (``LinearPlan.by_rows``)."""

    transposed_rows: tuple[bool, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows < len(self.transposed_rows) and self.transposed_rows[rows] and x.is_cpu:
            return transposed_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def transposed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed as ``(weight @ x.T).T``; one row is padded to
    two (BLAS libraries send one column to a matrix-vector kernel, the slow path avoided here)."""
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    if rows == 1:
        flat = flat.expand(2, -1).contiguous()  # a zero-stride operand would leave the BLAS path
    # back to row-major: the column-major view would send later ops off their fast paths
    # (SDPA's CPU flash kernel wants the head dimension contiguous, else it takes the math path)
    y = torch.mm(weight, flat.t())[:, :rows].t().contiguous()
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight.shape[0])


Measure = Callable[[str, int], float]


def _layers_measure(linears: Sequence[torch.nn.Linear]) -> Measure:
    """Seconds of one pass over ``linears`` with ``rows`` rows, one way (inputs made once per count)."""

    @functools.cache
    def inputs(rows: int) -> list[torch.Tensor]:
        return [torch.randn(rows, m.in_features, dtype=m.weight.dtype) for m in linears]

    def measure(way: str, rows: int) -> float:
        xs = inputs(rows)
        product = transposed_linear if way == "transposed" else F.linear
        with torch.no_grad():
            t = time.perf_counter()
            for m, x in zip(linears, xs):
                product(x, m.weight, m.bias)
            return time.perf_counter() - t

    return measure


def tune(model: torch.nn.Module, grid: Sequence[int] = GRID, repeats: int = 3, measure: Measure | None = None) -> LinearPlan:
    """Time both ways over the model's linear layers (the first ones holding TUNE_BYTES of
    weights) at each grid row count, in rounds over the grid with the two ways alternating; the
    transposed way is kept where its best pass beats torch's by MARGIN."""
    if measure is None:
        linears, held = [], 0
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and held < TUNE_BYTES:
                linears.append(m)
                held += m.weight.numel() * m.weight.element_size()
        measure = _layers_measure(linears)
    for rows in grid:  # warm-up: the first pass at a new shape pays for allocation
        for way in WAYS:
            measure(way, rows)
    best = {(way, rows): float("inf") for way in WAYS for rows in grid}
    for _ in range(repeats):  # rounds over the whole grid, so a slow spell of the machine hits one round
        for rows in grid:
            for way in WAYS:
                best[way, rows] = min(best[way, rows], measure(way, rows))
    transposed = [best["transposed", rows] < (1 - MARGIN) * best["linear", rows] for rows in grid]
    return LinearPlan(tuple(grid), tuple(transposed))


def adapt_linears(model: torch.nn.Module, plan: LinearPlan | None = None) -> LinearPlan:
    """Make every plain ``nn.Linear`` of a CPU model an ``AdaptiveLinear`` following ``plan``
    (measured by ``tune`` when None), in place; returns the plan."""
    plan = plan if plan is not None else tune(model)
    table = plan.by_rows()
    for m in model.modules():
        if type(m) in (torch.nn.Linear, AdaptiveLinear):
            m.__class__ = AdaptiveLinear
            m.transposed_rows = table
    return plan
