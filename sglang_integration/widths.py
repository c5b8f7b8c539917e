"""Per-batch verify widths for the SGLang worker. No SGLang imports (tested on CPU).

SGLang verifies one width per forward, with a CUDA graph captured per width. The worker keeps
a small menu of widths (root included), each with its own attention backend and graphs
(SGLang's adaptive runtime states), and verifies each step at the menu width its drafts need:
the SDK's planner decides how many draft tokens a step is worth, width 1 being a plain step.

- ``width_menu``: the widths that get graphs: the planner's grid up to the launch width, which
  is the widest (``--speculative-num-draft-tokens``: it sizes KV reservation and the relay).
- ``MenuPolicy``: SGLang's ``AdaptiveSpecPolicy`` for that menu; the width is the drafts' own,
  set per step before the controller activates it, never guessed from the batch size.
- ``StepClock``: how long verification steps take, for the planner's cost table.
- ``widen``: outputs of a narrower step padded to the launch width, the stride SGLang's relay
  buffer and result processing were built with.
"""

from __future__ import annotations


def width_menu(w_max: int, planner_widths) -> tuple[int, ...]:
    """Increasing widths from 1 to ``w_max`` (the launch width): the planner's widths below it
    (SSSD_WIDTHS), then w_max. ValueError for a launch width below 2."""
    if w_max < 2:
        raise ValueError(f"the launch width {w_max} must be at least 2 (root and one draft token)")
    return tuple(sorted({w for w in planner_widths if w < w_max} | {1, w_max}))


def round_up(n: int, menu) -> int:
    """The narrowest menu width that holds ``n`` (root included); the widest when none does."""
    for w in menu:
        if w >= n:
            return w
    return menu[-1]


class MenuPolicy:
    """SGLang's AdaptiveSpecPolicy (adaptive_runtime_state.py) over a width menu. Steps are
    widths - 1, as the controller counts them. Every batch size gets the graphs of every width
    (``cuda_graph_bs_for_step``): the planner may choose any width at any batch."""

    def __init__(self, menu) -> None:
        self.menu = tuple(menu)
        self.next_steps = self.menu[-1] - 1  # the width of the coming step - 1, set per step
        self._graph_bs: list[int] | None = None

    @property
    def candidate_steps(self) -> list[int]:
        return [w - 1 for w in self.menu]

    def set_cuda_graph_bs(self, cuda_graph_bs) -> None:
        self._graph_bs = None if cuda_graph_bs is None else list(cuda_graph_bs)

    def get_steps_for_batch(self, batch_size: int) -> int:
        return self.next_steps

    def on_verify_complete(self, num_correct_drafts_per_req, batch_size: int) -> None:
        return None  # the SDK's planner learns from verification; the controller switches nothing

    def cuda_graph_bs_for_step(self, step: int):
        return self._graph_bs


class StepClock:
    """The planner's measure of a verification step: the time from one decode step's start
    (its drafting) to the next's, less its drafting (the planner weighs that separately). In
    overlap mode the next step starts once the last verify's result is in, so the interval is
    the verify itself. Unknown (None) after a batch that was not a decode step."""

    def __init__(self) -> None:
        self._started: float | None = None
        self._drafting = 0.0

    def decode_started(self, now: float) -> float | None:
        """A decode step starts now: the last one's verification time, if known."""
        last = None if self._started is None else max(now - self._started - self._drafting, 1e-6)
        self._started, self._drafting = now, 0.0
        return last

    def drafting_took(self, seconds: float) -> None:
        self._drafting = seconds

    def other_batch(self) -> None:
        """A prefill (or idle) batch ran: the next interval is not one verification."""
        self._started = None


def widen(tokens, batch: int, width: int, w_max: int):
    """[batch * width] (or [batch, width]) per-request rows as [batch * w_max], zero-padded."""
    import torch

    if width == w_max:
        return tokens
    out = torch.zeros((batch, w_max), dtype=tokens.dtype, device=tokens.device)
    out[:, :width] = tokens.reshape(batch, width)
    return out.reshape(-1)
