"""The verify step's attention mask over each request's whole context, in a fixed number of
tensor operations whatever the batch size (torch only, no SGLang imports).

NGRAM's verification on a GPU hands the attention backend the "full" custom mask: for request i
with seq_len s_i and width n, its n rows of s_i + n columns, [ones(n, s_i) ‖ tree_mask_i], flattened
and concatenated over the batch. NGRAM builds it per request (``ngram_worker.py`` 355-370, whose
comment there notes the cost): a ``torch.ones`` on the device, a host-to-device copy of that request's
n x n mask, a ``cat`` and a cast, 7 tensor operations per request, on the step's critical path
after the drafts. ``full_tree_mask`` builds the same tensor from the n x n masks NGRAM has already
copied to the device, in 19 tensor operations for the whole batch (bench/full_mask.py).
"""

from __future__ import annotations

import torch


def full_tree_mask(tree_mask: torch.Tensor, seq_lens_cpu, n: int) -> torch.Tensor:
    """[sum_i n * (s_i + n)] bool on tree_mask's device: request i's rows [ones(s_i) ‖ its tree
    mask row], back to back. tree_mask: [bs * n * n] bool (request i's n x n mask at i * n * n);
    seq_lens_cpu: the requests' sequence lengths s_i (KV length, the root not included) on the
    host, as NGRAM reads them (``batch.seq_lens_cpu``)."""
    lens_host = torch.as_tensor(seq_lens_cpu, dtype=torch.int64)
    bs = lens_host.shape[0]
    if tree_mask.numel() != bs * n * n:
        raise ValueError(f"a tree mask of {tree_mask.numel()} entries for {bs} requests {n} wide")
    total = n * int(lens_host.sum()) + bs * n * n  # known on the host: no wait for the device
    device = tree_mask.device
    lens = lens_host.to(device, non_blocking=True)
    row = lens + n  # each request's row length
    start = (torch.cumsum(row, 0) - row) * n  # where each request's rows begin
    k = torch.arange(n, device=device)
    # request i, row r, column s_i + c: start_i + r * row_i + s_i + c
    at = (start + lens).view(bs, 1, 1) + k.view(1, n, 1) * row.view(bs, 1, 1) + k.view(1, 1, n)
    out = torch.ones(total, dtype=torch.bool, device=device)
    out[at.view(-1)] = tree_mask.view(-1).to(torch.bool)
    return out
