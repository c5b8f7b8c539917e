#!/usr/bin/env bash
# Every dataset x drafter of BENCHMARKS.md's replay table (through the real Speculator); one JSON file
# per run in bench/results/.
set -euo pipefail
SSSD=${SSSD:-sssd}
mkdir -p bench/results
for ds in mtbench mtbench2 humaneval sharegpt math multiturn; do
  for drafter in sssd local datastore pld none; do
    store=(); [[ $drafter == sssd || $drafter == datastore ]] && store=(--sharegpt-datastore)
    $SSSD bench replay --dataset "$ds" "${store[@]}" --drafter "$drafter" --budgets 4,8,16,32 --blocking-lookup --json \
      > "bench/results/replay-$ds-$drafter.json"
    echo "$ds $drafter done"
  done
done
