#!/usr/bin/env bash
# Throughput of the FP16 engine: compute-only (TVM's time evaluator) and end to end.
#   DATASETS_DIR=/data/evaluation bash scripts/infer_svtr_fp16_performance.sh [--bs 32] [--fps_target 300]
# Exits non-zero when the compute-only img/s misses --fps_target (or $FPS_TARGET).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec "$PYTHON" "$RUN_DIR/inference.py" --engine "$engine" --batchsize "$batchsize" \
    --datasets "$DATASETS_DIR" --preset "$preset" --perf_only True --loop_count "${LOOP_COUNT:-20}" \
    ${checks[@]+"${checks[@]}"} ${REPORT:+--report "$REPORT"}
