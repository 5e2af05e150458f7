#!/usr/bin/env bash
# Model preparation: PaddleOCR checkpoint -> SVTR.onnx -> SVTR_opt.onnx in the repo root.
#
#   ci/prepare.sh                      # uses a checkpoint if one is lying around
#   SVTR_CHECKPOINT=/path/x.tar ci/prepare.sh
#   SVTR_DOWNLOAD=1 ci/prepare.sh      # download rec_svtr_tiny_none_ctc_en_train.tar first
#   SKIP_INSTALL=1 ci/prepare.sh       # do not pip install requirements.txt
#   MODEL_PRESET=ppocrv4 ci/prepare.sh # PP-OCRv4's recogniser from the rapidocr wheel instead
#
# A rerun with unchanged inputs does nothing (tools/export_onnx.py checks SVTR_opt.onnx.json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
TAR=rec_svtr_tiny_none_ctc_en_train.tar
PDPARAMS=rec_svtr_tiny_none_ctc_en_train/best_accuracy.pdparams

if [[ "${SKIP_INSTALL:-0}" != "1" ]]; then
    "$PYTHON" -m pip install -r requirements.txt
fi

if [[ "${MODEL_PRESET:-svtr}" == "ppocrv4" ]]; then
    exec "$PYTHON" tools/fetch_ppocrv4.py "$@"
elif [[ "${MODEL_PRESET:-svtr}" != "svtr" ]]; then
    echo "error: unknown MODEL_PRESET '${MODEL_PRESET}' (svtr or ppocrv4)" >&2
    exit 2
fi

args=()
if [[ -n "${SVTR_CHECKPOINT:-}" ]]; then
    args=(--checkpoint "$SVTR_CHECKPOINT")
elif [[ -f "$TAR" ]]; then
    args=(--checkpoint "$TAR")
elif [[ -f "$PDPARAMS" ]]; then
    args=(--checkpoint "$PDPARAMS")
elif [[ "${SVTR_DOWNLOAD:-0}" == "1" ]]; then
    args=(--download)
else
    echo "prepare: no checkpoint found (SVTR_CHECKPOINT, ./$TAR, ./$PDPARAMS)." >&2
    echo "prepare: exporting an UNTRAINED model; accuracy numbers from it are meaningless." >&2
    echo "prepare: for real weights put $TAR here (https://paddleocr.bj.bcebos.com/PP-OCRv3/chinese/$TAR)," >&2
    echo "prepare: set SVTR_CHECKPOINT=/path/to/it, or rerun with SVTR_DOWNLOAD=1 where the network allows." >&2
fi

exec "$PYTHON" tools/export_onnx.py ${args[@]+"${args[@]}"} "$@"
