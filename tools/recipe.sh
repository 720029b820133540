#!/usr/bin/env bash
# Runs one training recipe end to end: `tools/recipe.sh demo|orl|lfw` (`make demo`,
# `make train-orl`, `make train-lfw`). A recipe is data: tools/recipes/<name>.sh sets the
# variables below and nothing else; this script is the one copy of the stages.
#   1. data: generate it (recipes with SYNTHETIC) or convert insightface's train.rec to
#      TFRecords (a folder that already holds TFRecords + manifest.json is used as it is)
#   2. train with train_nets.py, validating on VAL.bin every VALIDATE steps and keeping the
#      best checkpoint in ckpt/best/ (an earlier run in OUT is moved to OUT/previous/ first)
#   3. evaluate the final and the best checkpoint with eval_ckpt_file.py (table, JSON, ROC,
#      and the wrong pairs of the final one)
# Environment overrides, <NAME> being the recipe's name in capitals (ORL_DATA, LFW_STEPS, ...):
#   <NAME>_DATA      folder with train.rec/train.idx, or TFRecords + manifest.json in it or in
#                    its tfrecords/ (the verification .bin beside them)
#   <NAME>_VAL_DB    folder of the verification .bin (default: the data folder)
#   <NAME>_VAL       name of the .bin without extension
#   <NAME>_STEPS, <NAME>_VALIDATE_INTERVAL, <NAME>_SEED, <NAME>_OUT
#   <NAME>_WORKERS   train as this many TensorFlow workers on 127.0.0.1 (default 1), each with
#                    batch BATCH / WORKERS, so that the global batch and the schedule's steps
#                    stay the recipe's (e.g. LFW_WORKERS=2 TRAIN_FLAGS="--partial_fc True")
#   PYTHON           interpreter to use (default: .venv, installed from requirements.txt)
#   TRAIN_FLAGS      more train_nets.py flags, last (e.g. "--mixed_precision off")
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/move_aside.sh
KNOWN=$(cd tools/recipes && ls -- *.sh | sed 's/\.sh$//' | xargs)
RECIPE=${1:?usage: tools/recipe.sh RECIPE (one of: $KNOWN)}
case " $KNOWN " in
  *" $RECIPE "*) ;;
  *) echo "recipe.sh: no recipe '$RECIPE' (tools/recipes/$RECIPE.sh); known: $KNOWN" >&2; exit 2 ;;
esac
# The tools silence TensorFlow's own logs themselves (data/quiet.py; --verbose shows them).
PY=${PYTHON:-.venv/bin/python}
start=$SECONDS

# Recipe defaults, then the recipe, then the user's overrides.
SYNTHETIC=()      # make_synthetic_dataset.py flags when the recipe makes its own data
GET=""            # where to get the data (the one-line error when it is missing)
VAL_DB=""
SEED=0
BATCH=32          # the global batch: each of WORKERS processes trains on BATCH / WORKERS
WORKERS=1
LR_DECAY_AT=""    # fractions of STEPS where the learning rate moves to the next value
NET=()            # flags that shape the network: training and evaluation both get them
TRAIN=()          # the other training flags
# shellcheck source=/dev/null
. "tools/recipes/$RECIPE.sh"
P=$(echo "$RECIPE" | tr '[:lower:]' '[:upper:]')
override() { local v="${P}_$1"; if [ -n "${!v:-}" ]; then printf -v "$2" '%s' "${!v}"; fi; }
override DATA DATA; override VAL_DB VAL_DB; override VAL VAL; override STEPS STEPS
override VALIDATE_INTERVAL VALIDATE; override SEED SEED; override OUT OUT
override WORKERS WORKERS
VAL_DB=${VAL_DB:-$DATA}
if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || [ $((BATCH % WORKERS)) -ne 0 ]; then
  echo "recipe.sh: ${P}_WORKERS=$WORKERS: expected a whole number that divides the batch ($BATCH)" >&2
  exit 2
fi
WORKER_BATCH=$((BATCH / WORKERS))

# --lr_steps counts batch-512 iterations (the original's boundaries are int(512 / batch) *
# lr_steps, batch being the global one), so the decay points are rounded to multiples of
# that factor.
lr_steps() {
  awk -v at="$LR_DECAY_AT" -v steps="$STEPS" -v batch="$BATCH" 'BEGIN {
    k = int(512 / batch); if (k < 1) k = 1
    n = split(at, f, " "); prev = 0; out = ""
    for (i = 1; i <= n; i++) {
      s = int(f[i] * steps / k + 0.5); if (s <= prev) s = prev + 1
      out = out (i > 1 ? "," : "") s; prev = s
    }
    print out }'
}

if [ ${#SYNTHETIC[@]} -gt 0 ]; then
  RECORDS=${DATA}_tfrecords
elif [ -f "$DATA/tfrecords/manifest.json" ]; then  # the layout of test/train_*.sh's --data_path
  RECORDS=$DATA/tfrecords
elif [ -f "$DATA/manifest.json" ]; then
  RECORDS=$DATA
else
  RECORDS=$OUT/tfrecords
fi
need=()
[ "$RECORDS" != "$OUT/tfrecords" ] || need+=("$DATA/train.rec" "$DATA/train.idx")
[ ${#SYNTHETIC[@]} -gt 0 ] || need+=("$VAL_DB/$VAL.bin")
for f in "${need[@]}"; do
  [ -f "$f" ] || { echo "$RECIPE: $f not found: $GET" >&2; exit 2; }
done
[ -n "${PYTHON:-}" ] || tools/venv.sh python3 .venv requirements.txt

if [ ${#SYNTHETIC[@]} -gt 0 ]; then
  echo "== 1/3 synthetic dataset (held-out identities for verification) -> $DATA, TFRecords -> $RECORDS"
  $PY data/make_synthetic_dataset.py --output_dir "$DATA" --overwrite "${SYNTHETIC[@]}"
  $PY data/mx2tfrecords.py --bin_path "$DATA/train.rec" --idx_path "$DATA/train.idx" \
    --tfrecords_file_path "$RECORDS" --overwrite --no_progress
elif [ "$RECORDS" != "$OUT/tfrecords" ]; then
  echo "== 1/3 TFRecords already in $RECORDS"
else
  echo "== 1/3 convert $DATA -> $RECORDS"
  $PY data/mx2tfrecords.py --bin_path "$DATA/train.rec" --idx_path "$DATA/train.idx" \
    --tfrecords_file_path "$RECORDS" --overwrite --no_progress
fi

echo "== 2/3 train ($STEPS steps), validating on $VAL_DB/$VAL.bin every $VALIDATE steps"
# An earlier run's results are moved aside, never deleted: training would resume from its
# checkpoints, and the evaluations refuse to replace its files.
move_aside "$OUT" ckpt summary logs roc eval_final.json eval_best.json
train() {
  $PY train_nets.py --tfrecords_file_path "$RECORDS" "${NET[@]}" --batch_size "$WORKER_BATCH" \
    --max_steps "$STEPS" --lr_steps "$(lr_steps)" --seed "$SEED" "${TRAIN[@]}" \
    --eval_db_path "$VAL_DB" --eval_datasets "$VAL" --validate_interval "$VALIDATE" \
    --ckpt_interval "$VALIDATE" --saver_maxkeep 3 \
    --ckpt_path "$OUT/ckpt" --summary_path "$OUT/summary" --log_file_path "$OUT/logs" \
    ${TRAIN_FLAGS:-} "$@"
}
if [ "$WORKERS" -eq 1 ]; then
  train
else
  # Rank 0 (the chief: validation, the log, the checkpoints) in the foreground; the other
  # ranks' output goes to OUT/logs/worker_<rank>.out. All share OUT/ckpt, as Partial FC's
  # checkpoint parts need.
  HOSTS=$($PY -c "import socket
s = [socket.socket() for _ in range($WORKERS)]
[x.bind(('127.0.0.1', 0)) for x in s]
print(','.join('127.0.0.1:%d' % x.getsockname()[1] for x in s))")
  mkdir -p "$OUT/logs"
  pids=()
  for ((rank = 1; rank < WORKERS; rank++)); do
    train --worker_hosts "$HOSTS" --task_index "$rank" > "$OUT/logs/worker_$rank.out" 2>&1 &
    pids+=($!)
  done
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
  train --worker_hosts "$HOSTS" --task_index 0
  for pid in "${pids[@]}"; do
    wait "$pid" || { echo "$RECIPE: a worker failed: see $OUT/logs/worker_*.out" >&2; exit 1; }
  done
  trap - EXIT
fi

echo "== 3/3 evaluate the final and the best checkpoint"
$PY eval_ckpt_file.py --ckpt_file "$OUT/ckpt" "${NET[@]}" --eval_db_path "$VAL_DB" \
  --eval_datasets "$VAL" --output_json "$OUT/eval_final.json" --plot_dir "$OUT/roc" \
  --error_report True
$PY eval_ckpt_file.py --ckpt_file "$OUT/ckpt/best" "${NET[@]}" --eval_db_path "$VAL_DB" \
  --eval_datasets "$VAL" --output_json "$OUT/eval_best.json"

echo
echo "$RECIPE finished in $((SECONDS - start)) s"
case "$OUT" in /*) ABS_OUT=$OUT ;; *) ABS_OUT=$PWD/$OUT ;; esac
echo "  checkpoints    : $ABS_OUT/ckpt (best validation: $ABS_OUT/ckpt/best)"
echo "  accuracy curve : grep Accuracy-Flip $ABS_OUT/logs/train_*.log"
echo "  evaluation     : $ABS_OUT/eval_final.json, $ABS_OUT/eval_best.json, ROC in $ABS_OUT/roc"
echo "  TensorBoard    : tensorboard --logdir $ABS_OUT/summary"
