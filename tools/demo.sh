#!/usr/bin/env bash
# The README's first command (`make demo`): installs the TF 2.x environment, makes the
# embedded synthetic face dataset in insightface's layout, converts it with
# data/mx2tfrecords.py, trains L_Resnet_E_IR-18 + ArcFace with train_nets.py while
# validating on held-out synthetic identities, and evaluates the final checkpoint with
# eval_ckpt_file.py. Sized for a 2-core laptop CPU: about 10 minutes after installation,
# hence 32x32 images (the backbone and loss are the original's; only the resolution is small)
# and ArcFace with s=32, m=0.3, which converges faster from scratch than s=64, m=0.5.
# No dropout (keep_prob 1), and 300 identities x 48 images rather than thousands of
# identities with few images: on a budget of a few epochs, class centres that see many
# images settle early and give the backbone a useful signal sooner.
set -euo pipefail
cd "$(dirname "$0")/.."
# Environment overrides (used by the tests): PYTHON, DEMO_DATA, DEMO_OUT, DEMO_STEPS,
# DEMO_IDENTITIES, DEMO_IMAGES_PER_IDENTITY.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
PY=${PYTHON:-.venv/bin/python}
[ -n "${PYTHON:-}" ] || tools/venv.sh python3 .venv requirements.txt
DATA=${DEMO_DATA:-datasets/synthetic_demo}
RECORDS=${DATA}_tfrecords
OUT=${DEMO_OUT:-output/demo}
SIZE=32,32
STEPS=${DEMO_STEPS:-650}
BATCH=64
start=$SECONDS
# Decay the learning rate tenfold after about 70% of the steps (--lr_steps counts
# batch-512 iterations: batch 64 scales it by 8).
LR_STEP=$((STEPS * 7 / 80)); [ "$LR_STEP" -ge 1 ] || LR_STEP=1
VALIDATE=$(( (STEPS + 1) / 2 ))

echo "== 1/4 synthetic dataset (held-out identities for verification) -> $DATA"
$PY data/make_synthetic_dataset.py --output_dir "$DATA" --overwrite --image_size "$SIZE" \
  --num_identities "${DEMO_IDENTITIES:-300}" \
  --images_per_identity "${DEMO_IMAGES_PER_IDENTITY:-48}" --num_val_identities 50 --num_val_pairs 600 --seed 0
echo "== 2/4 convert to TFRecords -> $RECORDS"
$PY data/mx2tfrecords.py --bin_path "$DATA/train.rec" --idx_path "$DATA/train.idx" \
  --tfrecords_file_path "$RECORDS" --overwrite --no_progress
echo "== 3/4 train (depth 18, $STEPS steps), validating on $DATA/lfw.bin"
rm -rf "$OUT"
$PY train_nets.py --tfrecords_file_path "$RECORDS" --image_size "$SIZE" --net_depth 18 \
  --batch_size $BATCH --max_steps "$STEPS" --keep_prob 1.0 --lr_values 0.1,0.01 --lr_steps "$LR_STEP" \
  --warmup_steps 50 --margin_s 32 --margin_m 0.3 --eval_db_path "$DATA" --eval_datasets lfw \
  --validate_interval "$VALIDATE" --show_info_interval 50 --summary_interval 50 \
  --ckpt_interval "$VALIDATE" --seed 0 \
  --ckpt_path "$OUT/ckpt" --summary_path "$OUT/summary" --log_file_path "$OUT/logs"
echo "== 4/4 evaluate the final checkpoint"
$PY eval_ckpt_file.py --ckpt_file "$OUT/ckpt" --net_depth 18 --image_size "$SIZE" \
  --eval_db_path "$DATA" --eval_datasets lfw --output_json "$OUT/eval.json" --plot_dir "$OUT/roc"
echo
echo "demo finished in $((SECONDS - start)) s"
case "$OUT" in /*) ABS_OUT=$OUT ;; *) ABS_OUT=$PWD/$OUT ;; esac
echo "  checkpoints : $ABS_OUT/ckpt (best validation: $ABS_OUT/ckpt/best)"
echo "  logs        : $ABS_OUT/logs"
echo "  TensorBoard : .venv/bin/tensorboard --logdir $ABS_OUT/summary"
echo "  evaluation  : $ABS_OUT/eval.json, ROC curve in $ABS_OUT/roc"
