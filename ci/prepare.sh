#!/usr/bin/env bash
# Model preparation: PaddleOCR checkpoint -> SVTR.onnx -> SVTR_opt.onnx in the repo root.
#
#   ci/prepare.sh                      # uses a checkpoint if one is lying around (tools/export_onnx.py --checkpoint auto)
#   SVTR_CHECKPOINT=/path/x.tar ci/prepare.sh
#   SVTR_DOWNLOAD=1 ci/prepare.sh      # download rec_svtr_tiny_none_ctc_en_train.tar first
#   SKIP_INSTALL=1 ci/prepare.sh       # do not pip install requirements.txt
#   ci/prepare.sh --preset ppocrv4     # PP-OCRv4's recogniser from the rapidocr wheel instead
#   MODEL_PRESET=ppocrv4 ci/prepare.sh # the same
#
# A rerun with unchanged inputs does nothing (tools/export_onnx.py checks SVTR_opt.onnx.json).
# Other arguments go to the export (or fetch) tool.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
preset="${MODEL_PRESET:-svtr}"
if [[ "${1:-}" == "--preset" ]]; then
    [[ $# -ge 2 ]] || { echo "error: --preset needs a value" >&2; exit 2; }
    preset="$2"
    shift 2
fi

if [[ "${SKIP_INSTALL:-0}" != "1" ]]; then
    "$PYTHON" -m pip install -r requirements.txt
fi

case "$preset" in
    ppocrv4) exec "$PYTHON" tools/fetch_ppocrv4.py "$@" ;;
    svtr) ;;
    *) echo "error: unknown model preset '${preset}' (svtr or ppocrv4)" >&2; exit 2 ;;
esac

if [[ "${SVTR_DOWNLOAD:-0}" == "1" && -z "${SVTR_CHECKPOINT:-}" ]]; then
    exec "$PYTHON" tools/export_onnx.py --download "$@"
fi
exec "$PYTHON" tools/export_onnx.py --checkpoint "${SVTR_CHECKPOINT:-auto}" "$@"
