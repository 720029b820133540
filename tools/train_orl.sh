#!/usr/bin/env bash
# `make train-orl`: trains on real faces. Converts ../shared/data/orl_faces/train.rec (30
# identities of the AT&T/ORL database) to TFRecords, trains L_Resnet_E_IR-18 + ArcFace on
# 2 CPU cores, validating on orl_val.bin (5 other identities, 450 pairs), and evaluates the
# final and the best checkpoint. The 112x112 images are shrunk to 56x56 before the network
# (--net_input_size): four times faster per step than 112x112, and as accurate on ORL.
# Checkpoints: output/orl/ckpt/. Environment overrides (used by the tests):
#   ORL_DATA (folder with train.rec/train.idx/property, or with TFRecords + manifest.json),
#   ORL_VAL_DB + ORL_VAL (the .bin),
#   ORL_STEPS, ORL_VALIDATE_INTERVAL, ORL_OUT, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
PY=${PYTHON:-.venv/bin/python}
[ -n "${PYTHON:-}" ] || tools/venv.sh python3 .venv requirements.txt
DATA=${ORL_DATA:-../shared/data/orl_faces}
VAL_DB=${ORL_VAL_DB:-$DATA}
VAL=${ORL_VAL:-orl_val}
OUT=${ORL_OUT:-output/orl}
STEPS=${ORL_STEPS:-280}
VALIDATE=${ORL_VALIDATE_INTERVAL:-20}
# Learning rate 0.1, then tenfold lower after about half and three quarters of the steps.
# --lr_steps counts batch-512 iterations (batch 32 multiplies them by 16), so the
# boundaries are rounded to multiples of 16 steps.
LR_STEP1=$(( (STEPS + 16) / 32 )); [ "$LR_STEP1" -ge 1 ] || LR_STEP1=1
LR_STEP2=$(( (STEPS * 3 + 32) / 64 )); [ "$LR_STEP2" -gt "$LR_STEP1" ] || LR_STEP2=$((LR_STEP1 + 1))
# The network as trained; evaluation must rebuild the same one.
NET=(--net_depth 18 --net_input_size 56,56)
# ORL_DATA holds insightface's train.rec/train.idx, or TFRecords already converted
# (manifest.json, e.g. by data/folder2tfrecords.py); the verification set beside them.
GET="get the AT&T/ORL faces and build it as the README's \"Data\" section says, then set ORL_DATA (and ORL_VAL_DB)"
if [ -f "$DATA/manifest.json" ]; then RECORDS=$DATA; else RECORDS=$OUT/tfrecords; fi
need=()
[ "$RECORDS" = "$DATA" ] || need+=("$DATA/train.rec" "$DATA/train.idx")
need+=("$VAL_DB/$VAL.bin")
for f in "${need[@]}"; do
  [ -f "$f" ] || { echo "train_orl: $f not found: $GET" >&2; exit 2; }
done

if [ "$RECORDS" = "$DATA" ]; then
  echo "== 1/3 TFRecords already in $DATA"
else
  echo "== 1/3 convert $DATA -> $RECORDS"
  $PY data/mx2tfrecords.py --bin_path "$DATA/train.rec" --idx_path "$DATA/train.idx" \
    --tfrecords_file_path "$RECORDS" --overwrite --no_progress
fi
echo "== 2/3 train ($STEPS steps), validating on $VAL_DB/$VAL.bin every $VALIDATE steps"
rm -rf "$OUT/ckpt" "$OUT/summary" "$OUT/logs"
$PY train_nets.py --tfrecords_file_path "$RECORDS" "${NET[@]}" --batch_size 32 \
  --max_steps "$STEPS" --augment True --random_erase 0.5 --lr_values 0.1,0.01,0.001 --lr_steps "$LR_STEP1,$LR_STEP2" \
  --warmup_steps 30 --margin_s 32 --margin_m 0.3 --weight_decay 5e-3 --buffer_size 300 \
  --seed 0 --saver_maxkeep 3 \
  --eval_db_path "$VAL_DB" --eval_datasets "$VAL" --validate_interval "$VALIDATE" \
  --show_info_interval 10 --summary_interval 10 --ckpt_interval "$VALIDATE" \
  --ckpt_path "$OUT/ckpt" --summary_path "$OUT/summary" --log_file_path "$OUT/logs"
echo "== 3/3 evaluate the final and the best checkpoint"
$PY eval_ckpt_file.py --ckpt_file "$OUT/ckpt" "${NET[@]}" --eval_db_path "$VAL_DB" \
  --eval_datasets "$VAL" --output_json "$OUT/eval_final.json" --plot_dir "$OUT/roc" \
  --error_report True
$PY eval_ckpt_file.py --ckpt_file "$OUT/ckpt/best" "${NET[@]}" --eval_db_path "$VAL_DB" \
  --eval_datasets "$VAL" --output_json "$OUT/eval_best.json"
echo "accuracy curve: grep Accuracy-Flip $OUT/logs/train_*.log"
