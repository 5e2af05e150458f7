#!/usr/bin/env bash
# Accuracy of the FP16 engine on every LMDB under $DATASETS_DIR (PaddleOCR's rules).
#   DATASETS_DIR=/data/evaluation bash scripts/infer_svtr_fp16_accuracy.sh [--bs 32] [--acc_target 0.88] [--rpc HOST:PORT:KEY]
# Exits non-zero when the accuracy misses --acc_target (or $ACC_TARGET); --fps_target / FPS_TARGET
# are refused here (the performance script checks them).
MODE=accuracy
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec "${inference[@]}"
