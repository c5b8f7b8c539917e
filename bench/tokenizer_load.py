"""What loading the bundled SmolLM2 tokenizer costs a command: built from the GGUF by transformers
(an empty cache), and read back from the cache (``sssd.tokenizers.gguf_tokenizer``), in one process,
transformers imported before either clock starts.

    .venv/bin/python bench/tokenizer_load.py

Prints JSON: the seconds of each load, and whether the two tokenizers have the same fingerprint.
"""

from __future__ import annotations

import json
import os
import tempfile
import time


def main() -> None:
    import transformers  # noqa: F401 - its import is not what is measured

    from sssd.bench.provenance import stamped
    from sssd.smollm2 import gguf_path
    from sssd.tokenizers import fingerprint, gguf_tokenizer

    with tempfile.TemporaryDirectory() as cache:
        os.environ["SSSD_CACHE"] = cache
        t0 = time.perf_counter()
        built = gguf_tokenizer(gguf_path())
        t1 = time.perf_counter()
        read = gguf_tokenizer(gguf_path())
        t2 = time.perf_counter()
    print(json.dumps(stamped({"built_s": round(t1 - t0, 3), "cached_s": round(t2 - t1, 3),
                              "same_fingerprint": fingerprint(built) == fingerprint(read)}), indent=1))


if __name__ == "__main__":
    main()
