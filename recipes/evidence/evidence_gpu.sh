#!/usr/bin/env bash
# M1-M5 evidence on one GPU in <= 9 minutes (H100), everything under $OUT:
#   copy task + char-LM for sdpa, holo, performer, gauge, tt (names not registered are skipped with a message),
#   SmolLM2 recovery fine-tune with holo (and its sdpa baseline), a seq_len x attention sweep, a seq_len x rank
#   sweep (tt), entropy-ranked head pruning, and `hf-attn report`.
# Usage (repo root):  OUT=/tmp/ev SMOLLM2=/path/to/smollm2-folder bash recipes/evidence/evidence_gpu.sh
#   SMOLLM2: a from_pretrained folder (default 'smollm2' = hf_attn.assets.smollm2_path(), needs gguf on first use)
#   SMOKE=1: tiny sizes and 2 steps, to check the script on a CPU in a few minutes.
#   STAGES="m13 m2 m4 m4tt m5": the milestones to run (default all; m4 = seq_len x attention, m4tt = seq_len x
#   TT rank, plus dense sdpa at the same points when m4 is not run); M5 prunes the char-LM runs of M1-M3, else the T=1024 sweep runs of M4, else trains the two
#   char-LMs it prunes. The report covers whatever ran.
set -uo pipefail
OUT=${OUT:-results/evidence}
SMOLLM2=${SMOLLM2:-smollm2}
mkdir -p "$OUT/runs" "$OUT/sweeps"
python -c "import hf_attn.adapters" 2>/dev/null || pip install -q --no-deps --no-build-isolation -e . || exit 1  # no network for build isolation on the GPU machine
exec > >(tee -a "$OUT/evidence.log") 2>&1
echo "# $(date -u) $(git rev-parse --short HEAD 2>/dev/null) $(python -c 'import torch;print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"

STAGES=" ${STAGES:-m13 m2 m4 m4tt m5} "
stage() { [[ $STAGES == *" $1 "* ]]; }
SET=()
SWEEP_SET="train.steps: 100"
SEQS="[512, 1024, 2048]"
PRUNE_SEQ=1024
if [[ "${SMOKE:-0}" == 1 ]]; then
  SET=(--set train.steps=2 --set data.batch_size=2 --set data.eval_batches=1 --set model.num_layers=1 --set model.hidden_size=64
       --set train.eval_every=1 --set train.diag_every=2 --set train.diag_tokens=16 --set data.max_chars=200000)
  SWEEP_SET="train.steps: 2, data.batch_size: 2, data.eval_batches: 1, model.num_layers: 1, model.hidden_size: 64, data.max_chars: 200000"
  SEQS="[64, 128]"
  PRUNE_SEQ=128
fi

registered() {  # attention variant or wrapper name known to this installation?
  python - "$1" <<'PY'
import sys, hf_attn
from hf_attn.registry import BUILTIN_IMPLEMENTATIONS
n = sys.argv[1]
sys.exit(0 if n in BUILTIN_IMPLEMENTATIONS or n in hf_attn.list_variants() or n in hf_attn.list_wrappers() else 1)
PY
}
train() {  # train RECIPE NAME [extra args]: one run, timed, logged; failures are reported and the script goes on
  local recipe=$1 name=$2; shift 2
  local t0=$SECONDS
  python -m hf_attn.train --config "recipes/train/$recipe.yaml" --out_dir "$OUT/runs/$name" "${SET[@]}" "$@" \
    > "$OUT/runs/$name.log" 2>&1 && echo "ok    $name ($((SECONDS - t0)) s)" || echo "FAIL  $name: see $OUT/runs/$name.log"
}

ATTN=(); for a in sdpa holo performer gauge; do registered $a && ATTN+=($a) || echo "skip  $a: not registered here"; done
HAVE_TT=0; registered tt && HAVE_TT=1 || echo "skip  tt: wrapper not registered here"

# M1-M3: copy task and char-LM (Wikipedia summaries, 4.4 M train / 0.49 M test characters) per variant.
if stage m13; then
  for a in "${ATTN[@]}"; do train copy_$a copy_$a; train charlm_$a charlm_$a; done
  if [[ $HAVE_TT == 1 ]]; then train copy_tt copy_tt; train charlm_tt charlm_tt; fi
fi

# M2 recovery: SmolLM2-135M, attention swapped to holo, attention projections retrained; sdpa baseline.
stage m2 && for a in holo sdpa; do
  registered $a && train recovery_smollm2_$a recovery_smollm2_$a --set model.model_path="$SMOLLM2"
done

# M4 sweeps (100 steps per point): seq_len x attention, and seq_len x TT rank.
if stage m4; then
  attn_list=$(IFS=,; echo "${ATTN[*]}")
  cat > "$OUT/sweeps/seq_attention.yaml" <<YAML
base: $PWD/recipes/train/charlm_sdpa.yaml
out_dir: $OUT/sweeps/seq_attention
grid: {data.seq_len: $SEQS, model.attention: [$attn_list]}
set: {$SWEEP_SET}
YAML
  t0=$SECONDS; python -m hf_attn.cli sweep "$OUT/sweeps/seq_attention.yaml" > "$OUT/sweeps/seq_attention.log" 2>&1
  echo "sweep seq x attention: $((SECONDS - t0)) s"; cat "$OUT/sweeps/seq_attention/sweep.csv"
fi
if stage m4tt && [[ $HAVE_TT == 1 ]]; then
  if ! stage m4; then  # the TT points' baseline: dense sdpa at the same seq_lens and steps (M4 runs it otherwise)
    cat > "$OUT/sweeps/seq_sdpa.yaml" <<YAML
base: $PWD/recipes/train/charlm_sdpa.yaml
out_dir: $OUT/sweeps/seq_sdpa
grid: {data.seq_len: $SEQS}
set: {$SWEEP_SET}
YAML
    python -m hf_attn.cli sweep "$OUT/sweeps/seq_sdpa.yaml" > "$OUT/sweeps/seq_sdpa.log" 2>&1
  fi
  cat > "$OUT/sweeps/seq_rank_tt.yaml" <<YAML
base: $PWD/recipes/train/charlm_tt.yaml
out_dir: $OUT/sweeps/seq_rank_tt
grid: {data.seq_len: $SEQS, model.wrapper.rank: [8, 16, 32]}
set: {$SWEEP_SET}
YAML
  t0=$SECONDS; python -m hf_attn.cli sweep "$OUT/sweeps/seq_rank_tt.yaml" > "$OUT/sweeps/seq_rank_tt.log" 2>&1
  echo "sweep seq x rank: $((SECONDS - t0)) s"; cat "$OUT/sweeps/seq_rank_tt/sweep.csv"
fi

# M5 entropy-ranked head pruning on the char-LMs.
stage m5 && for a in sdpa holo; do
  r=$OUT/runs/charlm_$a; [[ -f $r/final.json ]] || r=$(ls -d "$OUT"/sweeps/seq_attention/*seq_len=${PRUNE_SEQ}__attention=$a 2>/dev/null)
  [[ -f $r/final.json ]] || { r=$OUT/runs/charlm_$a; train charlm_$a charlm_$a; }
  [[ -f $r/final.json ]] && python -m hf_attn.cli prune "$r" > "$r.prune.log" 2>&1 \
    && cat "$r/pruning.md" || echo "FAIL  prune $a (${r:-no run})"
done

# M6 report.
python -m hf_attn.cli report "$OUT/runs" "$OUT/sweeps" --out "$OUT/report" && echo "report: $OUT/report/report.md"
echo "total: $SECONDS s"
