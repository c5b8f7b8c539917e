"""Linear layers that verify a few rows at the cost of about one, on CPU.

A decode step multiplies every weight matrix by the step's rows: one per sequence for plain
decoding, 1 + k per sequence when k draft tokens are verified. Torch's CPU ``F.linear``
computes ``x @ W.T`` through MKL. On the machine measured here (a 2-core AMD EPYC VM) both of
its paths for decoding's shapes are slow: one row takes a matrix-vector kernel, and 2..~16 rows
a small-matrix GEMM path that makes a step verifying a few tokens cost 1.2-1.8x a plain one
(BENCHMARKS.md, "Verify at about one row's cost"). Two other ways compute the same product:

- ``transposed``: ``(W @ x.T).T`` keeps the weights as the big streamed operand and stays near
  one row's cost for a few rows; one row is padded to two to take that path.
- ``onednn``: oneDNN's inner product over a copy of the weights packed once into its blocked
  layout (what ``torch.compile``'s CPU freezing does). It streams the weights at about the same
  cost for 1 to ~17 rows, so verifying 16 tokens costs little more than decoding one. The packed
  copy holds as many bytes as the weights again (``packed_bytes``).

Which way is faster depends on the CPU and its BLAS, so it is measured, not assumed:
``tune`` times every available way over the model's own weight matrices for a grid of row
counts, and ``adapt_linears`` makes each ``nn.Linear`` of the model take the fastest way for
the rows of each call; above the grid's largest count (prefill) it is ``F.linear``. Plain
decoding and verification go through the same layers, so both get faster and their comparison
stays fair. Results agree with ``F.linear`` to float rounding, like any change of GEMM path
(torch's own path is not bit-identical across row counts either); the decoders'
identical-to-plain checks cover what that allows. Adapt a model after its weights are final:
a packed copy does not follow later changes of the weights.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import time
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# Row counts the plan is measured at: every count up to the widest verify of one sequence (17)
# (a BLAS's speed is lumpy in the count: 13 rows can be slow where 16 are fast), then batches of
# widths up to 8 x 17.
GRID = tuple(range(1, 18)) + (24, 34, 48, 68, 136)
TUNE_BYTES = 128 << 20  # time over at least this much weight, several times what a CPU's caches hold
MARGIN = 0.10  # another way must be this much faster than F.linear: where they tie, torch's own path stays
LINEAR, TRANSPOSED, ONEDNN = WAYS = ("linear", "transposed", "onednn")


@dataclasses.dataclass(frozen=True)
class LinearPlan:
    """For each grid row count, the way its products take (one of WAYS); a call with ``rows``
    rows follows the smallest grid count >= rows (F.linear above the grid)."""

    grid: tuple[int, ...] = ()
    ways: tuple[str, ...] = ()
    above: str = LINEAR  # the way of calls with more rows than the grid's largest count (a prefill)
    chunk: int = 0  # calls of more rows take them this many at a time (0: all at once); see tune_uniform

    def __post_init__(self) -> None:
        if len(self.grid) != len(self.ways) or list(self.grid) != sorted(set(self.grid)):
            raise ValueError(f"LinearPlan: grid {self.grid} must be increasing and match ways {self.ways}")
        if unknown := set(self.ways + (self.above,)) - set(WAYS):
            raise ValueError(f"LinearPlan: unknown ways {sorted(unknown)}; one of {', '.join(WAYS)}")

    def way(self, rows: int) -> str:
        if rows < 1 or not self.grid:
            return LINEAR
        return self.above if rows > self.grid[-1] else self.ways[bisect.bisect_left(self.grid, rows)]

    def by_rows(self) -> tuple[str, ...]:
        """``way`` for 0 .. grid[-1] rows, as a table indexed by the row count."""
        return tuple(self.way(r) for r in range((self.grid[-1] if self.grid else 0) + 1))

    def describe(self) -> dict[str, str]:
        out = dict(zip(map(str, self.grid), self.ways))
        out = out if self.above == LINEAR else {**out, f">{self.grid[-1]}": self.above}
        return {**out, "chunk": str(self.chunk)} if self.chunk else out


class AdaptiveLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose product takes the way its plan names for the call's row count.
    ``row_ways[r]``: the way of a call with r rows (``LinearPlan.by_rows``); ``packed``: the
    weights in oneDNN's layout, where the plan uses that way."""

    row_ways: tuple[str, ...] = ()
    above: str = LINEAR  # LinearPlan.above
    chunk: int = 0  # LinearPlan.chunk
    packed: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if self.chunk and rows > self.chunk and x.is_cpu:
            flat = x.reshape(rows, self.in_features)
            parts = [self.forward(part) for part in flat.split(self.chunk)]
            return torch.cat(parts).reshape(*x.shape[:-1], self.out_features)
        way = (self.row_ways[rows] if rows < len(self.row_ways) else self.above) if x.is_cpu else LINEAR
        if way == ONEDNN:
            return onednn_linear(x, self.packed, self.bias)
        if way == TRANSPOSED:
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


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """A copy of ``weight`` in oneDNN's blocked layout, for ``onednn_linear``."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` through oneDNN's inner product, ``packed = pack_weight(weight)``."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@functools.cache
def onednn_usable(dtype: torch.dtype) -> bool:
    """Whether this torch build and CPU run ``onednn_linear`` for ``dtype`` (warns once if not)."""
    why = "mkldnn is not available in this torch build"
    if torch.backends.mkldnn.is_available():
        w, x = torch.ones(4, 4, dtype=dtype), torch.ones(2, 4, dtype=dtype)
        try:
            if torch.equal(onednn_linear(x, pack_weight(w), None), F.linear(x, w)):
                return True
            why = "its product differs from F.linear's"
        except (RuntimeError, AttributeError) as e:  # no mkldnn ops in the build, or the CPU lacks the dtype's ISA
            why = str(e).splitlines()[0]
    warnings.warn(f"cpu_linear: oneDNN's linear is not usable for {dtype} here ({why}); tuning the other ways only",
                  RuntimeWarning, stacklevel=2)
    return False


Measure = Callable[[str, int], float]


def _products() -> dict[str, Callable]:
    """Each way's product, (x, weight or packed weight, bias) -> y (looked up at call time)."""
    return {LINEAR: F.linear, TRANSPOSED: transposed_linear, ONEDNN: onednn_linear}


def _layers_measure(linears: Sequence[torch.nn.Linear]) -> Measure:
    """Seconds of one pass over ``linears`` with ``rows`` rows, one way (inputs made once per count)."""

    @functools.cache
    def inputs(rows: int) -> list[torch.Tensor]:
        return [torch.randn(rows, m.in_features, dtype=m.weight.dtype) for m in linears]

    @functools.cache
    def weights(way: str) -> list[torch.Tensor]:  # packed once, on oneDNN's first pass
        return [pack_weight(m.weight) if way == ONEDNN else m.weight for m in linears]

    products = _products()

    def measure(way: str, rows: int) -> float:
        xs, ws, product = inputs(rows), weights(way), products[way]
        with torch.no_grad():
            t = time.perf_counter()
            for m, w, x in zip(linears, ws, xs):
                product(x, w, m.bias)
            return time.perf_counter() - t

    return measure


def _model_linears(model: torch.nn.Module, bytes_: float = float("inf")) -> list[torch.nn.Linear]:
    """The model's linear layers, the first ones holding ``bytes_`` of weights."""
    linears, held = [], 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and held < bytes_:
            linears.append(m)
            held += m.weight.numel() * m.weight.element_size()
    return linears


def _usable_ways(linears: Sequence[torch.nn.Linear]) -> tuple[str, ...]:
    dtype = linears[0].weight.dtype if linears else torch.float32
    return WAYS if onednn_usable(dtype) else (LINEAR, TRANSPOSED)


def _timings(linears: Sequence[torch.nn.Linear], grid: Sequence[int], repeats: int, measure: Measure | None,
             ways: Sequence[str]) -> dict[tuple[str, int], float]:
    """{(way, rows): the best of ``repeats`` passes}, in rounds over the grid with the ways taking turns."""
    measure = measure or _layers_measure(linears)
    for rows in grid:  # warm-up: the first pass at a new shape pays for allocation
        for way in ways:
            measure(way, rows)
    best = {(way, rows): float("inf") for way in ways for rows in grid}
    for _ in range(repeats):  # rounds over the whole grid, so a slow spell of the machine hits one round
        for rows in grid:
            for way in ways:
                best[way, rows] = min(best[way, rows], measure(way, rows))
    return best


def tune(model: torch.nn.Module, grid: Sequence[int] = GRID, repeats: int = 3, measure: Measure | None = None,
         ways: Sequence[str] | None = None) -> LinearPlan:
    """Time ``ways`` (default: every way this build and CPU can run for the model's dtype) over
    the model's linear layers (the first ones holding TUNE_BYTES of weights) at each grid row
    count, in rounds over the grid with the ways taking turns. Each count takes the way with
    the best pass if that beats F.linear's by MARGIN, else F.linear."""
    linears = _model_linears(model, TUNE_BYTES)
    ways = _usable_ways(linears) if ways is None else ways
    if LINEAR not in ways:
        raise ValueError(f"tune: ways {tuple(ways)} must include {LINEAR!r}, the baseline")
    best = _timings(linears, grid, repeats, measure, ways)
    chosen = []
    for rows in grid:
        fastest = min(ways, key=lambda w: best[w, rows])
        chosen.append(fastest if best[fastest, rows] < (1 - MARGIN) * best[LINEAR, rows] else LINEAR)
    return LinearPlan(tuple(grid), tuple(chosen))


class NoInvariantWay(ValueError):
    """No linear way keeps a row's product alike at every row count (``tune_uniform``)."""


MIN_CHUNK = 17  # a uniform way must keep rows alike up to this count: one sequence's widest verify
CHUNK_LIMIT = 64  # invariant_rows looks no further: calls of more rows go 64 at a time at most


def invariant_rows(model: torch.nn.Module, way: str, up_to: int = CHUNK_LIMIT) -> int:
    """The largest n <= ``up_to`` such that ``way`` gives a row the same bits alone and among any
    2..n rows, on one layer of each weight shape of the model (random inputs; oneDNN's and
    torch's bfloat16 products, for one, change kernel above 32 rows here)."""
    products = _products()
    shapes = {}
    for m in _model_linears(model):
        shapes.setdefault((tuple(m.weight.shape), m.weight.dtype), m)
    gen = torch.Generator().manual_seed(0)
    n = up_to
    with torch.no_grad():
        for m in shapes.values():
            w = pack_weight(m.weight) if way == ONEDNN else m.weight
            x = torch.randn(up_to, m.in_features, generator=gen).to(m.weight.dtype)
            alone = torch.cat([products[way](x[j : j + 1], w, m.bias) for j in range(up_to)])
            n = next((k - 1 for k in range(2, n + 1) if not torch.equal(products[way](x[:k], w, m.bias), alone[:k])), n)
    return n


def tune_uniform(model: torch.nn.Module, grid: Sequence[int] = GRID, repeats: int = 3,
                 measure: Measure | None = None, ways: Sequence[str] | None = None) -> LinearPlan:
    """One way for every row count, so that a row's product never depends on how many rows its
    call has (what exact verification needs): the fastest over the whole grid (sum of its best
    passes) among the ways that keep rows alike up to at least MIN_CHUNK rows
    (``invariant_rows``); calls of more rows than that way keeps alike take them that many at a
    time. ValueError when no way qualifies."""
    linears = _model_linears(model, TUNE_BYTES)
    keeps = {w: invariant_rows(model, w) for w in (_usable_ways(linears) if ways is None else ways)}
    ways = [w for w, n in keeps.items() if n >= MIN_CHUNK]
    if not ways:
        raise NoInvariantWay("no linear way computes a row the same whatever the row count, for this model's dtype on "
                         "this CPU (bfloat16 does on CPUs with AVX512-BF16 or AMX; float32's GEMM does not)")
    best = _timings(linears, grid, repeats, measure, ways)
    way = min(ways, key=lambda w: sum(best[w, rows] for rows in grid))
    return LinearPlan(tuple(grid), (way,) * len(grid), above=way, chunk=keeps[way])


def adapt_linears(model: torch.nn.Module, plan: LinearPlan | None = None) -> LinearPlan:
    """Make every plain ``nn.Linear`` of a CPU model an ``AdaptiveLinear`` following ``plan``
    (measured by ``tune`` when None), in place, packing its weights where the plan uses
    oneDNN; returns the plan."""
    plan = plan if plan is not None else tune(model)
    table = plan.by_rows()
    for m in model.modules():
        if type(m) in (torch.nn.Linear, AdaptiveLinear):
            m.__class__ = AdaptiveLinear
            m.row_ways, m.above, m.chunk = table, plan.above, plan.chunk
            m.packed = pack_weight(m.weight) if ONEDNN in (*table, plan.above) else None
    return plan


def packed_bytes(model: torch.nn.Module) -> int:
    """Bytes the adapted model's packed weight copies hold (0 where no count uses oneDNN)."""
    return sum(m.weight.numel() * m.weight.element_size() for m in model.modules()
               if isinstance(m, AdaptiveLinear) and m.packed is not None)
