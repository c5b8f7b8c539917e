#!/bin/bash
# On a lent GPU machine, as the device tool's `run` command with carry [".whl", ".gpu"] (made here
# by `make gpu-bundle`): `bash bench/gpu_run.sh`. Installs the carried wheels, runs the GPU-marked
# tests (TESTS=0: not), then RUNS (default 3) runs of bench/gpu_decode.py, each a JSON file under $OUT, and prints
# a short table of each. About 2 minutes per run on an H200 plus the machine's start. Before the runs,
# bench/full_mask.py --device cuda times the verify's full attention mask both ways (full-mask.json).
# DRAFT_THREADS="1 8": run i builds its drafts on the list's ((i - 1) mod length)-th count of cores
# (--draft-threads; default "1"), so that one lease compares serial and parallel drafting in turns.
set -u
: "${OUT:?set OUT: the folder whose files come back}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "the carried wheels did not install (make gpu-bundle, carry .whl)"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv \
  > "$OUT/nvidia-smi.csv"
if [ "${TESTS:-1}" = 1 ]; then  # TESTS=0: the runs only
  timeout 150 python3 -m pytest -p no:cacheprovider --noconftest -m gpu -q -rs \
    tests/test_decoder.py tests/test_gpu_decode_bench.py 2>&1 | tail -4 | tee "$OUT/pytest-gpu.txt"
fi
if [ "${FULL_MASK:-1}" = 1 ]; then  # the verify's full mask, NGRAM's way against the worker's (FULL_MASK=0: not)
  timeout 120 python3 bench/full_mask.py --device cuda > "$OUT/full-mask.json" 2> "$OUT/full-mask.log"
  echo "full mask on the GPU: exit $?"
fi
read -r -a threads <<< "${DRAFT_THREADS:-1}"
for i in $(seq 1 "${RUNS:-3}"); do
  t=${threads[$(( (i - 1) % ${#threads[@]} ))]}
  timeout 200 python3 bench/gpu_decode.py run --data .gpu/data.npz --draft-threads "$t" \
    > "$OUT/run$i.json" 2> "$OUT/run$i.log"
  echo "run $i (draft threads $t): exit $?"
  python3 bench/gpu_decode.py summary "$OUT/run$i.json" || tail -5 "$OUT/run$i.log"
done
