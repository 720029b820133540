#!/bin/bash
# Full training on 8 Ascend devices of one server (ModelZoo layout):
#   bash test/train_full_8p.sh --data_path=DIR [--net_depth=100] [--batch_size=32 (per device)]
#        [--max_steps=N] [train_nets.py flags]
# Starts one process per device with RANK_ID = ASCEND_DEVICE_ID = 0..RANK_SIZE-1, RANK_SIZE
# (default 8), JOB_ID and RANK_TABLE_FILE (default test/rank_table_8p.json; edit its
# device_ip entries to your server's, e.g. from `hccn_tool -i 0 -ip -g`). HCCL all-reduces the
# gradients; rank 0 (device 0) alone writes checkpoints, logs and the summary. images/sec is
# rank 0's rate times RANK_SIZE.
script_name=$(basename "$0")
source "$(dirname "$0")/train_common.sh"
device=npu
parse_args "$@"
[ "$device" = npu ] || fail "--device $device: this script starts one process per Ascend device over HCCL; use --device=npu (train_full_1p.sh runs on a CPU or GPU)"

export RANK_SIZE=${RANK_SIZE:-8}
export RANK_TABLE_FILE=${RANK_TABLE_FILE:-$test_path/rank_table_8p.json}
[ -f "$RANK_TABLE_FILE" ] || fail "RANK_TABLE_FILE=$RANK_TABLE_FILE: no such file"
RANK_TABLE_FILE=$(cd "$(dirname "$RANK_TABLE_FILE")" && pwd)/$(basename "$RANK_TABLE_FILE")

start_time=$(date +%s)
pids=()
for ((rank = 0; rank < RANK_SIZE; rank++)); do
  (export RANK_ID=$rank ASCEND_DEVICE_ID=$rank; run_training "$rank") &
  pids+=($!)
done
failed=""
for rank in "${!pids[@]}"; do
  wait "${pids[$rank]}" || failed="$failed $rank"
done
e2e_time=$(( $(date +%s) - start_time ))
[ -z "$failed" ] || fail "training failed on rank(s)$failed; see $output_root/<rank>/train_<rank>.log" 1
summarize 0 "$RANK_SIZE" acc "$e2e_time"
