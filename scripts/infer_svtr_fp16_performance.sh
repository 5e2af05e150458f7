#!/usr/bin/env bash
# Throughput of the FP16 engine: compute-only (TVM's time evaluator) and end to end.
#   DATASETS_DIR=/data/evaluation bash scripts/infer_svtr_fp16_performance.sh [--bs 32] [--fps_target 300] [--rpc HOST:PORT:KEY]
# Exits non-zero when the compute-only img/s misses --fps_target (or $FPS_TARGET); --acc_target /
# ACC_TARGET are refused here (the accuracy script checks them).
MODE=performance
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec "${inference[@]}" "--loop_count=${LOOP_COUNT:-20}"
