#!/usr/bin/env bash
# Everything a CUDA machine should check, in one command (about 10 minutes on one H100):
#   bash benchmarks/gpu_checks.sh OUT_DIR          # all steps
#   bash benchmarks/gpu_checks.sh OUT_DIR 1        # steps 0-2 (about 5 minutes), then
#   bash benchmarks/gpu_checks.sh OUT_DIR 2        # steps 3-5: for machines lent 10 minutes a command
# 0. which kernels run, each checked against the reference and timed beside fp16 -> OUT_DIR/kernels.txt
# 1. the test suite on CUDA (CUDA-only tests included)          -> OUT_DIR/pytest.log
# 2. the shipped tile tables against fp16 at key layer shapes   -> OUT_DIR/tune_cuda_tiles.json
# 3. whole-model latency, CUDA-graph replays, ViT-B-32 / B-16 / L-14, the ternary model with and without
#    its LayerNorms / GELUs fused into the kernels                -> OUT_DIR/bench_kernels_cuda.csv
# 4. the bench's efficiency cells, fp16 vs the ternary kernels  -> OUT_DIR/efficiency.tgz
# 5. the host CPU's W1.58A8 kernels (quad-table, pair-table, FBGEMM) per layer (a VNNI CPU?) -> OUT_DIR/bench_kernels_cpu.csv
# Each step has its own time limit so one slow step cannot take the others' output with it.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR [1|2]}
part=${2:-all}
case "$part" in all|1|2) ;; *) echo "part must be 1 or 2 (or left out for all), got '$part'" >&2; exit 2;; esac
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

if [ "$part" != 2 ]; then
timeout 120 python3 -c 'import sys; from bench.cli import main; sys.exit(main())' kernels --check --bench 2>&1 \
    | tee "$out/kernels.txt" | tail -40
parallel=$(python3 -c 'import xdist' 2>/dev/null && echo "-n 8")  # pytest-xdist when installed
timeout 300 python3 -m pytest -q -p no:cacheprovider -rfs tests $parallel 2>&1 | tee "$out/pytest.log" | tail -8
timeout 210 python3 benchmarks/tune_cuda_tiles.py --configs rules --out "$out" \
    --shapes 50x768x3072 77x512x2048 1600x768x3072 1600x3072x768 6304x768x3072 8224x1024x4096 | tail -8
fi
if [ "$part" != 1 ]; then
timeout 330 python3 benchmarks/bench_kernels.py --device cuda --modes graph --no-layers --repeats 20 \
    --archs ViT-B-32 ViT-B-16 ViT-L-14 --out "$out" | tail -30
timeout 120 python3 -c 'import sys; from bench.cli import main; sys.exit(main())' run --tasks efficiency \
    --models ViT-B-32@fp16 ViT-B-32@q-all-a8-fp16 ViT-B-32@q-all-a8-2bit-fp16 ViT-B-32@q-all-2bit-fp16 \
    --out "$out/efficiency" --no-report --no-progress 2>&1 | grep -v "^WARNING" | tail -8
(cd "$out" && tar czf efficiency.tgz efficiency && rm -rf efficiency)
grep -o -m1 -E "avx512_vnni|avx_vnni" /proc/cpuinfo > "$out/cpu_vnni.txt"; nproc >> "$out/cpu_vnni.txt"
timeout 150 python3 benchmarks/bench_kernels.py --device cpu --quick --no-e2e --batches 32 \
    --variants fp32 q-all-a8 q-all-a8-pairs q-all-a8-fbgemm --out "$out" | tail -20
fi
