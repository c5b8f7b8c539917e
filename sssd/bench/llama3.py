"""The Llama-3 tokenizer (tiktoken BPE from the llama-models package) and its chat format.

Matches the replay setting of ../shared/ANCHORS.md: prompt = <|begin_of_text|> then per
message <|start_header_id|>{role}<|end_header_id|> + enc("\\n\\n" + content.strip()) +
<|eot_id|>, then the assistant header + enc("\\n\\n"); response = enc(text.strip()) + <|eot_id|>.
"""

from __future__ import annotations

import functools
import importlib.resources

PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_BASE = 128_000
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
           "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|eom_id|>", "<|eot_id|>"]
VOCAB_SIZE = NUM_BASE + 256
BOT, START_HEADER, END_HEADER, EOT = 128000, 128006, 128007, 128009


@functools.cache
def encoding():
    """The tiktoken Encoding; needs the ``bench`` extra (tiktoken, llama-models)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = importlib.resources.files("llama_models").joinpath("llama3/tokenizer.model")
    ranks = load_tiktoken_bpe(str(path))
    specials = SPECIAL + [f"<|reserved_special_token_{i}|>" for i in range(3, 256 - len(SPECIAL) + 3)]
    return tiktoken.Encoding(
        name="llama3", pat_str=PATTERN, mergeable_ranks=ranks,
        special_tokens={tok: NUM_BASE + i for i, tok in enumerate(specials)},
    )


def encode(text: str) -> list[int]:
    return encoding().encode(text, disallowed_special=())


def encode_batch(texts: list[str]) -> list[list[int]]:
    return encoding().encode_ordinary_batch(texts, num_threads=2)


def chat_prompt(messages: list[tuple[str, str]]) -> list[int]:
    out = [BOT]
    for role, content in messages:
        out += [START_HEADER] + encode(role) + [END_HEADER] + encode("\n\n" + content.strip()) + [EOT]
    return out + [START_HEADER] + encode("assistant") + [END_HEADER] + encode("\n\n")


def response(text: str, cap: int = 512, strip: bool = True) -> list[int]:
    return (encode(text.strip() if strip else text) + [EOT])[:cap]
