#!/usr/bin/env bash
# Every GPU benchmark in one process tree, as run for the tables in README/docs:
#   OUT=results/gpu MODEL_DIR=<SmolLM2-shaped folder> bash recipes/evidence/gpu_bench.sh
# MODEL_DIR may hold random weights (recipes/bench/random_weights.py): these scripts time, they do not score quality.
set -u
OUT=${OUT:-results/gpu}; MODEL_DIR=${MODEL_DIR:?set MODEL_DIR}
mkdir -p "$OUT"
run() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name"; local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$? ${name} $((SECONDS - t0))s"; tail -n 25 "$OUT/$name.log"
}
run kernel_tests 400 python -P -m pytest -q -x -p no:cacheprovider tests/kernels tests/attention/*/test_kernel.py tests/test_cache.py
run kernels 300 python recipes/bench/bench_kernels.py --graphs --out "$OUT/kernels"
run profile 60 python recipes/bench/profile_kernels.py --variants holo,performer
run scan 150 python recipes/bench/tune_scan.py --out "$OUT/scan"
run launch 120 python recipes/bench/bench_launch.py --out "$OUT/launch"
run decode 150 python recipes/bench/bench_decode.py --model-path "$MODEL_DIR" --out "$OUT/decode"
run gauge 300 python recipes/bench/bench_gauge.py --no-compile --out "$OUT/gauge"
run model 400 python recipes/bench/bench_model.py --profile --out "$OUT/model"
run decode_window 400 python recipes/bench/bench_decode.py --model-path "$MODEL_DIR" --out "$OUT/decode_window" \
  --compare --window 64 --settings "holo compiled" "performer compiled"
run prismatic 120 python recipes/bench/bench_prismatic.py --model-path "$MODEL_DIR" --out "$OUT/prismatic"
run tt 120 python recipes/bench/bench_tt.py --model-path "$MODEL_DIR" --out "$OUT/tt"
