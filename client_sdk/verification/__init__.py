"""Verification: tree layout, masks, greedy and lossless sampling verification, and the
reference decoder over a Hugging Face causal LM. torch lives here and nowhere else in the SDK."""

LINEARS = ("adaptive", "uniform", "torch")  # ReferenceDecoder's linear layers on CPU (cpu_linear); torch-free for the CLI
ATTENTIONS = ("model", "exact")  # ReferenceDecoder's attention for decode steps (exact_rows)
