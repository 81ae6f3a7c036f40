#!/usr/bin/env bash
# Conversion evidence on one GPU: SmolLM2-135M converted to each VARIANT[:WINDOW] with `hf-attn convert`,
# each run's report under $OUT. Defaults are the figures in docs/results/convert_smollm2_gpu/.
# Usage (repo root):  OUT=/tmp/conv SMOLLM2=/path/to/smollm2-folder bash recipes/evidence/convert_gpu.sh
#   VARIANTS="performer:64 holo:64 performer:0 holo:0 gauge:0"   TRANSFER=200 RECOVER=300 SEQ=512 BATCH=8
#   PASSKEY=50 DECODE=16384 LR=1e-3 (stage 1's rate; unset: hf-attn convert's default); a finished stage is
#   skipped on a re-run (the command resumes).
set -uo pipefail
OUT=${OUT:-results/convert}
SMOLLM2=${SMOLLM2:-smollm2}
RUNS=${RUNS:-$OUT/runs}
mkdir -p "$OUT" "$RUNS"
(cd / && python -c "import hf_attn.adapters") 2>/dev/null || pip install -q --no-deps --no-build-isolation . || exit 1  # regular install: maps adapters/, modeling/ in
exec > >(tee -a "$OUT/convert.log") 2>&1
echo "# $(date -u) $(git rev-parse --short HEAD 2>/dev/null) $(python -c 'import torch;print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"
for spec in ${VARIANTS:-performer:64 holo:64 performer:0 holo:0 gauge:0}; do
  v=${spec%%:*}; w=${spec##*:}; name=${v}_w${w}; t0=$SECONDS
  hf-attn convert "$SMOLLM2" --to "$v" --window "$w" --out "$RUNS/$name" --device cuda \
    --transfer-steps "${TRANSFER:-200}" --recover-steps "${RECOVER:-300}" --seq-len "${SEQ:-512}" \
    --batch-size "${BATCH:-8}" ${LR:+--lr "$LR"} --passkey-samples "${PASSKEY:-50}" --decode-context "${DECODE:-16384}" \
    > "$RUNS/$name.log" 2>&1 && echo "ok    $name ($((SECONDS - t0)) s)" || echo "FAIL  $name: see $RUNS/$name.log"
  for f in report.md report.json convert.png; do [[ -f $RUNS/$name/$f ]] && cp "$RUNS/$name/$f" "$OUT/${name}_$f"; done
done
