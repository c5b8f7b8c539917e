"""What a decode step costs per (batch, width), learned online: the planner's cost table."""

from __future__ import annotations

import math

import numpy as np


class StepCosts:
    """Seconds of one decode step (all but drafting) per (batch, width), learned online.

    predict(b, n) = drift * cell[b][n], interpolated between measured widths and scaled
    linearly from the nearest measured batch (batching never costs more than linear). An
    observation first moves ``drift`` towards explaining it (a change every width shares),
    then the observed cell absorbs part of what is left (a change of that width alone).

    ``noise`` is how much the steps' times scatter around the table: the mean squared log error
    of the steps that were not probes (a running mean over the first ones, then followed at
    ``noise_rate``). A probe is one step: where times scatter (another process takes the CPU
    in bursts, and a step costs 1x or 3x at random) one probe says little about its width, so
    ``probe_weight`` trusts it less.
    """

    def __init__(self, table: dict[tuple[int, int], float], drift_rate: float = 0.3, noise_rate: float = 0.05) -> None:
        if not table:
            raise ValueError("a step-cost table needs at least one (batch, width) entry")
        self.rows: dict[int, dict[int, float]] = {}
        for (b, n), t in table.items():
            self.rows.setdefault(b, {})[n] = float(t)
        self.drift = 1.0
        self.drift_rate = drift_rate
        self.last_seen: dict[tuple[int, int], int] = {}
        self.noise, self.noise_rate, self._noise_seen = 0.0, noise_rate, 0

    def _row(self, batch: int) -> tuple[dict[int, float], float]:
        if batch in self.rows:
            return self.rows[batch], 1.0
        b = min(self.rows, key=lambda x: (abs(x - batch), x))
        return self.rows[b], batch / b

    def cell(self, batch: int, width: int) -> float:
        """The table's value (without drift) at this batch and width."""
        row, scale = self._row(batch)
        if width in row:  # the grid widths: every step asks for them (this runs on the critical path)
            return row[width] * scale
        ns = sorted(row)
        ts = [row[n] for n in ns]
        if width >= ns[-1] and len(ns) > 1:
            slope = (ts[-1] - ts[-2]) / (ns[-1] - ns[-2])
            return (ts[-1] + slope * (width - ns[-1])) * scale
        return float(np.interp(width, ns, ts)) * scale

    def predict(self, batch: int, width: int) -> float:
        return self.drift * self.cell(batch, width)

    def observe(self, batch: int, width: int, seconds: float, step: int, cell_rate: float = 0.2,
                drift_rate: float | None = None) -> None:
        """Fold in the measured time of a step (seconds > 0) taken at decode step ``step``.

        drift_rate None = the table's own; a probe passes 0 (it speaks for its width only)."""
        if not seconds > 0:
            return
        if batch not in self.rows:  # a new batch size starts from its scaled nearest row
            row, scale = self._row(batch)
            self.rows[batch] = {n: t * scale for n, t in row.items()}
        row = self.rows[batch]
        if width not in row:
            row[width] = self.cell(batch, width)
        shared = self.drift_rate if drift_rate is None else drift_rate
        log_r = math.log(seconds / (self.drift * row[width]))
        if drift_rate is None:  # a step of the chosen width: how far steps scatter around the table
            self._noise_seen += 1
            self.noise += max(self.noise_rate, 1.0 / self._noise_seen) * (log_r * log_r - self.noise)
        self.drift *= math.exp(shared * log_r)
        row[width] *= math.exp(cell_rate * (1.0 - shared) * log_r)
        self.last_seen[(batch, width)] = step

    def probe_weight(self, rate: float, spread: float) -> float:
        """How far a probe moves its cell: ``rate`` on a quiet machine, less where the steps'
        times scatter more than a width's cost is expected to be off the table (``spread``, a
        log variance): spread / (spread + noise), the weight of one noisy measurement against
        what the cell already holds."""
        return min(rate, spread / (spread + self.noise))

    def stalest(self, batch: int, widths, step: int, baseline_weight: float = 2.0) -> int:
        """The width of ``widths`` measured least recently at this batch (plain's age counts double)."""
        def age(n: int) -> float:
            a = step - self.last_seen.get((batch, n), -1)
            return a * (baseline_weight if n == 1 else 1.0)

        return max(widths, key=lambda n: (age(n), -n))
