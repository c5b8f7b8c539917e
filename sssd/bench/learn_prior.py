"""``python -m sssd.bench.learn_prior``: the calibration prior shipped with the SDK.

Replays ShareGPT conversations 1000-1999 (neither in the replay datastore, 2000+, nor in the
reserved evaluation slice, 0-999) with the sssd drafter at budget 16 and saves the learned
P(accepted | parent accepted) table as client_sdk/calibration_prior.npy. Cells the replay
never tested keep the hand-set PRIOR. The SDK keeps learning online from there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from client_sdk.drafting import tree
from sssd.bench import datasets, llama3
from client_sdk.drafting.drafters import CalibratedMerge
from sssd.bench.replay import InProcessDatastore, Replayer

OUT = Path(tree.__file__).with_name("calibration_prior.npy")


def training_cases(limit: int = 150) -> list[dict]:
    cases = []
    for conv in datasets.sharegpt_conversations()[1000:2000]:
        t = datasets._turns(conv)
        if len(t) >= 2 and t[0][0] == "user" and t[1][0] == "assistant" and 1 <= len(t[0][1]) <= 2000 \
                and len(t[1][1].strip()) >= 32:
            cases.append({"prompt": llama3.chat_prompt([t[0]]), "response": llama3.response(t[1][1])})
    return cases[:limit]


def main() -> int:
    store = InProcessDatastore(datasets.sharegpt_datastore(), llama3.VOCAB_SIZE)
    hand_set = np.broadcast_to(tree.PRIOR, (tree.MAX_SLOTS, tree.K_BUCKETS) + tree.PRIOR.shape).copy()
    replayer = Replayer(CalibratedMerge(), 16, store.lookup, prior=hand_set)  # not the shipped file: reproducible
    for case in training_cases():
        replayer.run_case(case["prompt"], case["response"])
    np.save(OUT, (replayer.calibration.hits / replayer.calibration.tests).astype(np.float32))
    print(f"wrote {OUT} (tau {replayer.result()['tau']} on the training replay)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
