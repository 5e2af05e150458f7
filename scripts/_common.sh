# Sourced by infer_svtr_fp16_accuracy.sh and infer_svtr_fp16_performance.sh: the model-zoo
# command line (--bs N), thresholds, the data check and the engine build they share.
#
# The sourcing script sets MODE (accuracy | performance) first: the accuracy script runs an
# accuracy run and the performance script a --perf_only run, so --acc_target / ACC_TARGET gate the
# one and --fps_target / FPS_TARGET the other; inference.py --check_args refuses a gate the mode
# does not check, like every other bad value, before the build.
#
# Environment: DATASETS_DIR (required), MODEL_PRESET (svtr | ppocrv4, default svtr),
# TARGET (auto | llvm | cuda | iluvatar), PRECISION (fp16), ACC_TARGET, FPS_TARGET,
# ENGINE_DIR (default work/engines), MODEL_PATH (another ONNX file for the preset), PYTHON,
# RPC (HOST:PORT:KEY, the same as --rpc: build for and run on a device behind TVM's RPC tracker),
# RUNTIME (tvm, the default: build an engine and run it; onnxruntime or openvino: run the ONNX
# model on that runtime, no build, in PRECISION where one is set, else the runtime's default).
set -euo pipefail

RUN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
batchsize=32
preset="${MODEL_PRESET:-svtr}"
target="${TARGET:-auto}"
precision="${PRECISION:-fp16}"
rpc="${RPC:-}"
runtime="${RUNTIME:-tvm}"
acc_target="${ACC_TARGET:-}"
fps_target="${FPS_TARGET:-}"

die() { echo "error: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --bs=*|--acc_target=*|--fps_target=*|--preset=*|--target=*|--rpc=*|--runtime=*)
            set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;  # --flag=value: the same as --flag value
        --bs|--acc_target|--fps_target|--preset|--target|--rpc|--runtime)
            [[ $# -ge 2 ]] || die "$1 needs a value"
            case "$1" in
                --bs) batchsize="$2" ;;
                --acc_target) acc_target="$2" ;;
                --fps_target) fps_target="$2" ;;
                --preset) preset="$2" ;;
                --target) target="$2" ;;
                --rpc) rpc="$2" ;;
                --runtime) runtime="$2" ;;
            esac
            shift 2 ;;
        *) die "unknown argument '$1' (known: --bs N, --acc_target A, --fps_target F, --preset svtr|ppocrv4, --target T, --rpc HOST:PORT:KEY, --runtime tvm|onnxruntime|openvino)" ;;
    esac
done
# The one check made here: an unset variable cannot be passed on. Every value is checked by
# inference.py --check_args below (the batch, the data folder, which script a gate belongs to,
# --rpc), so each rule has one owner and one message.
[[ -n "${DATASETS_DIR:-}" ]] || die "DATASETS_DIR is not set (export DATASETS_DIR=/path/to/data_lmdb_release/evaluation)"

# Every value goes as --flag=value: a value that begins with a dash (DATASETS_DIR=-data) would
# otherwise be read as a flag of its own.
if [[ "$runtime" == tvm ]]; then
    engine="${ENGINE_DIR:-$RUN_DIR/work/engines}/${preset}_bs_${batchsize}_${precision}.so"
    model=("--engine=$engine")
else  # the ONNX model on that runtime (inference.py checks the name and the precision)
    model=("--runtime=$runtime" ${MODEL_PATH:+"--engine=$MODEL_PATH"} ${PRECISION:+"--precision=$PRECISION"})
fi
checks=()
[[ -z "$acc_target" ]] || checks+=("--acc_target=$acc_target")
[[ -z "$fps_target" ]] || checks+=("--fps_target=$fps_target")
[[ "$MODE" != performance ]] || checks+=(--perf_only=True)
remote=()
[[ -z "$rpc" ]] || remote=("--rpc=$rpc")
# inference.py's command line without the engine: the scripts run it after the build.
inference=("$PYTHON" "$RUN_DIR/inference.py" "${model[@]}" "--batchsize=$batchsize" \
    "--datasets=$DATASETS_DIR" "--preset=$preset" ${checks[@]+"${checks[@]}"} ${remote[@]+"${remote[@]}"} \
    ${REPORT:+"--report=$REPORT"})
"${inference[@]}" --check_args  # thresholds, --report, data: refused now, not after a build
if [[ "$runtime" != tvm ]]; then
    echo "model preset ${preset}, batch size ${batchsize}, the ONNX model on ${runtime}, precision ${PRECISION:-its default}"
    return 0  # nothing to build
fi
echo "model preset ${preset}, batch size ${batchsize}, ${precision}, target ${target}${rpc:+, on the RPC device $rpc}"

# The preset gives the model, its input and config; build_engine.py checks the preset and the model.
"$PYTHON" "$RUN_DIR/build_engine.py" "--preset=$preset" ${MODEL_PATH:+"--model_path=$MODEL_PATH"} \
    "--batchsize=$batchsize" "--precision=$precision" "--engine_path=$engine" "--target=$target" \
    ${remote[@]+"${remote[@]}"}

