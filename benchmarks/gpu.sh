#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md for a lent device (issue 19): op_speed,
# train_throughput and search_epoch on CUDA, in fp32 and with AMP (float16 autocast), each
# writing JSON into $OUT (default benchmarks/results/gpu/<GPU name>/). Sized to finish in under
# 4 minutes on one GPU; every step has its own time limit, so one slow step cannot eat the rest.
#   bash benchmarks/gpu.sh                 # on the device machine, from the repository root
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh   # a dry run of the same steps on the CPU
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then
  NAME=$($PY -c "import torch, sys; sys.exit('gpu.sh: no CUDA device (DEVICE=cpu for a dry run)') \
    if not torch.cuda.is_available() else print(torch.cuda.get_device_name(0).replace(' ', '_'))") || exit 2
else
  NAME=cpu-dry-run
fi
OUT=${OUT:-benchmarks/results/gpu/$NAME}
mkdir -p "$OUT"
# QUICK=1: one round of small batches, to check the script and the code paths, not to measure
if [ -n "${QUICK:-}" ]; then
  R="--repeats 1 --warmup 1"; OS="--batch 8 --layers-only"; TT="--darts-batch 8 --resnet-batch 8"
  SB="--batches 1 --batch-size 8"
else
  R="--repeats 5 --warmup 2"; OS=""; TT=""; SB="--batches 10"
fi
SCALE=1; [ "$DEVICE" = cpu ] && SCALE=8  # a CPU dry run gets 8x the GPU's time limits
status=0
step() {  # step SECONDS NAME COMMAND...: run with a time limit, keep going on failure
  local limit=$1 name=$2; shift 2
  echo "== $name"
  timeout "$((limit * SCALE))" "$@" || { echo "gpu.sh: $name failed or ran past $((limit * SCALE)) s (exit $?)" >&2; status=1; }
}
for mode in fp32 amp; do
  AMP=""; [ $mode = amp ] && AMP="--amp"
  step 40 "op_speed $mode" $PY benchmarks/op_speed.py --device "$DEVICE" $AMP $R $OS --json "$OUT/op_speed_$mode.json"
  step 40 "train_throughput $mode" $PY benchmarks/train_throughput.py --device "$DEVICE" $AMP $R $TT \
    --json "$OUT/train_throughput_$mode.json"
  step 30 "search_epoch $mode" $PY benchmarks/search_epoch.py --device "$DEVICE" $AMP $SB $R \
    --json "$OUT/search_epoch_$mode.json"
done
echo "gpu.sh: JSON in $OUT$([ $status = 0 ] || echo ' (some steps failed, see above)')"
exit $status
