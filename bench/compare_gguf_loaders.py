"""The hand-written GGUF loader (sssd.smollm2) against transformers' own GGUF loading.

Needs ``pip install accelerate`` (transformers requires it for GGUF; sssd does not).
Prints one JSON line: load seconds of each (cold process, transformers first) and the
largest difference between their weights and logits. Result and reasoning: BENCHMARKS.md.
"""

import json
import time

import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from sssd.smollm2 import _read_gguf, gguf_path, load_tokenizer

path = gguf_path()
t = time.perf_counter()
theirs = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
t_theirs = time.perf_counter() - t
t = time.perf_counter()
config, state = _read_gguf(path)
ours = LlamaForCausalLM(config)
ours.load_state_dict(state, strict=False)
ours.tie_weights()
ours.eval()
t_ours = time.perf_counter() - t
ids = torch.tensor([load_tokenizer()("The capital of France is")["input_ids"]])
with torch.no_grad():
    logits = (ours(ids).logits - theirs(ids).logits).abs().max().item()
a, b = ours.state_dict(), theirs.state_dict()
weights = max((a[k] - b[k]).abs().max().item() for k in a if k in b)
print(json.dumps({"hand_written_s": round(t_ours, 1), "transformers_s": round(t_theirs, 1),
                  "max_weight_diff": weights, "max_logit_diff": logits,
                  "only_in_one": sorted(set(a) ^ set(b))}))
