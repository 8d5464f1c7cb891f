#!/usr/bin/env bash
# The CPU goals of issue 19 on this machine's full ISA and again restricted to AVX2 code paths,
# so an AVX-512 machine also gives figures for what an AVX2-only CPU runs. The restriction is
# set at every level that dispatches on the ISA: PyTorch's own kernels (ATEN_CPU_CAPABILITY),
# oneDNN (ONEDNN_MAX_CPU_ISA), MKL (MKL_ENABLE_INSTRUCTIONS) and the native osep kernel
# (OSEP_NAS_NATIVE_ARCH=x86-64-v3, its own build and autotune cache). Same instructions, not the
# same CPU: cache sizes, memory and clocks stay this machine's (benchmarks/RESULTS.md says so).
#   bash benchmarks/cpu_isa.sh                       # both, all cores; JSON in $OUT
#   THREADS=1 ISAS=avx2 TRAIN_GROUPS="darts-8x5 resnet" bash benchmarks/cpu_isa.sh
#                                         # only the AVX2 paths, one thread, no 20-cell DARTS step
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
[ "$(uname -m)" = x86_64 ] || { echo "cpu_isa.sh: x86-64 only (AVX2 is an x86 ISA)" >&2; exit 2; }
THREADS=${THREADS:-$(nproc)}
ISAS=${ISAS:-"native avx2"}
TRAIN_GROUPS=${TRAIN_GROUPS:-"darts darts-8x5 resnet"}  # train_throughput's groups
OUT=${OUT:-benchmarks/results/cpu-isa-$(date +%Y%m%d)}
mkdir -p "$OUT"
grep -m1 "model name" /proc/cpuinfo > "$OUT/cpu.txt"; grep -m1 "^flags" /proc/cpuinfo >> "$OUT/cpu.txt"
status=0
for isa in $ISAS; do
  case $isa in
    native) ENV=() ;;
    avx2) ENV=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
                OSEP_NAS_NATIVE_ARCH=x86-64-v3) ;;
    *) echo "cpu_isa.sh: unknown ISA '$isa' (native, avx2)" >&2; exit 2 ;;
  esac
  for bench in op_speed train_throughput; do
    extra=""; [ $bench = train_throughput ] && extra="--groups $TRAIN_GROUPS"
    echo "== $bench, $isa code paths, $THREADS thread(s)"
    env "${ENV[@]}" OMP_NUM_THREADS="$THREADS" $PY benchmarks/$bench.py --device cpu --threads "$THREADS" $extra \
      --json "$OUT/${bench}_${isa}_${THREADS}t.json" | tee "$OUT/${bench}_${isa}_${THREADS}t.txt" || status=1
  done
done
echo "cpu_isa.sh: figures in $OUT"
exit $status
