"""Compiled kernels over a decode step's batch arrays (numba; arrays in, arrays out): the
datastore's tries (descend each by its bonus token, fill the empty ones) and the step's drafts
(what verification accepted of each, the fixed-width rows verification takes)."""

from __future__ import annotations

import numba
import numpy as np

from client_sdk.drafting.kernels import OPTS


@numba.njit(inline="always", **OPTS)
def child_run(tok, par, a, e, token):
    """(i, end): the root-level node i of ``token`` among nodes a .. e - 1 of a trie in depth-first
    preorder, and the end of its subtree (nodes i + 1 .. end - 1: the run up to the next
    root-level node); (-1, -1) when the trie has no such child."""
    for i in range(a, e):
        if par[i] < 0 and tok[i] == token:
            end = i + 1
            while end < e and par[end] >= 0:
                end += 1
            return i, end
    return -1, -1


@numba.njit(**OPTS)
def descend_tries(tok, par, cnt, offs, meta, src, bonus):
    """Out trie j = the subtree, under its root-level node of token bonus[j], of trie src[j] of
    the flat batch (tok, par, cnt, offs, meta), with the root-level node as the new root.

    A trie found for context x, one level deeper than needed, thus becomes the trie of context
    x + bonus: its match is one token longer and its occurrences are those that continue with
    bonus. Tries are in depth-first preorder, so a subtree is the run of nodes after its root
    up to the next root-level node. bonus[j] < 0: trie src[j] as it is. src[j] < 0, or no such
    child: an empty trie, match 0. Returns (tok, par, cnt, offs, meta) of the new batch.
    """
    nj = src.shape[0]
    total = 0
    lo = np.zeros(nj, dtype=np.int64)
    hi = np.zeros(nj, dtype=np.int64)
    for j in range(nj):
        s = src[j]
        if s < 0:
            continue
        a, e = offs[s], offs[s + 1]
        if bonus[j] < 0:
            lo[j], hi[j] = a, e
            total += e - a
            continue
        i, end = child_run(tok, par, a, e, bonus[j])
        if i >= 0:
            lo[j], hi[j] = i + 1, end
            total += end - i - 1
    o_tok = np.empty(total, dtype=np.int32)
    o_par = np.empty(total, dtype=np.int32)
    o_cnt = np.empty(total, dtype=np.int32)
    o_offs = np.zeros(nj + 1, dtype=np.int64)
    o_meta = np.zeros((nj, 3), dtype=np.int64)
    n = 0
    for j in range(nj):
        s = src[j]
        if hi[j] > 0 and bonus[j] < 0:
            o_tok[n : n + hi[j] - lo[j]] = tok[lo[j] : hi[j]]
            o_par[n : n + hi[j] - lo[j]] = par[lo[j] : hi[j]]
            o_cnt[n : n + hi[j] - lo[j]] = cnt[lo[j] : hi[j]]
            n += hi[j] - lo[j]
            o_meta[j] = meta[s]
        elif hi[j] > 0:
            a = offs[s]
            head = lo[j] - 1  # the root-level node, as an absolute index
            for i in range(lo[j], hi[j]):
                o_tok[n] = tok[i]
                o_par[n] = -1 if a + par[i] == head else par[i] - (head - a) - 1
                o_cnt[n] = cnt[i]
                n += 1
            o_meta[j, 0] = meta[s, 0] + 1
            o_meta[j, 1] = cnt[head]
            o_meta[j, 2] = meta[s, 2]
        o_offs[j + 1] = n
    return o_tok, o_par, o_cnt, o_offs, o_meta


@numba.njit(**OPTS)
def fill_tries(tok, par, cnt, offs, meta, slots, keys, u_tok, u_par, u_cnt, u_offs, u_meta, nonempty_only):
    """The batch (tok, par, cnt, offs, meta) with each empty trie slots[i] replaced by trie
    keys[i] of the table (u_tok, u_par, u_cnt, u_offs, u_meta) when that one is not empty (or
    even when it is, without ``nonempty_only``: its meta row is news too; a key outside the
    table: left as it is). The first key given for a slot wins. Returns the new batch's arrays
    and the replaced count."""
    nb = offs.shape[0] - 1
    nu = u_offs.shape[0] - 1
    src = np.full(nb, -1, dtype=np.int64)
    length = np.zeros(nb, dtype=np.int64)
    new_meta = np.zeros((nb, meta.shape[1]), dtype=np.int64)
    replaced = 0
    for i in range(slots.shape[0]):
        j, u = slots[i], keys[i]
        if offs[j + 1] == offs[j] and 0 <= u < nu and (u_offs[u + 1] > u_offs[u] or not nonempty_only) and src[j] < 0:
            src[j], length[j] = u_offs[u], u_offs[u + 1] - u_offs[u]
            new_meta[j] = u_meta[u]
            replaced += 1
    o_tok, o_par, o_cnt, o_offs, o_meta = splice_rows(tok, par, cnt, offs, meta, src, length, new_meta, u_tok, u_par,
                                                      u_cnt)
    return o_tok, o_par, o_cnt, o_offs, o_meta, replaced


@numba.njit(**OPTS)
def splice_rows(tok, par, cnt, offs, meta, src, length, new_meta, s_tok, s_par, s_cnt):
    """Trie j of the result: where src[j] >= 0, nodes src[j] .. src[j] + length[j] of (s_tok,
    s_par, s_cnt) with meta row new_meta[j]; else trie j of the batch (tok, par, cnt, offs, meta)."""
    nb = offs.shape[0] - 1
    total = 0
    for j in range(nb):
        total += length[j] if src[j] >= 0 else offs[j + 1] - offs[j]
    o_tok = np.empty(total, dtype=np.int32)
    o_par = np.empty(total, dtype=np.int32)
    o_cnt = np.empty(total, dtype=np.int32)
    o_offs = np.zeros(nb + 1, dtype=np.int64)
    o_meta = meta.copy()
    n = 0
    for j in range(nb):
        if src[j] >= 0:
            for k in range(src[j], src[j] + length[j]):
                o_tok[n], o_par[n], o_cnt[n] = s_tok[k], s_par[k], s_cnt[k]
                n += 1
            o_meta[j] = new_meta[j]
        else:
            for k in range(offs[j], offs[j + 1]):
                o_tok[n], o_par[n], o_cnt[n] = tok[k], par[k], cnt[k]
                n += 1
        o_offs[j + 1] = n
    return o_tok, o_par, o_cnt, o_offs, o_meta


@numba.njit(**OPTS)
def accepted_rows(tok, par, offs, rows, new, new_offs):
    """What verification accepted of each draft, read from the tokens it committed.

    Entry i: draft rows[i] (nodes offs[r] .. offs[r + 1] of tok / par, parents local to the row;
    rows[i] < 0: no draft) and committed tokens new[new_offs[i] : new_offs[i + 1]] (the accepted
    path, then the bonus token). Returns (length, end): the longest root path of the draft
    whose tokens start the committed ones (the bonus excluded), and its last node (-1: none).
    """
    m = rows.shape[0]
    length = np.zeros(m, dtype=np.int64)
    end = np.full(m, -1, dtype=np.int64)
    for i in range(m):
        r = rows[i]
        if r < 0:
            continue
        a, b = offs[r], offs[r + 1]
        node = -1
        for q in range(new_offs[i], new_offs[i + 1] - 1):
            nxt = -1
            for j in range(a, b):
                if par[j] == node and tok[j] == new[q]:
                    nxt = j - a
                    break
            if nxt < 0:
                break
            node = nxt
            length[i] += 1
        end[i] = node
    return length, end


@numba.njit(**OPTS)
def accepted_picks(tok, par, offs, rows, new, new_offs, ends):
    """``accepted_rows`` and, in the same pass, each entry's row of ``ends`` (outcomes.ask_for_ends'
    table: row offs[r] + v for node v of draft r, N + r for nothing accepted, N = tok.shape[0])
    for the end its committed tokens are, as ``outcomes.pick_ends`` reads it. Returns (length,
    end, picks [m, S], has [m]): has[i] False (picks[i] all -1) for no draft, tokens that are not
    a path of the draft and a bonus token, or an end that was not asked."""
    length, end = accepted_rows(tok, par, offs, rows, new, new_offs)
    m, width = rows.shape[0], ends.shape[1]
    picks = np.full((m, width), -1, dtype=np.int64)
    has = np.zeros(m, dtype=np.bool_)
    for i in range(m):
        r = rows[i]
        if r < 0 or length[i] != new_offs[i + 1] - new_offs[i] - 1:
            continue
        at = offs[r] + end[i] if end[i] >= 0 else tok.shape[0] + r
        if at < ends.shape[0] and ends[at, 0] >= 0:
            picks[i] = ends[at]
            has[i] = True
    return length, end, picks, has


@numba.njit(**OPTS)
def drafted_outcomes(offs, scores, rows, length, end):
    """The entries of ``accepted_rows`` whose draft rows[i] has nodes: (their rows, ends, lengths,
    and each draft's expected accepted tokens: the sum of its node scores, as the difference of
    the running sum over the whole batch at its two offsets). What a step's learning and the
    planner's record take, in one pass rather than a dozen numpy calls."""
    cum = np.zeros(scores.shape[0] + 1, dtype=np.float64)
    for j in range(scores.shape[0]):
        cum[j + 1] = cum[j] + scores[j]
    m = 0
    for i in range(rows.shape[0]):
        m += rows[i] >= 0 and offs[rows[i] + 1] > offs[rows[i]]
    r, r_end, r_len = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.int64)
    expected = np.empty(m, np.float64)
    k = 0
    for i in range(rows.shape[0]):
        b = rows[i]
        if b >= 0 and offs[b + 1] > offs[b]:
            r[k], r_end[k], r_len[k], expected[k] = b, end[i], length[i], cum[offs[b + 1]] - cum[offs[b]]
            k += 1
    return r, r_end, r_len, expected


@numba.njit(**OPTS)
def commit_outcomes(tok, par, offs, scores, rows, new, counts, ends):
    """A drafted step's commit in one compiled call: the committed tokens' offsets (entry i has
    counts[i] of ``new``), ``accepted_picks`` (ends with no rows: no picks) and
    ``drafted_outcomes``. Returns (new_offs, picks, has, r, r_end, r_len, expected)."""
    new_offs = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    for i in range(counts.shape[0]):
        new_offs[i + 1] = new_offs[i] + counts[i]
    length, end, picks, has = accepted_picks(tok, par, offs, rows, new, new_offs, ends)
    r, r_end, r_len, expected = drafted_outcomes(offs, scores, rows, length, end)
    return new_offs, picks, has, r, r_end, r_len, expected


@numba.njit(**OPTS)
def cut_rows(tok, par, scores, cells, offs, k):
    """Each row's first min(k, its size) nodes of a ranked batch (best first, so still connected):
    ``DraftBatch.cut`` in one pass. Returns (tok, par, scores, cells, offs)."""
    nb = offs.shape[0] - 1
    o_offs = np.zeros(nb + 1, dtype=np.int64)
    for b in range(nb):
        o_offs[b + 1] = o_offs[b] + min(offs[b + 1] - offs[b], k)
    n = o_offs[nb]
    o_tok, o_par = np.empty(n, dtype=tok.dtype), np.empty(n, dtype=par.dtype)
    o_scores = np.empty(n, dtype=scores.dtype)
    o_cells = np.empty((n, cells.shape[1], cells.shape[2]), dtype=cells.dtype)
    for b in range(nb):
        a, o = offs[b], o_offs[b]
        for q in range(o_offs[b + 1] - o):
            o_tok[o + q], o_par[o + q], o_scores[o + q] = tok[a + q], par[a + q], scores[a + q]
            o_cells[o + q] = cells[a + q]
    return o_tok, o_par, o_scores, o_cells, o_offs


@numba.njit(**OPTS)
def likely_ends(tok, par, scores, offs, rows, hist, k):
    """The k likeliest ends of verifying drafts rows[i] (nodes offs[r] .. offs[r + 1]; scores
    are acceptance probabilities), as ``outcomes.candidates`` orders them, and the context each
    leaves: returns (owner [m]: i, node [m]: local node, -1 for nothing accepted, context [m, W]:
    the last W tokens of hist[i] (the request's last W, -1 before a shorter text) followed by
    the path's tokens, -1 before a shorter one)."""
    w = hist.shape[1]
    nr = rows.shape[0]
    owner = np.empty(nr * k, dtype=np.int64)
    node = np.empty(nr * k, dtype=np.int64)
    ctx = np.full((nr * k, w), -1, dtype=np.int32)
    path = np.empty(64, dtype=np.int32)
    m = 0
    for i in range(nr):
        a, b = offs[rows[i]], offs[rows[i] + 1]
        n = b - a
        under = np.zeros(n)
        first = 0.0
        for j in range(n):  # in node order, as outcomes.deepest_probabilities sums them
            if par[a + j] >= 0:
                under[par[a + j]] += scores[a + j]
            else:
                first += scores[a + j]
        root = max(1.0 - first, 0.0)
        p = np.empty(n)
        for j in range(n):
            p[j] = max(scores[a + j] - under[j], 0.0)
        taken = np.zeros(n, dtype=np.bool_)
        root_done = False
        for _ in range(k):
            best = -1
            for j in range(n):  # the likeliest node not taken yet (ties: the lower index)
                if not taken[j] and (best < 0 or p[j] > p[best]):
                    best = j
            if not root_done and (best < 0 or p[best] < root):  # nodes tied with the root come first
                v = -1
                root_done = True
            elif best < 0:
                break
            else:
                v = best
                taken[best] = True
            owner[m] = i
            node[m] = v
            d = 0
            u = v
            while u >= 0:
                path[d] = tok[a + u]
                d += 1
                u = par[a + u]
            for q in range(w):  # the last w of hist ++ path (path stored leaf first)
                back = w - 1 - q  # tokens from the end
                if back < d:
                    ctx[m, q] = path[back]
                else:
                    ctx[m, q] = hist[i, w - 1 - (back - d)]
            m += 1
    return owner[:m], node[:m], ctx[:m]


@numba.njit(**OPTS)
def tested_rows(par, offs, rows, ends):
    """What verifying drafts rows[i] (nodes offs[r] .. offs[r + 1] of par, parents local to the
    row) tested and accepted, when each accepted the root path ending at node ends[i] (-1:
    nothing): per node of the batch, (tested: its parent was accepted or it is a root child,
    hit: it was accepted). Nodes of other rows are neither."""
    n = par.shape[0]
    tested = np.zeros(n, dtype=np.bool_)
    hit = np.zeros(n, dtype=np.bool_)
    for i in range(rows.shape[0]):
        a = offs[rows[i]]
        node = ends[i]
        while node >= 0:
            hit[a + node] = True
            node = par[a + node]
        for j in range(a, offs[rows[i] + 1]):
            tested[j] = par[j] < 0 or hit[a + par[j]]
    return tested, hit


@numba.njit(**OPTS)
def width_records(par, scores, offs, rows, ends, sizes):
    """What each draft size's own nodes predicted and realised on drafts rows[i] (nodes offs[r] ..
    offs[r + 1] of par / scores, parents local to the row, best first: a draft's best k nodes are
    its first k) whose accepted root path ends at node ends[i] (-1: nothing), for increasing draft
    sizes: returns (predicted [K], realised [K]) summed over the rows, item j for nodes
    sizes[j - 1] .. sizes[j] - 1 (from node 0 for j = 0): their scores, and how many of them the
    accepted path holds (its nodes come after their parents, so a smaller draft accepts the part
    of the path within its own nodes)."""
    k = sizes.shape[0]
    predicted = np.zeros(k)
    realised = np.zeros(k)
    for i in range(rows.shape[0]):
        a, n = offs[rows[i]], offs[rows[i] + 1] - offs[rows[i]]
        lo = 0
        for j in range(k):
            for v in range(lo, min(sizes[j], n)):
                predicted[j] += scores[a + v]
            lo = max(lo, sizes[j])
        node = ends[i]
        while node >= 0:
            for j in range(k):
                if node < sizes[j]:
                    realised[j] += 1.0
                    break
            node = par[a + node]
    return predicted, realised


@numba.njit(**OPTS)
def fixed_width_rows(roots, tok, par, offs, width):
    """A batch of drafts in SGLang's NGRAM verify layout, in one call.

    Row b = [roots[b], draft b's tokens (nodes offs[b]..offs[b+1] of tok/par, parents within
    the draft, -1 = child of the root), padding]; mask[b, i, j]: slot j is slot i or one of
    its ancestors, the root being every node's. Padding slots are extra children of the root
    whose tokens (the smallest ids) differ from every other root child.
    """
    bs = roots.shape[0]
    out = np.empty((bs, width), dtype=np.int64)
    mask = np.zeros((bs, width, width), dtype=np.bool_)
    for b in range(bs):
        a, k = offs[b], offs[b + 1] - offs[b]
        out[b, 0] = roots[b]
        for i in range(width):
            mask[b, i, i] = True
            if i > 0:
                mask[b, i, 0] = True
        for i in range(k):
            out[b, 1 + i] = tok[a + i]
            p = par[a + i]
            if p >= 0:
                for j in range(1, 1 + p + 1):
                    if mask[b, 1 + p, j]:
                        mask[b, 1 + i, j] = True
        candidate = 0
        for i in range(1 + k, width):
            taken = True
            while taken:
                taken = False
                for q in range(k):
                    if par[a + q] < 0 and tok[a + q] == candidate:
                        taken = True
                        candidate += 1
                        break
            out[b, i] = candidate
            candidate += 1
    return out, mask


@numba.njit(**OPTS)
def ranked_gains(scores, offs, max_budget):
    """gain [max_budget + 1]: gain[k] = the sum over rows of each row's first k scores, row b
    being scores[offs[b] .. offs[b + 1]] in decreasing order (drafts come best first): the
    planner's expected accepted tokens when every row keeps its k best nodes."""
    gain = np.zeros(max_budget + 1)
    for b in range(offs.shape[0] - 1):
        a = offs[b]
        n = min(offs[b + 1] - a, max_budget)
        total = 0.0
        for k in range(n):
            total += scores[a + k]
            gain[k + 1] += total
        for k in range(n + 1, max_budget + 1):
            gain[k] += total
    return gain
