"""Tokenizers for ingestion: a tokenizer.json, a GGUF file, or a Hugging Face model directory.

Chat records are rendered with the model's own chat template (the text the model sees at
decode time, so datastore matches line up with live contexts). Needs the ``demo`` extra
(transformers; gguf for GGUF files).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


# a model directory holds at least one of these (transformers finds its tokenizer from any of them)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt", "config.json")


def load_tokenizer(path: str):
    """Raises ValueError, in one line, when ``path`` is none of the supported kinds or does not
    load as one (a damaged tokenizer.json, a directory without a tokenizer)."""
    p = Path(path)
    if not p.exists():  # (it said "expected a tokenizer.json, ..." of a tokenizer.json path with a typo)
        raise ValueError(f"--tokenizer {path!r}: no such file or directory")
    if not ((p.suffix == ".gguf" and p.is_file()) or p.is_dir() or (p.name.endswith(".json") and p.is_file())):
        raise ValueError(f"--tokenizer {path!r}: expected a tokenizer.json, a .gguf file or a model directory")
    if p.is_dir() and not any((p / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"--tokenizer {path!r}: the directory holds none of {', '.join(TOKENIZER_FILES)}")
    try:
        return _load(p)
    except Exception as exc:  # (the tokenizers library's own exceptions, transformers' several-line ones)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--tokenizer {path!r} does not load as a tokenizer: {reason}") from None


def _load(p: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if p.suffix == ".gguf":
        return gguf_tokenizer(p)
    if p.is_dir():
        return AutoTokenizer.from_pretrained(str(p))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(p))
    template = chat_template_beside(p.parent)
    if template:
        tok.chat_template = template
    return tok


def gguf_tokenizer(p: Path):
    """A GGUF file's tokenizer. transformers builds it from the file's vocabulary and merges (about
    9 s for SmolLM2's 49k tokens on 2 cores, at every command that tokenises); it is built once and
    saved under the cache (``sssd.paths.cache_dir()/tokenizers/``, keyed by the file's path, size
    and modification time), and loaded from there after (0.2 s). A cache that cannot be written is
    said in a warning, and the tokenizer built each time."""
    import logging
    import os
    import shutil

    from transformers import AutoTokenizer

    from sssd.paths import cache_dir, derived_name, prune_derived, used

    p = p.resolve()
    saved = cache_dir() / "tokenizers" / derived_name(p)
    if saved.is_dir():
        try:
            tok = AutoTokenizer.from_pretrained(str(saved))
            used(saved)  # (the tokenizers kept are the ones used last: prune_derived)
            return tok
        except Exception as exc:  # (damaged by hand, say: built again below, over it)
            logging.getLogger("sssd").warning("the cached tokenizer %s does not load (%s); building it again",
                                              saved, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    tmp = saved.with_name(f"{saved.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(saved, ignore_errors=True)
        tok.save_pretrained(str(tmp))
        os.rename(tmp, saved)  # whole or absent: a run killed while saving leaves only a temporary folder
        prune_derived(saved)  # other installs' copies of this GGUF
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if saved.is_dir():  # another process saved it first: no failure
            return tok
        logging.getLogger("sssd").warning("cannot cache the tokenizer of %s in %s (%s): it is built at every load",
                                          p.name, saved.parent, exc.strerror or exc)
    return tok


def chat_template_beside(folder: Path) -> str | dict | None:
    """The chat template stored next to a tokenizer.json, as transformers reads it for a model
    directory: chat_template.jinja (where recent transformers save it: 5.23 here) first, else the
    "chat_template" field of tokenizer_config.json (a list of named templates becomes a dict of
    them, as transformers makes it); None when neither has one."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, list):
            template = {t["name"]: t["template"] for t in template}
        return template or None
    return None


def fingerprint(tok) -> str:
    """A short stable identity of a tokenizer (vocabulary + template), for namespace checks."""
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    h = hashlib.sha256(json.dumps(vocab[:50000]).encode() + str(getattr(tok, "chat_template", "")).encode())
    return f"{type(tok).__name__}:{len(vocab)}:{h.hexdigest()[:16]}"


def message_text(content, where: str) -> str:
    """A chat message's content as text: a string; a list of text parts, as OpenAI-style logs hold
    it, joined by newlines; None (an assistant turn that only called tools) as "". A ValueError
    naming ``where`` for anything else (an image part: only text is stored)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"{where}: only text parts are stored, not {kind!r}")
            if not isinstance(part.get("text"), str):
                raise ValueError(f"{where}: a text part's 'text' must be a string")
        return "\n".join(part["text"] for part in content)
    raise ValueError(f"{where}: 'content' must be text or a list of text parts, not {type(content).__name__}")


def record_tokens(tok, rec: dict, where: str) -> list[int]:
    """Token ids of one JSONL record: {"tokens": [...]}, {"messages": [...]} or {"text": "..."}."""
    if rec.get("tokens") is not None:
        return list(rec["tokens"])
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in msgs):
            raise ValueError(f"{where}: 'messages' must be a list of {{role, content}} objects")
        if not msgs:  # (transformers' own words named no line)
            raise ValueError(f"{where}: 'messages' is empty")
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"{where}: the tokenizer has no chat template; give a model directory or GGUF")
        msgs = [{**m, "content": message_text(m["content"], f"{where}: message {i}")} for i, m in enumerate(msgs)]
        ids = tok.apply_chat_template(msgs, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "input_ids") else ids)
    if "text" in rec:
        if not isinstance(rec["text"], str):
            raise ValueError(f"{where}: 'text' must be a string, not {type(rec['text']).__name__}")
        return tok(rec["text"], add_special_tokens=False)["input_ids"]
    raise ValueError(f"{where}: a record needs 'tokens', 'messages' or 'text'")
