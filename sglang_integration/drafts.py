"""SSSD drafts in the exact layout SGLang's NGRAM verification consumes. No SGLang imports.

For a decode batch of bs requests and width N (``speculative_num_draft_tokens``):
- ``req_drafts`` [bs * N] int64: row b = [root, d1, ..., d_{N-1}], root = last committed token;
- ``mask`` [bs * N * N] bool: mask[b, i, j] = node j is node i or one of its ancestors.
Parents precede children. Unused slots are padded with extra children of the root whose
tokens differ from every other root child: SGLang's sampling kernel sums acceptance over
siblings, so a duplicated token (NGRAM pads with 0s) would bias sampled outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from client_sdk.drafting.speculator import Speculator
from client_sdk.types import DraftTree


@dataclasses.dataclass(frozen=True)
class RequestView:
    """What the drafter needs of an SGLang Req (duck-typed from the real object)."""

    rid: str
    prompt: Sequence[int]  # req.origin_input_ids_unpadded
    output: Sequence[int]  # req.output_ids, plus (overlap mode) the previous step's accepted tokens


def splice_overlap(output_ids: Sequence[int], prev_tokens: list[int], prev_lens: list[int], row: int,
                   stride: int) -> list[int]:
    """Overlap mode: the last step's accepted tokens are not yet in output_ids; append them.

    prev_tokens is SGLang's flat accept_tokens ([bs * stride]) and prev_lens its accept_lens.
    """
    return list(output_ids) + list(prev_tokens[row * stride : row * stride + prev_lens[row]])


@dataclasses.dataclass
class _State:
    seen: int  # tokens of prompt + output already in the request's local index
    last_tree: DraftTree | None = None


class BatchDrafter:
    """Keeps one Speculator request per SGLang rid in sync and emits fixed-width drafts."""

    def __init__(self, speculator: Speculator, width: int, vocab_size: int) -> None:
        if width < 2:
            raise ValueError(f"draft width {width} must be at least 2 (the root and one draft token)")
        self.spec = speculator
        self.width = width
        self.vocab_size = vocab_size
        self._state: dict[str, _State] = {}

    def _sync(self, req: RequestView) -> None:
        """Feed the request's newly committed tokens (and what they say about the last draft)."""
        st = self._state.get(req.rid)
        total = len(req.prompt) + len(req.output)
        if st is None:
            self.spec.start(req.rid, req.prompt, req.output)
            self._state[req.rid] = _State(total)
            return
        new = list(req.output[st.seen - len(req.prompt) :])  # seen >= len(prompt) since start()
        if not new:
            return
        tree = st.last_tree
        accepted = tree.longest_match(np.asarray(new[:-1], dtype=np.int32)) if tree is not None else None
        self.spec.commit(req.rid, new, tree, accepted)
        st.seen = total

    def drafts(self, reqs: Sequence[RequestView]) -> tuple[np.ndarray, np.ndarray]:
        for req in reqs:
            self._sync(req)
        rids = [r.rid for r in reqs]
        trees = self.spec.draft(rids, budget=self.width - 1)
        bs, n = len(reqs), self.width
        tokens = np.empty((bs, n), dtype=np.int64)
        mask = np.zeros((bs, n, n), dtype=bool)
        for b, (req, tree) in enumerate(zip(reqs, trees)):
            root = req.output[-1] if len(req.output) else req.prompt[-1]
            tree = tree.best(n - 1)
            self._state[req.rid].last_tree = tree
            tokens[b], mask[b] = self.row(int(root), tree)
        # No prefetch here: the next context is known only when the next step splices in this
        # step's accepted tokens, so the datastore is asked at draft time, within its deadline.
        return tokens.reshape(-1), mask.reshape(-1)

    def row(self, root: int, tree: DraftTree) -> tuple[np.ndarray, np.ndarray]:
        """One request's [root + draft + padding] tokens and ancestor mask."""
        n, k = self.width, len(tree)
        toks = np.empty(n, dtype=np.int64)
        toks[0] = root
        toks[1 : 1 + k] = tree.tokens
        used = set(tree.tokens[tree.parents < 0].tolist())
        pad = (t for t in range(self.vocab_size) if t not in used)
        for i in range(1 + k, n):  # padding: children of the root, unique among its children
            toks[i] = next(pad)
        return toks, tree.rooted_mask(n, pad_under_root=True)

    def forget(self, rids) -> None:
        """Requests that left the batch: their generations go back to the datastore."""
        for rid in rids:
            if self._state.pop(rid, None) is not None:
                self.spec.finish(rid)
