#!/bin/bash
# Full training on one device (ModelZoo layout): bash test/train_full_1p.sh --data_path=DIR
# [--net_depth=100] [--batch_size=32] [--max_steps=N] [--device=auto] [train_nets.py flags].
# Runs all --epoch epochs unless --max_steps is given, validating every --validate_interval
# steps; prints the "Final ..." lines Ascend's tooling greps and writes ${CaseName}.log.
# On a CPU or GPU pass --device=cpu / --device=gpu (auto picks the NPU when npu_bridge imports).
script_name=$(basename "$0")
source "$(dirname "$0")/train_common.sh"
parse_args "$@"

one_device_environment

start_time=$(date +%s)
run_training "$ASCEND_DEVICE_ID"
status=$?
e2e_time=$(( $(date +%s) - start_time ))
[ $status -eq 0 ] || fail "training failed (exit $status); see $output_root/$ASCEND_DEVICE_ID/train_$ASCEND_DEVICE_ID.log" $status
summarize "$ASCEND_DEVICE_ID" 1 acc "$e2e_time"
