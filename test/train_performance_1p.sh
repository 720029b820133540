#!/bin/bash
# Throughput on one device (ModelZoo layout): bash test/train_performance_1p.sh --data_path=DIR
# [--net_depth=100] [--batch_size=32] [--max_steps=1000] [--device=auto] [train_nets.py flags].
# Trains --max_steps steps with no intermediate validation or checkpoint (the last step still
# validates and saves), then prints "Final Performance images/sec" etc. and writes
# ${CaseName}.log. The first log window (graph compilation) is left out of images/sec.
script_name=$(basename "$0")
source "$(dirname "$0")/train_common.sh"
max_steps=1000
parse_args "$@"

one_device_environment

start_time=$(date +%s)
run_training "$ASCEND_DEVICE_ID" --validate_interval 1000000000 --ckpt_interval 1000000000
status=$?
e2e_time=$(( $(date +%s) - start_time ))
[ $status -eq 0 ] || fail "training failed (exit $status); see $output_root/$ASCEND_DEVICE_ID/train_$ASCEND_DEVICE_ID.log" $status
summarize "$ASCEND_DEVICE_ID" 1 perf "$e2e_time"
