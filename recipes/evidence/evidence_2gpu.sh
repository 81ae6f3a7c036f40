#!/usr/bin/env bash
# Multi-GPU evidence (2 GPUs of one host): the char-LM with holo on 1 GPU and on 2 GPUs (DDP, same per-GPU
# batch), printing the throughput ratio, then the SmolLM2 holo recovery fine-tune under FSDP on 2 GPUs.
# Usage (repo root):  OUT=/tmp/ev2 SMOLLM2=/path/to/smollm2-folder bash recipes/evidence/evidence_2gpu.sh    (~4 min)
set -uo pipefail
OUT=${OUT:-results/evidence_2gpu}
SMOLLM2=${SMOLLM2:-smollm2}
STEPS=${STEPS:-300}
mkdir -p "$OUT/runs"
python -c "import hf_attn.adapters" 2>/dev/null || pip install -q --no-deps --no-build-isolation -e . || exit 1  # no network for build isolation on the GPU machine
exec > >(tee -a "$OUT/evidence.log") 2>&1
COMMON=(--config recipes/train/charlm_holo.yaml --set train.steps=$STEPS --set train.log_every=20)

python -m accelerate.commands.launch --config_file recipes/accelerate/single.yaml -m hf_attn.train "${COMMON[@]}" \
  --out_dir "$OUT/runs/charlm_holo_1gpu" > "$OUT/runs/charlm_holo_1gpu.log" 2>&1 || echo "FAIL 1 GPU"
python -m accelerate.commands.launch --config_file recipes/accelerate/multi_gpu.yaml --num_processes 2 -m hf_attn.train \
  "${COMMON[@]}" --out_dir "$OUT/runs/charlm_holo_2gpu" > "$OUT/runs/charlm_holo_2gpu.log" 2>&1 || echo "FAIL 2 GPU"
python - "$OUT/runs" <<'PY'
import sys
from pathlib import Path
from hf_attn.train.rundir import read_run
one, two = (read_run(Path(sys.argv[1]) / f"charlm_holo_{n}gpu") for n in (1, 2))
t1, t2 = one.median("tokens_per_s"), two.median("tokens_per_s")
print(f"tokens/s 1 GPU {t1:.0f}, 2 GPUs {t2:.0f}: ratio {t2 / t1:.2f}x; checksums agree: "
      f"{len(set(two.final['param_checksums'])) == 1}; eval bpc 1 GPU {one.last('eval_bpc'):.4f}, 2 GPUs {two.last('eval_bpc'):.4f}")
PY
python -m accelerate.commands.launch --config_file recipes/accelerate/fsdp.yaml --num_processes 2 -m hf_attn.train \
  --config recipes/train/recovery_smollm2_holo.yaml --set model.model_path="$SMOLLM2" --set train.steps=100 \
  --out_dir "$OUT/runs/recovery_smollm2_holo_fsdp" > "$OUT/runs/recovery_fsdp.log" 2>&1 \
  && tail -3 "$OUT/runs/recovery_smollm2_holo_fsdp/metrics.csv" || echo "FAIL FSDP: see $OUT/runs/recovery_fsdp.log"
python -m hf_attn.cli report "$OUT/runs" --out "$OUT/report"
