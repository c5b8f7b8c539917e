"""Verification: tree layout, masks, greedy and lossless sampling verification, and the
reference decoder over a Hugging Face causal LM. torch lives here and nowhere else in the SDK."""
