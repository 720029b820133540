# Shared by train_full_1p.sh, train_performance_1p.sh and train_full_8p.sh (ModelZoo's
# test/ layout). Sourced by them, not run on its own.
#
# --data_path DIR: DIR/tfrecords holds the training TFRecords (manifest.json + shards written
# by data/mx2tfrecords.py); DIR itself may hold them instead. The .bin verification sets
# (--eval_datasets, default lfw) sit in DIR.
# Outputs: ${OUTPUT_DIR:-test/output}/${ASCEND_DEVICE_ID}/train_${ASCEND_DEVICE_ID}.log,
# ckpt/, summary/, logs/ beside it, and ${CaseName}.log with the ModelZoo summary.
# Each run starts afresh, as in ModelZoo, but nothing is deleted: an earlier run's folder of
# the device moves to ${OUTPUT_DIR}/previous/<date-time>-XXXX/.

test_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project_path=$(dirname "$test_path")
output_root=${OUTPUT_DIR:-$test_path/output}
# shellcheck source=../tools/move_aside.sh
. "$project_path/tools/move_aside.sh"
PYTHON=${PYTHON:-python3}
export JOB_ID=${JOB_ID:-10087}

data_path=""
net_depth=100
batch_size=32
max_steps=""
device=auto
train_args=()  # every other flag goes to train_nets.py unchanged

usage() {
  cat <<EOF
usage: $script_name --data_path=DIR [--net_depth=N] [--batch_size=N] [--max_steps=N]
       [--device=auto|npu|gpu|cpu] [other train_nets.py flags ...]
  DIR holds tfrecords/ (or manifest.json itself) and the .bin verification sets.
EOF
}

fail() {  # message [exit code]
  echo "$script_name: $1" >&2
  exit "${2:-2}"
}

parse_args() {  # "$@"
  local name
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --data_path=*|--net_depth=*|--batch_size=*|--max_steps=*|--device=*)
        name=${1%%=*}; printf -v "${name#--}" '%s' "${1#*=}" ;;
      --data_path|--net_depth|--batch_size|--max_steps|--device)
        [ $# -ge 2 ] || fail "$1 needs a value"
        printf -v "${1#--}" '%s' "$2"; shift ;;
      *) train_args+=("$1") ;;
    esac
    shift
  done
  [ -n "$data_path" ] || fail "--data_path is required: a folder holding tfrecords/ (from data/mx2tfrecords.py) and the .bin verification sets"
  [ -d "$data_path" ] || fail "--data_path $data_path: no such folder"
  data_path=$(cd "$data_path" && pwd)
  if [ -f "$data_path/tfrecords/manifest.json" ]; then
    tfrecords_path=$data_path/tfrecords
  elif [ -f "$data_path/manifest.json" ]; then
    tfrecords_path=$data_path
  else
    fail "--data_path $data_path: no manifest.json in $data_path/tfrecords or $data_path; convert the data with data/mx2tfrecords.py"
  fi
  Network="ArcFace_LResNet${net_depth}E-IR_for_TensorFlow"
  BatchSize=$batch_size
  DeviceType=$(uname -m)
}

one_device_environment() {  # RANK_SIZE=1, RANK_ID=0, ASCEND_DEVICE_ID (default 0), no HCCL
  # CANN's adapter starts HCCL whenever RANK_TABLE_FILE is non-empty and RANK_SIZE > 0 (or
  # through CM_CHIEF_IP/CM_WORKER_SIZE), so a table exported for an 8p run in this shell
  # would make this one-device run an HCCL job of the wrong size.
  local name
  for name in RANK_TABLE_FILE CM_CHIEF_IP CM_WORKER_SIZE; do
    if [ -n "${!name:-}" ]; then
      echo "$script_name: one device: $name=${!name} is not passed to train_nets.py"
    fi
    unset "$name"
  done
  export RANK_SIZE=1
  export RANK_ID=0
  export ASCEND_DEVICE_ID=${ASCEND_DEVICE_ID:-0}
}

run_training() {  # device_id extra-flags... : one training process, its output in output/<id>/
  local out=$output_root/$1
  shift
  move_aside "$output_root" "$(basename "$out")"
  mkdir -p "$out"
  (cd "$project_path" && exec "$PYTHON" train_nets.py \
     --tfrecords_file_path "$tfrecords_path" --eval_db_path "$data_path" \
     --net_depth "$net_depth" --batch_size "$batch_size" ${max_steps:+--max_steps "$max_steps"} \
     --device "$device" --ckpt_path "$out/ckpt" --summary_path "$out/summary" \
     --log_file_path "$out/logs" "$@" "${train_args[@]}") > "$out/train_$(basename "$out").log" 2>&1
}

summarize() {  # device_id rank_size kind(perf|acc) e2e_seconds
  local dir=$output_root/$1 rank_size=$2 kind=$3 e2e_time=$4
  local log=$dir/train_$1.log
  CaseName=${Network}_bs${BatchSize}_${rank_size}p_${kind}
  # images/s of one process (the original's "samples/sec"), averaged over the log lines
  # after the first (compilation).
  local fps_one
  fps_one=$(grep -o '[0-9.]* samples/sec' "$log" | awk '{v[NR] = $1}
    END {if (NR == 0) {print 0; exit}; s = 0; n = 0
         for (i = (NR > 1 ? 2 : 1); i <= NR; i++) {s += v[i]; n++}; printf "%.2f", s / n}')
  local fps sec_per_step loss accuracy
  fps=$(awk -v f="$fps_one" -v r="$rank_size" 'BEGIN {printf "%.2f", f * r}')
  sec_per_step=$(awk -v f="$fps_one" -v b="$batch_size" 'BEGIN {printf "%.4f", (f > 0 ? b / f : 0)}')
  grep -o 'total loss is [0-9.eE+-]*' "$log" | awk '{print $4}' > "$dir/train_${CaseName}_loss.txt"
  loss=$(tail -n 1 "$dir/train_${CaseName}_loss.txt")
  accuracy=$(grep -o 'test accuracy is: [0-9.]*' "$log" | tail -n 1 | awk '{print $4}')
  {
    echo "------------------ Final result ------------------"
    echo "Final Performance images/sec : $fps"
    echo "Final Performance sec/step : $sec_per_step"
    echo "E2E Training Duration sec : $e2e_time"
    [ "$kind" = acc ] && echo "Final Train Accuracy : $accuracy"
  } | tee -a "$log"
  # ModelZoo's summary; TrainingTime is milliseconds per step.
  {
    echo "Network = ${Network}"
    echo "RankSize = ${rank_size}"
    echo "BatchSize = ${BatchSize}"
    echo "DeviceType = ${DeviceType}"
    echo "CaseName = ${CaseName}"
    echo "ActualFPS = ${fps}"
    echo "TrainingTime = $(awk -v s="$sec_per_step" 'BEGIN {printf "%.2f", s * 1000}')"
    [ "$kind" = acc ] && echo "TrainAccuracy = ${accuracy}"
    echo "ActualLoss = ${loss}"
    echo "E2ETrainingTime = ${e2e_time}"
  } > "$dir/${CaseName}.log"
}
