"""The per-step speculation planner of a decode loop: how many draft tokens this step, if any.

Objective: tokens per second of the whole step. A batch of B sequences that drafts k tokens
each (k from a small grid; k = 0 is plain decoding) commits B + G(k) tokens, where G(k) is
the sum over sequences of their k best calibrated node scores (each the probability that
the node is accepted, scaled by realised / predicted acceptance), in T(B, 1 + k) seconds,
T the measured time of a step of that width. Two decisions per step:

- *draft at all?* Drafting and the datastore lookup cost D seconds (measured) before the
  drafts can be judged. What drafting buys is the time it saves when its drafts turn out
  good: per drafted step, S = max(0, (B + G(k*)) * T(B, 1) / B - T(B, 1 + k*)), the plain
  time of the tokens the chosen k* commits minus what its step costs (0 when k* = 0). The
  planner drafts while the recent average of S exceeds D - P, P what a plain step itself keeps
  the device waiting for (its own upkeep, measured: drafting replaces it), an average over
  steps of the best choice, not the choice for an average step (a good datastore match is
  worth taking even when most steps have none); and while the steps that speculated did not
  measurably lose: their realised efficiency (tokens per sequence over step + drafting time,
  in plain steps with their upkeep) must stay above ``min_efficiency``, whatever their scores
  promised.
- *how wide?* For drafts in hand D is spent, and k* maximises (B + G(k)) / T(B, 1 + k),
  k = 0 unless that beats plain decoding's B / T(B, 1) by ``min_gain``. A draft of k tokens is
  the narrower one plus its next nodes, so G(k) is the narrower size's plus those nodes' scores
  scaled by what such nodes realised, measured on steps that verified them (a verify at 16
  tokens also says what 8 would have accepted): a wider width never expects fewer tokens, and
  where widths cost the same the widest is taken.

Costs are learned online and cannot lock in. Probes run a width the planner did not choose:
plain decoding (a step that drafts nothing) at least every ``plain_every`` steps while
speculating, and a grid neighbour of the current width every ``probe_every`` steps, an interval
that doubles (up to ``probe_every_max``) while probes confirm the table and falls back when one
is off by more than ``probe_tolerance`` (while plain decoding wins, only when the width proved
cheaper than the table: a dearer one changes no decision; and such a probe verifies filler
tokens, ``blank``, instead of drafting the whole batch), so exploration costs little once the
costs are known and speeds up when they change. A probe is one step, though: where steps' times
scatter (``StepCosts.noise``, measured on the chosen steps) it moves its cell less
(``probe_spread``), so that one probe that lands on a slow moment does not make its width look
dear until the next probe. A start-up table that is wrong in either direction, or a machine
whose load changes, is corrected; and a drift factor shared by all widths moves with every
observation, so a change that hits every width alike (another process taking the CPU) is
followed within a few steps without waiting for a probe. When k = 0 is chosen nothing is
drafted or looked up, but for a "look" now and then that drafts (and verifies what is worth
it) so the value of drafting is re-measured too: one step in ``look_every``,
backing off to one in ``look_every_max`` while the looks find nothing, and further apart while a
look costs more than ``look_budget`` of plain decoding's time over its interval (its measured
time beyond a plain step's, less the tokens it gained: a look that waits for the datastore, as a
blocking lookup's does, costs a large batch half a plain step). Looks are rare, so one
moves the expected saving S by ``look_rate``, more than a step of steady drafting does
(``saving_rate``): drafting that starts to pay is taken up again within a few looks, not tens
of them. At a batch larger than ``look_sample`` a look drafts that many requests only, in turn
(``look_rows``), scales what their drafts would save to the batch, and verifies them at the width
the whole batch would be verified at, so that what they realise is measured as a whole look's
is (the score scale, and the efficiency that may have stopped drafting: a look that never
verified could never lift it again); its drafting costs a few requests', not the whole batch's,
on the step's critical path.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import statistics

import numpy as np

from client_sdk.drafting import step_kernels
from client_sdk.drafting.costs import StepCosts
from sssd_wire.types import whole_numbers

log = logging.getLogger(__name__)


# the planner's knobs that are the share of an estimate one measurement replaces (PlannerConfig)
RATES = ("efficiency_rate", "cell_rate", "probe_rate", "saving_rate", "look_rate", "draft_rate")


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """Knobs of the per-step planner (one field per knob)."""

    widths: tuple[int, ...] = (1, 2, 3, 5, 9, 17)  # verify widths (1 + draft tokens) to choose from
    min_gain: float = 1.05  # speculate only when expected tokens/s beat plain by this factor
    probe_every: int = 8  # steps between probes of a neighbouring width, at first and after a surprise
    probe_every_max: int = 128  # the longest that interval grows while probes confirm the table
    probe_tolerance: float = 0.15  # a probe within this relative error of the table confirms it
    plain_every: int = 16  # while speculating, plain decoding is re-measured at least this often
    look_every: int = 8  # while drafting does not pay, draft once in this many steps to see if it does
    look_every_max: int = 32  # ... an interval that doubles up to this while the looks find nothing
    # ... and is at least as long as keeps the looks' measured cost beyond a plain step's under this
    # share of plain decoding's time (a dear look, such as one that waits for a lookup, comes rarer)
    look_budget: float = 0.01
    # a look at a larger batch drafts this many of its requests (in turn), its saving scaled to the
    # batch: while drafting does not pay, a look costs a few requests' drafting, not the batch's
    look_sample: int = 8
    # drafts are built for one grid size above the largest that any of the last this many drafted
    # steps chose (the nodes no such draft keeps are not merged; StepPlanner.build_size)
    build_window: int = 8
    build_full_every: int = 16  # ... and for the whole budget once in this many drafted steps
    efficiency_rate: float = 0.05  # how fast the realised efficiency of speculating steps follows them
    efficiency_after: int = 16  # speculating steps measured before their efficiency may stop drafting
    min_efficiency: float = 0.97  # below this (speculating steps measurably lose) drafting stops
    cell_rate: float = 0.2  # how far a chosen step's time moves its own cell
    probe_rate: float = 0.8  # how far a probe moves its cell (probes are rare, so they count more)
    # how far (log variance) a width's cost is expected to be off the table between probes: where the
    # steps' times scatter more than that (StepCosts.noise), a probe moves its cell by
    # probe_spread / (probe_spread + noise) only, not probe_rate (StepCosts.probe_weight)
    probe_spread: float = 0.04
    saving_rate: float = 0.05  # how fast the expected time a drafted step saves follows recent drafts
    look_rate: float = 0.3  # ... and how far one look moves it (looks are rare: while drafting does not pay)
    # the drafting-time estimate is the median of this many recent steady drafting times: a few
    # slow steps are no verdict (once drafting stops, nothing re-measures it, so one must not stick)
    draft_window: int = 9
    draft_rate: float = 0.3  # how fast the estimate of a plain step's own upkeep follows measurements
    # the record of what a width's added nodes realised fades by this factor per step verified
    # at a narrower width, so that a few early or unlucky steps do not keep that width unchosen for
    # good: after ~1 / (1 - width_fade) such steps its nodes are judged by all nodes' record again
    width_fade: float = 0.99

    def __post_init__(self) -> None:
        whole_numbers(self, error=ValueError)  # (every int knob: a float one counted steps in fractions)
        if not self.widths or self.widths[0] != 1 or list(self.widths) != sorted(set(self.widths)):
            raise ValueError(f"planner widths must be increasing and start at 1, got {self.widths}")
        if not (2 <= self.probe_every <= self.probe_every_max and self.plain_every >= 2
                and 2 <= self.look_every <= self.look_every_max):
            raise ValueError(f"want 2 <= probe_every <= probe_every_max, plain_every >= 2, 2 <= look_every <= "
                             f"look_every_max; got {self.probe_every}, {self.probe_every_max}, {self.plain_every}, "
                             f"{self.look_every}, {self.look_every_max}")
        if self.draft_window < 1:
            raise ValueError(f"draft_window {self.draft_window} must be at least 1")
        if self.build_window < 1 or self.build_full_every < 1:
            raise ValueError(f"build_window {self.build_window} and build_full_every {self.build_full_every} must be "
                             "at least 1")
        if not 0.0 <= self.width_fade <= 1.0:
            raise ValueError(f"width_fade {self.width_fade} not in [0, 1]")
        if not 0 < self.look_budget <= 1:
            raise ValueError(f"look_budget {self.look_budget} must be in (0, 1] (a share of plain decoding's time)")
        if self.look_sample < 1:
            raise ValueError(f"look_sample {self.look_sample} must be at least 1 (the requests a look drafts)")
        if not 0 < self.probe_spread < math.inf:
            raise ValueError(f"probe_spread {self.probe_spread} must be a finite number above 0 (a log variance)")
        # (NaN, inf or a rate above 1 were taken, and turned the planner's estimates into NaN)
        if not 1 <= self.min_gain < math.inf:
            raise ValueError(f"min_gain {self.min_gain} must be a finite number >= 1 (below 1 drafts where "
                             "plain decoding is expected to be faster)")
        for name in ("probe_tolerance", "min_efficiency"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} {getattr(self, name)} must be a finite number >= 0")
        for name in RATES:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} {getattr(self, name)} must be in [0, 1] (the share of an estimate "
                                 "that one measurement replaces)")


def expected_gain(scores, max_budget: int, best_first: bool = False, offsets: np.ndarray | None = None) -> np.ndarray:
    """gain[k] = sum over sequences of their k best node scores (k = 0..max_budget): the expected
    accepted draft tokens of the batch when every sequence keeps its k best nodes. One compiled
    pass over the batch, as it runs on every drafted step's critical path (best_first: every
    sequence's scores are already in decreasing order, as drafts come, so nothing is sorted).
    scores: one array per sequence, or (``offsets`` given) all back to back, sequence b's at
    offsets[b] .. offsets[b + 1] (a DraftBatch's)."""
    return np.asarray(_gains(scores, max_budget, best_first, offsets), dtype=np.float64)


def _gains(scores, max_budget: int, best_first: bool, offsets: np.ndarray | None) -> list[float]:
    """``expected_gain`` as a list of Python floats (what the planner's choice reads)."""
    if offsets is None:  # one array per sequence: back to back
        lengths = np.fromiter((s.shape[0] for s in scores), dtype=np.int64, count=len(scores))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        scores = np.concatenate(scores) if len(scores) else np.zeros(0)
    if not best_first:  # each sequence's scores best first
        row = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
        scores = scores[np.lexsort((-scores, row))]
    return step_kernels.ranked_gains(np.ascontiguousarray(scores, dtype=np.float64),
                                     np.ascontiguousarray(offsets, dtype=np.int64), max_budget).tolist()


class StepPlanner:
    """Decides each step whether to draft and how wide to verify; learns costs and gains.

    Call order per step: ``plan`` (0 = draft nothing), then, when drafts were built,
    ``choose_for_drafts`` and ``observe_drafting``; after verification ``record`` and
    ``observe_step``, and (later: beside the next step) ``record_drafts``. Not thread-safe (one
    scheduler thread).
    """

    def __init__(self, costs: StepCosts, config: PlannerConfig = PlannerConfig()) -> None:
        self.costs = costs
        self.config = config
        self.step = 0
        self.probe: int | None = None  # the width this step re-measures, if it is a probe
        self.current = 1  # the width of the last step that was not a probe
        self._interval = config.probe_every  # steps between neighbour probes (adaptive)
        self._next_probe, self._next_plain = config.probe_every, config.plain_every
        self._last_drafted = 0  # the last step that drafted
        self._look_every, self._looking = config.look_every, False  # looks back off while they fail
        self.look_cost_s: float | None = None  # what a look costs beyond a plain step, lately (seconds)
        self._drafting_now = 0.0  # the drafting seconds the current step reported (observe_drafting)
        self.drafting = False  # whether the current step drafts
        # the width a step that drafts nothing verifies: 1, or a wider width whose cost is probed
        # with filler tokens (while plain decoding wins, a draft of the whole batch would cost more
        # on the critical path than the probe's verify, and its tokens are not what is measured)
        self.blank = 1
        self.look_rows: int | None = None  # a look that drafts only this many of the batch's requests
        self._steady = False  # whether the previous step drafted too
        self.saving_s: float | None = None  # seconds a drafted step saved lately, per sequence (S / B)
        self.draft_s: float | None = None  # drafting + lookup seconds per sequence per step
        self._draft_seen: collections.deque = collections.deque(maxlen=config.draft_window)  # its recent measures
        # what a plain step itself keeps the device waiting for, per sequence (its own upkeep on the
        # critical path): what drafting replaces, so drafting need only beat draft_s - plain_s
        self.plain_s = 0.0
        self._drafted_once = False
        # realised / predicted accepted tokens (decayed sums): shrinks node scores that over-promise;
        # a cautious start (0.6, worth ten verified tokens) until verification says otherwise
        self.predicted, self.realised = 10.0, 6.0  # all nodes together
        # the same per grid width for the nodes it adds to the next narrower one (item i: nodes
        # widths[i-1] - 1 .. widths[i] - 2 of each draft, best first), shrunk to the above: deep
        # nodes compound the scores' error, and a wider width is then worth what its own nodes add
        n = len(self.config.widths)
        self.predicted_by, self.realised_by = np.zeros(n), np.zeros(n)
        self.chosen_k = 0  # the draft size verified this step
        self._chosen: collections.deque = collections.deque(maxlen=config.build_window)  # recent sizes chosen (> 0)
        self._builds = 0  # drafted steps planned (every build_full_every-th builds the whole budget)
        # realised efficiency of steps that speculated: (tokens per sequence) / (step + drafting
        # time in plain steps); below 1 they lost to plain decoding, whatever the scores promised
        # (steps that drafted but verified nothing are the saving-vs-drafting rule's business)
        self.efficiency = 1.0  # a neutral start: a run of losing steps, not one, stops drafting
        self._speculated = 0
        self._step_realised = 0.0
        self.counts = {"steps": 0, "drafted": 0, "probes": 0, "bad_times": 0}
        self.widths_used: dict[int, int] = {}  # verify width -> steps (probes included)

    @property
    def max_budget(self) -> int:
        return self.config.widths[-1] - 1

    def build_size(self) -> int:
        """Nodes per draft worth building on the step just planned (a drafted one): one grid size
        above the largest that recent steps chose, so that a choice at that bound raises it a
        grid size per step; the whole budget every ``build_full_every`` drafted steps (a larger
        draft may pay where a smaller one did not), on a look, a probe's width at least, and
        before anything was chosen. Drafts built for k nodes are the first k of the whole ones."""
        self._builds += 1
        if self._looking or not self._chosen or self._builds % self.config.build_full_every == 0:
            return self.max_budget
        top = max(self._chosen)
        size = next((n - 1 for n in self.config.widths[1:] if n - 1 > top), self.max_budget)
        return max(size, self.probe - 1) if self.probe is not None else size

    def score_scale(self, k: int, prior_weight: float = 10.0) -> float:
        """What the nodes that a draft of k tokens adds to the next narrower grid size have been
        worth (realised / predicted): their own record, shrunk towards all nodes' (worth
        ``prior_weight`` predicted tokens)."""
        i = self.config.widths.index(1 + k) if 1 + k in self.config.widths else -1
        return self._scales(prior_weight)[i]

    # -- decisions --------------------------------------------------------------------------

    def plan(self, batch: int) -> int:
        """Draft budget for this step: 0 = do not draft or look anything up (a plain step)."""
        self.step += 1
        self.counts["steps"] += 1
        self.probe = self._probe_due(batch)
        self.chosen_k, self._step_realised, self._looking, self._drafting_now = 0, 0.0, False, 0.0
        self.blank, self.look_rows = 1, None
        if self.probe is not None:
            self.counts["probes"] += 1
            # a wider width probed while plain decoding wins measures its cost alone: filler, not drafts
            budget = 0 if self.probe == 1 or self._idle() else self.max_budget
            self.blank = self.probe if budget == 0 else 1
        elif self.saving_s is None or self.draft_s is None:
            budget = self.max_budget  # nothing known about drafts yet: find out
        elif self._pays():
            budget = self.max_budget
        elif self.step - self._last_drafted >= self._look_every:
            budget, self._looking = self.max_budget, True  # time to look again whether it pays
            if batch > self.config.look_sample:
                self.look_rows = self.config.look_sample
        else:
            budget = 0
        self._steady = self.drafting and budget > 0  # drafting on consecutive steps: lookups prefetched
        self.drafting = budget > 0
        if budget:
            self._last_drafted = self.step
        self.counts["drafted"] += budget > 0
        return budget

    def may_draft_next(self) -> bool:
        """Whether the next step may draft: what a prefetch for it would be for (a plain probe
        may still come; a prefetch it leaves unused costs only the lookup)."""
        return (self.saving_s is None or self.draft_s is None or self._pays()
                or self.step + 1 - self._last_drafted >= self._look_every)

    def _pays(self) -> bool:
        """Drafting pays: what drafted steps are expected to save beats what drafting costs, and
        what they actually realised (measured, not predicted) beat plain decoding."""
        proven = self._speculated >= self.config.efficiency_after  # a few unlucky steps are no verdict
        return (self.saving_s + self.plain_s > self.draft_s
                and (not proven or self.efficiency >= self.config.min_efficiency))

    def _idle(self) -> bool:
        """Plain decoding is the choice and drafting is known not to pay."""
        return self.current == 1 and self.saving_s is not None and self.draft_s is not None and not self._pays()

    def _probe_due(self, batch: int) -> int | None:
        """The width this step re-measures, if one is due: plain decoding (whether to speculate)
        or a grid neighbour of the current width (whether to move one step: a hill climb)."""
        c = self.config
        if self.current > 1 and self.step >= self._next_plain:
            self._next_plain = self.step + c.plain_every
            return 1
        if self.step >= self._next_probe:
            self._next_probe = self.step + self._interval
            i = c.widths.index(self.current) if self.current in c.widths else 0
            near = [c.widths[j] for j in (i - 1, i + 1) if 0 <= j < len(c.widths) and c.widths[j] > 1]
            return self.costs.stalest(batch, near, self.step) if near else None
        return None

    def choose_for_drafts(self, scores, best_first: bool = False, offsets: np.ndarray | None = None) -> int:
        """Draft tokens per sequence (0 or a grid size) for drafts already built (their scores as
        ``expected_gain`` takes them: one array per sequence, or back to back with ``offsets``).

        Their node scores are acceptance probabilities, so E[accepted | k] of a sequence is
        the sum of its k best scores. Drafting time is spent by now and does not count.
        """
        batch = len(scores) if offsets is None else offsets.shape[0] - 1
        if batch == 0:
            return 0
        gain = _gains(scores, self.max_budget, best_first, offsets)
        if self.look_rows is not None:  # a sampled look: what drafts like these for every request would save,
            gain = [g * (batch / self.look_rows) for g in gain]  # verified at the width they would take (so
            # that what its rows realise is measured: score scale, efficiency)
        k, scale = self._best(batch, gain)
        t1 = self.costs.predict(batch, 1)
        tokens = batch + scale * gain[k]
        saved = max(0.0, tokens * t1 / batch - self.costs.predict(batch, 1 + k)) if k else 0.0
        r = self.config.look_rate if self._looking else self.config.saving_rate
        per_seq = saved / batch
        self.saving_s = per_seq if self.saving_s is None else (1 - r) * self.saving_s + r * per_seq
        if k > 0:
            self._chosen.append(k)
        self.chosen_k = self.probe - 1 if self.probe is not None and self.probe > 1 else k
        return self.chosen_k

    def _best(self, batch: int, gain: list[float]) -> tuple[int, float]:
        """(k, its score scale): k = 0 unless some grid k's expected tokens/s beats plain decoding
        by min_gain. In Python floats: this runs on every drafted step's critical path."""
        plain = batch / self.costs.predict(batch, 1)
        scales = self._scales()
        best_k, best, best_scale = 0, plain * self.config.min_gain, scales[0]
        accepted = below = 0.0  # a width's expected tokens: the narrower one's, and what its own nodes add
        for n, scale in zip(self.config.widths[1:], scales[1:]):
            accepted += scale * (gain[n - 1] - below)  # (never less: its draft holds the narrower one)
            below = gain[n - 1]
            tps = (batch + accepted) / self.costs.predict(batch, n)
            if tps > best:
                best_k, best, best_scale = n - 1, tps, accepted / below if below > 0 else scale
        return best_k, best_scale

    def _scales(self, prior_weight: float = 10.0) -> list[float]:
        """``score_scale`` of every grid width at once (item i: the nodes widths[i] adds), in Python
        floats."""
        overall = self.realised / self.predicted
        return [min(1.5, max(0.05, (r + prior_weight * overall) / (p + prior_weight)))
                for p, r in zip(self.predicted_by.tolist(), self.realised_by.tolist())]

    # -- feedback ---------------------------------------------------------------------------

    def observe_step(self, batch: int, width: int, seconds: float) -> None:
        """The measured time of a step of this width (verification and upkeep, not drafting).
        Call it after the step's ``record`` calls, so the step's accepted tokens are known."""
        if not self._measured(seconds, "a step's"):
            return
        self.widths_used[width] = self.widths_used.get(width, 0) + 1
        if self.drafting and self.probe is None and self.chosen_k > 0:  # speculated (a sampled look: its rows, scaled)
            tokens = 1.0 + self._step_realised / (self.look_rows or batch)
            drafting = (self.draft_s or 0.0) * batch  # the robust estimate: one slow call is no verdict
            e = tokens / ((seconds + drafting) / (self.costs.predict(batch, 1) + self.plain_s * batch))
            r = self.config.efficiency_rate
            self.efficiency = (1 - r) * self.efficiency + r * e
            self._speculated += 1
            if self._looking and e >= 1.0:
                self.efficiency = max(self.efficiency, self.config.min_efficiency)  # a look that won reopens
        if self._looking:  # a look that found nothing, or lost, makes the next one wait longer
            won = (self.chosen_k > 0 or self.look_rows is not None) and self._pays()
            floor, c = self._look_floor(batch, seconds), self.config
            self._look_every = max(c.look_every, floor) if won else min(2 * self._look_every, max(c.look_every_max, floor))
        if self.probe is not None and width == self.probe:
            c = self.config
            off = math.log(max(seconds, 1e-9) / self.costs.predict(batch, width))
            surprise = abs(off) > math.log1p(c.probe_tolerance)
            if width > 1:  # neighbour probes back off while the table holds, and hurry when it does not,
                # except that while plain decoding wins a wider width found dearer is no news: it
                # makes drafting less attractive still, so only a cheaper one is worth probing soon
                news = surprise and (off < 0 or not self._idle())
                self._interval = c.probe_every if news else min(2 * self._interval, c.probe_every_max)
                self._next_probe = min(self._next_probe, self.step + self._interval)
            rate = self.costs.probe_weight(c.probe_rate, c.probe_spread)
            self.costs.observe(batch, width, seconds, self.step, rate, drift_rate=0.0)
        else:  # a chosen width, or a probe whose drafts came back narrower (it measured the width verified)
            if self.probe is None:
                self.current = width
            self.costs.observe(batch, width, seconds, self.step, self.config.cell_rate)

    def _look_floor(self, batch: int, seconds: float) -> int:
        """The fewest steps between looks that keeps their cost within ``look_budget`` of plain
        decoding's time, after a look whose step took ``seconds`` (drafting aside): the look's cost
        beyond a plain step with its upkeep (its drafting, its wider verify, less the plain time of
        the tokens its drafts gained), averaged over the last looks."""
        plain = self.costs.predict(batch, 1)
        gained = self._step_realised * plain / batch
        cost = max(0.0, self._drafting_now + seconds - plain - self.plain_s * batch - gained)
        self.look_cost_s = cost if self.look_cost_s is None else 0.5 * (self.look_cost_s + cost)
        return math.ceil(self.look_cost_s / (self.config.look_budget * plain))

    def observe_drafting(self, batch: int, seconds: float) -> None:
        """The measured drafting + lookup time of this step. The estimate is the median of the
        last ``draft_window`` steady measurements: outliers (a first call that compiles or
        connects, a pause, the datastore's compaction) do not move it, so they cannot stop
        drafting, which would freeze the estimate where they left it; a lasting slowdown still
        shows once it fills half the window."""
        if not self._measured(seconds, "drafting's"):
            return
        self._drafting_now = seconds
        per_seq = seconds / max(batch, 1)
        if self.draft_s is None:
            self.draft_s = per_seq if self._drafted_once else 0.0  # the first call only warms up
            self._drafted_once = True
            return
        if self._steady:  # what drafting costs while it goes on (a lone look pays for an unprefetched lookup)
            self._draft_seen.append(per_seq)
            self.draft_s = statistics.median(self._draft_seen)

    def observe_plain(self, batch: int, seconds: float) -> None:
        """The measured critical-path time of a plain step's own upkeep (a step that drafted
        nothing): the plain decoding that drafting is weighed against costs this much more than
        its verify. Followed at ``draft_rate`` (plain steps are many), outliers capped at 3x."""
        if not self._measured(seconds, "a plain step's upkeep"):
            return
        per_seq = seconds / max(batch, 1)
        cap = 3 * max(self.plain_s, 1e-5)
        self.plain_s = (1 - self.config.draft_rate) * self.plain_s + self.config.draft_rate * min(per_seq, cap)

    def _measured(self, seconds: float, what: str) -> bool:
        """Whether ``seconds`` is a time (finite, >= 0). One that is not (NaN, inf, a clock that went back)
        is left out, counted in ``bad_times`` and said once (a NaN stopped drafting for good)."""
        if 0.0 <= seconds < math.inf:
            return True
        self.counts["bad_times"] += 1
        if self.counts["bad_times"] == 1:
            log.warning("SSSD planner: %s time %r is no time (finite, >= 0): left out (later ones counted in "
                        "its stats' bad_times, not logged)", what, seconds)
        return False

    def record(self, predicted: float, realised: float, decay: float = 0.98) -> None:
        """After a verified step, per sequence: its draft's summed node scores vs the tokens it
        got accepted (what each width's nodes did: ``record_widths``)."""
        self.record_many((predicted,), (realised,), decay)

    def record_many(self, predicted, realised, decay: float = 0.98) -> None:
        """``record`` for a step's sequences in order (the same sums, without a call per sequence)."""
        p, r = self.predicted, self.realised
        for a, b in zip(predicted, realised):
            p = decay * p + a
            r = decay * r + b
            self._step_realised += b
        self.predicted, self.realised = p, r

    def record_drafts(self, parents, scores, offsets, rows, ends, verified: int) -> None:
        """``record_widths`` of verified drafts: rows[i] of the back-to-back drafts (parents local
        to a row, best first) accepted the root path ending at its node ends[i] (-1: nothing)."""
        sizes = np.asarray(self.config.widths[1:], dtype=np.int64) - 1
        predicted, realised = step_kernels.width_records(parents, scores, offsets, rows, ends, sizes)
        self.record_widths([0.0] + predicted.tolist(), [0.0] + realised.tolist(), verified, rows.shape[0])

    def record_widths(self, predicted, realised, verified: int, count: int, decay: float = 0.98) -> None:
        """After a verified step (beside the GPU): what each grid width's own nodes predicted
        (summed scores) and realised (accepted), summed over the step's ``count`` sequences, whose
        drafts were verified at up to ``verified`` tokens (item i: nodes widths[i-1] - 1 ..
        widths[i] - 2 of each draft; ``step_kernels.width_records``). The widths that the step
        did not verify learn nothing; their records fade (``width_fade``)."""
        f = decay ** count
        for i, n in enumerate(self.config.widths[1:], start=1):
            if n - 1 <= verified:
                self.predicted_by[i] = f * self.predicted_by[i] + predicted[i]
                self.realised_by[i] = f * self.realised_by[i] + realised[i]
            else:
                self.predicted_by[i] *= self.config.width_fade
                self.realised_by[i] *= self.config.width_fade

    def stats(self) -> dict:
        us = lambda s: None if s is None else round(s * 1e6, 1)  # noqa: E731
        scales = {n: round(self.score_scale(n - 1), 3) for n in self.config.widths[1:]}
        return {**self.counts, "score_scale_by_width": scales, "drift": round(self.costs.drift, 3),
                "step_time_noise": round(self.costs.noise, 4),
                "efficiency": round(self.efficiency, 3),
                "draft_us_per_seq": us(self.draft_s), "saving_us_per_seq": us(self.saving_s),
                "plain_us_per_seq": us(self.plain_s),
                "widths": dict(sorted(self.widths_used.items())),
                "predicted_ms_batch1": {n: round(self.costs.predict(1, n) * 1e3, 1) for n in self.config.widths}}
