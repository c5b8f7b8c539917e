"""How far the contention bench's speedups scatter when nothing differs: plain decoding against
itself under the same CPU burner.

``sssd bench decode --contention`` decodes each prompt set as plain decoding and SSSD in
lockstep under one CPU-burning process and reports each speculative configuration's speedup
over plain. This runs the same lockstep with a second, identical plain decoding among the
configurations (plain, plain again, SSSD with an empty datastore: three, as there), so that
"plain again" / "plain" is the speedup of a configuration that cannot gain or lose anything,
the floor of what one pass of that bench can resolve.

    .venv/bin/python bench/contention_aa.py [--dataset mtbench] [--prompts 2] [--max-new-tokens 32] [--passes 9]

Prints JSON: per pass, both ratios (and SSSD's tau); then the sorted A/A ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

from client_sdk.runtime import CPU_DECODING, build_speculator
from client_sdk.verification.decoder import ReferenceDecoder, measured_costs
from sssd.bench.decode_bench import CONTEXT, cpu_burners, measure_configs, prompts_for
from sssd.bench.provenance import stamped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mtbench", choices=("mtbench", "humaneval"))
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--passes", type=int, default=9)
    args = ap.parse_args()
    from sssd.smollm2 import load_model

    model, tok = load_model()
    decoder = ReferenceDecoder(model, {tok.eos_token_id})
    costs = measured_costs(decoder, CONTEXT)  # before the burner starts, as the bench does
    prompts = prompts_for(tok, args.dataset, args.prompts)
    passes = []
    with cpu_burners(1):
        for i in range(args.passes):
            specs = {"plain": None, "plain-again": None,
                     "sssd-empty": build_speculator(costs=copy.deepcopy(costs), config=CPU_DECODING)}
            rate = measure_configs(decoder, prompts, 1, args.max_new_tokens, specs)  # batch 1, as the bench runs them
            plain = rate["plain"]["tokens_per_s"]
            passes.append({"plain_again_over_plain": round(rate["plain-again"]["tokens_per_s"] / plain, 3),
                           "sssd_empty_over_plain": round(rate["sssd-empty"]["tokens_per_s"] / plain, 3),
                           "sssd_empty_tau": rate["sssd-empty"]["tau"]})
            print(f"pass {i + 1}/{args.passes}: {passes[-1]}", file=sys.stderr, flush=True)
    aa = sorted(p["plain_again_over_plain"] for p in passes)
    print(json.dumps(stamped({"dataset": args.dataset, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
                              "contention_processes": 1, "passes": passes, "plain_again_over_plain_sorted": aa}),
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
