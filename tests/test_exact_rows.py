"""Exact rows (client_sdk/verification/exact_rows.py): every row a decode step verifies gets, bit
for bit, the logits plain decoding computes at that position, in bfloat16 with the uniform linear
layers (one kernel for every row count, one whose rows do not depend on how many there are;
float32's GEMM changes with the row count, so there exact attention alone does not give plain
decoding's bits)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.drafting.outcomes import path_tokens
from client_sdk.types import DraftTree
from client_sdk.verification.cpu_linear import NoInvariantWay, tune_uniform
from client_sdk.verification.decoder import KVCache, ReferenceDecoder
from client_sdk.verification.exact_rows import RowPlan
from client_sdk.verification.verify import build_batch
from tests.test_decoder import ScriptedDrafter, tiny_llama

VOCAB = 64


def _bfloat16_rows_invariant() -> bool:
    try:
        tune_uniform(tiny_llama(seed=0).to(torch.bfloat16), grid=(1, 2), repeats=1)
        return True
    except NoInvariantWay:
        return False


# exact verification needs a bfloat16 linear way that computes a row alike at every row count:
# CPUs with AVX512-BF16 or AMX have one (the project's machines do); elsewhere the mode is refused
needs_invariant_rows = pytest.mark.skipif(not _bfloat16_rows_invariant(),
                                          reason="no bfloat16 linear way is row-invariant on this CPU")


@pytest.mark.parametrize("parents, sizes, lens, prefix, paths", [
    # a plain step: the root alone
    ([[-1]], [1], [5], (5,), (((0,),),)),
    # a chain of three under the root
    ([[-1, 0, 1, 2]], [4], [7], (7,), (((0,), (0, 1), (0, 1, 2), (0, 1, 2, 3)),)),
    # two branches: slot 1 has children 3 and 4, slot 2 is a leaf; depth first, not slot order
    ([[-1, 0, 0, 1, 1]], [5], [3], (3,), (((0,), (0, 1), (0, 1, 3), (0, 1, 4), (0, 2)),)),
    # two rows, the second shorter (its padding slots 2-3 are left out) over a shorter cache
    ([[-1, 0, 1, 0], [-1, 0, -1, -1]], [4, 2], [9, 4], (9, 4),
     (((0,), (0, 1), (0, 1, 2), (0, 3)), ((0,), (0, 1)))),
])
def test_row_plan(parents, sizes, lens, prefix, paths):
    plan = RowPlan.of(parents, sizes, lens)
    assert plan.prefix == prefix and plan.paths == paths


def _random_tree(rng, size: int) -> DraftTree:
    """``size`` nodes, each under a random earlier node or the root, siblings' tokens distinct."""
    parents, tokens, used = [], [], set()
    for i in range(size):
        p = int(rng.integers(-1, i))
        t = int(rng.integers(0, VOCAB))
        while (p, t) in used:
            t = (t + 1) % VOCAB
        used.add((p, t))
        parents.append(p)
        tokens.append(t)
    return DraftTree(np.array(tokens, np.int32), np.array(parents, np.int32), np.ones(size),
                     np.full((size, 1, 4), -1, np.int8))


def _plain_logits(dec: ReferenceDecoder, prompt: list[int], path: list[int]) -> torch.Tensor:
    """Plain decoding's logits after feeding the prompt's last token, then ``path``, one step each."""
    cache = dec.prefill([prompt])
    root, logits = prompt[-1], None
    for token in [*path, None]:
        batch = build_batch([root], [DraftTree.empty()], cache.lengths, cache.width)
        out = dec.forward(batch, cache)
        logits = out.logits[0, 0]
        cache = KVCache([(layer.keys, layer.values) for layer in out.past_key_values.layers],
                        cache.lengths).compact(1, [[0]])
        root = token
    return logits


@needs_invariant_rows
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(1, 7), context=st.integers(1, 12))
def test_each_verified_row_has_plain_decodings_bits(seed, size, context):
    rng = np.random.default_rng(seed)
    model = tiny_llama(seed=seed % 7).to(torch.bfloat16)
    dec = ReferenceDecoder(model, eos_ids=set(), attention="exact")
    prompt = rng.integers(0, VOCAB, context + 1).tolist()
    tree = _random_tree(rng, size)
    cache = dec.prefill([prompt])
    batch = build_batch([prompt[-1]], [tree], cache.lengths, cache.width)
    logits = dec.forward(batch, cache).logits[0]
    for node in range(-1, size):
        expected = _plain_logits(dec, prompt, path_tokens(tree, node))
        assert torch.equal(logits[node + 1], expected), f"node {node} of {tree.parents.tolist()}"


@needs_invariant_rows
@pytest.mark.parametrize("lens", [[6, 6], [9, 3], [2, 11, 5]])
def test_a_padded_batchs_rows_match_each_sequence_decoded_alone(lens):
    """Rows over a right-padded cache (keys copied beside their path) against each sequence
    alone (keys read in place)."""
    rng = np.random.default_rng(sum(lens))
    dec = ReferenceDecoder(tiny_llama(seed=3).to(torch.bfloat16), eos_ids=set(), attention="exact")
    prompts = [rng.integers(0, VOCAB, n + 1).tolist() for n in lens]
    trees = [_random_tree(rng, 4) for _ in lens]
    cache = dec.prefill(prompts)
    batch = build_batch([p[-1] for p in prompts], trees, cache.lengths, cache.width)
    logits = dec.forward(batch, cache).logits
    for b, (prompt, tree) in enumerate(zip(prompts, trees)):
        alone = dec.prefill([prompt])
        one = build_batch([prompt[-1]], [tree], alone.lengths, alone.width)
        assert torch.equal(logits[b, : len(tree) + 1], dec.forward(one, alone).logits[0])


@needs_invariant_rows
def test_a_step_of_more_rows_than_a_kernel_keeps_alike_matches_each_sequence_alone():
    """52 rows in one step, SmolLM2's layer widths: oneDNN's and torch's bfloat16 products change
    kernel above 32 rows here, so the uniform linears take such a call a chunk at a time."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(4)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=576, intermediate_size=1536, num_hidden_layers=1,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=512)
    dec = ReferenceDecoder(LlamaForCausalLM(cfg).eval().to(torch.bfloat16), eos_ids=set(), attention="exact")
    rng = np.random.default_rng(4)
    prompts = [rng.integers(0, VOCAB, n + 1).tolist() for n in (5, 9, 3, 7)]
    trees = [_random_tree(rng, 12) for _ in prompts]
    cache = dec.prefill(prompts)
    logits = dec.forward(build_batch([p[-1] for p in prompts], trees, cache.lengths, cache.width), cache).logits
    for b, (prompt, tree) in enumerate(zip(prompts, trees)):
        alone = dec.prefill([prompt])
        one = build_batch([prompt[-1]], [tree], alone.lengths, alone.width)
        assert torch.equal(logits[b, : len(tree) + 1], dec.forward(one, alone).logits[0]), f"sequence {b}"


@needs_invariant_rows
@pytest.mark.parametrize("mode", ["right", "wrong", "mixed"])
def test_bfloat16_speculative_decoding_equals_plain(mode):
    model = tiny_llama(seed=5).to(torch.bfloat16)
    dec = ReferenceDecoder(model, eos_ids=set(), attention="exact")
    prompts = [[3, 9, 27, 17, 51], [1, 2, 3], [60, 4, 4, 4, 4, 4, 4]]
    plain = [g.tokens for g in dec.generate(prompts, 24)]
    spec = ScriptedDrafter(dict(enumerate(plain)), mode)
    assert [g.tokens for g in dec.generate(prompts, 24, speculator=spec)] == plain


@pytest.mark.parametrize("kwargs, error", [
    ({"attention": "fast"}, "attention 'fast': one of model, exact"),
    ({"attention": "exact", "linears": "adaptive"}, "linears 'adaptive' with attention 'exact'"),
])
def test_bad_settings_are_refused(kwargs, error):
    with pytest.raises(ValueError, match=error):
        ReferenceDecoder(tiny_llama(seed=1), eos_ids=set(), **kwargs)


@needs_invariant_rows
def test_exact_attention_takes_one_linear_way_for_every_row_count_by_default():
    dec = ReferenceDecoder(tiny_llama(seed=1).to(torch.bfloat16), eos_ids=set(), attention="exact")
    assert dec.linears == "uniform" and len({*dec.linear_plan.ways, dec.linear_plan.above}) == 1
