"""bench/critical_parts.py: its clocks wrap the product's own methods, count them, and put them back."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "critical_parts.py"
spec = importlib.util.spec_from_file_location("critical_parts", SCRIPT)
critical_parts = sys.modules.setdefault("critical_parts", importlib.util.module_from_spec(spec))
spec.loader.exec_module(critical_parts)


class Step:
    def drafts(self, n):
        return sum(self.part(i) for i in range(n))

    def part(self, i):
        return i


def test_every_part_names_a_method_the_product_has():
    """A renamed method would leave its part silently unmeasured: each part must resolve."""
    for owner, name, part in critical_parts.PARTS:
        assert callable(getattr(owner, name)), part
    assert "step" in {part for _, _, part in critical_parts.PARTS}


def test_clocks_count_each_part_per_step_and_put_the_methods_back():
    original = Step.drafts, Step.part
    clocks = critical_parts.Clocks([(Step, "drafts", "step"), (Step, "part", "step/part")])
    clocks.install()
    try:
        assert Step().drafts(3) == 3 and Step().drafts(1) == 0  # the wrapped methods still answer
        row = clocks.row(batch=2)
    finally:
        clocks.remove()
    assert (Step.drafts, Step.part) == original
    assert row["batch"] == 2 and row["steps"] == 2
    assert row["parts"]["step"]["calls_per_step"] == 1.0
    assert row["parts"]["step/part"]["calls_per_step"] == 2.0  # 4 calls over 2 steps
    assert row["parts"]["step"]["us_per_step"] >= row["parts"]["step/part"]["us_per_step"] > 0
    clocks.reset()
    assert clocks.row(batch=2) == {"batch": 2, "steps": 0, "step_us": None, "parts": {}}
