"""sssd.smollm2.gguf_values: a GGUF's metadata read from its header, without gguf's whole-file reader."""

from __future__ import annotations

import struct

import pytest

from sssd.smollm2 import context_length, gguf_values


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _header(pairs: list[tuple[str, int, bytes]], version: int = 3, magic: bytes = b"GGUF") -> bytes:
    """A GGUF header of (key, value type, encoded value) pairs and no tensors."""
    out = magic + struct.pack("<IQQ", version, 0, len(pairs))
    for key, kind, value in pairs:
        out += _string(key) + struct.pack("<I", kind) + value
    return out


PAIRS = [
    ("general.name", 8, _string("tiny")),
    ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + _string("a") + _string("bc") + _string("")),
    ("llama.rope.freq_base", 6, struct.pack("<f", 0.5)),
    ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, 2) + struct.pack("<ii", -1, 7)),
    ("tokenizer.ggml.add_bos_token", 7, b"\x01"),
    ("llama.context_length", 4, struct.pack("<I", 2048)),
    ("big", 10, struct.pack("<Q", 1 << 40)),
    ("neg", 11, struct.pack("<q", -3)),
    ("small", 3, struct.pack("<h", -2)),
    ("byte", 0, b"\xff"),
    ("double", 12, struct.pack("<d", 0.25)),
]


@pytest.mark.parametrize("keys,expected", [
    (["llama.context_length"], {"llama.context_length": 2048}),
    (["general.name", "neg", "double"], {"general.name": "tiny", "neg": -3, "double": 0.25}),
    (["tokenizer.ggml.tokens", "tokenizer.ggml.token_type"],
     {"tokenizer.ggml.tokens": ["a", "bc", ""], "tokenizer.ggml.token_type": [-1, 7]}),
    (["tokenizer.ggml.add_bos_token", "llama.rope.freq_base", "big", "small", "byte"],
     {"tokenizer.ggml.add_bos_token": True, "llama.rope.freq_base": 0.5, "big": 1 << 40, "small": -2, "byte": 255}),
    (["absent", "llama.context_length"], {"llama.context_length": 2048}),  # (read to the end: no error)
    ([], {}),
])
def test_values_of_every_kind_are_read(tmp_path, keys, expected):
    path = tmp_path / "m.gguf"
    path.write_bytes(_header(PAIRS))
    assert gguf_values(path, keys) == expected


def test_reading_stops_at_the_last_key_asked(tmp_path):
    """A value past the last key asked for is never read (an unknown type there raises no error)."""
    path = tmp_path / "m.gguf"
    path.write_bytes(_header([("llama.context_length", 4, struct.pack("<I", 4096)), ("odd", 99, b"")]))
    assert context_length(path) == 4096
    with pytest.raises(ValueError, match="value type 99 is unknown"):
        gguf_values(path, ["llama.context_length", "later"])


@pytest.mark.parametrize("data,message", [
    (_header(PAIRS, magic=b"GGML"), "is not a GGUF file of version 2 or 3"),
    (_header(PAIRS, version=1), "is not a GGUF file of version 2 or 3"),
    (_header(PAIRS)[:-3], "the GGUF header ends early"),
    (b"", "is not a GGUF file"),
    (_header([("general.name", 8, _string("x"))]), "holds no llama.context_length"),
])
def test_a_file_that_is_no_gguf_header_is_a_one_line_error(tmp_path, data, message):
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message):
        context_length(path) if "context_length" in message else gguf_values(path, ["absent"])


def test_the_bundled_models_header_reads_as_ggufs_own_reader_does(smollm2_available):
    from gguf import GGUFReader

    from sssd.smollm2 import _field, gguf_path

    reader = GGUFReader(str(gguf_path()))
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    ours = gguf_values(gguf_path(), keys)
    assert ours.keys() == set(keys)
    for key in keys:
        theirs = _field(reader, key)
        assert ours[key] == (pytest.approx(theirs) if isinstance(theirs, float) else theirs), key
    assert context_length() == reader.fields["llama.context_length"].contents() == 8192


def test_the_tokenizer_loads_once_however_its_file_is_named(smollm2_available):
    """(``load_tokenizer()`` and ``load_tokenizer(gguf_path())`` were two cache entries: the
    generate command, which reads the prompt's length before the model loads, loaded it twice.)"""
    from sssd.smollm2 import gguf_path, load_tokenizer

    assert load_tokenizer() is load_tokenizer(gguf_path()) is load_tokenizer(str(gguf_path()))
