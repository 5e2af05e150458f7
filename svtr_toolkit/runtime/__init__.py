"""Runtimes behind one small interface (``base.Backend``): onnxruntime, OpenVINO, TVM's Relax
VM, IGIE.

``open_backend`` picks by file: a ``.onnx`` runs on one of ``ONNX_RUNTIMES`` (onnxruntime, the
reference, unless another is asked for), anything else is an engine built by this toolkit,
opened on the device its build description names.
Runtime reads engines through ``svtr_toolkit.engine_file`` only; it never imports compile.
"""
from __future__ import annotations

from ..engine_file import description_problem, image_damaged, read_engine_metadata
from ..errors import ToolkitError, first_line
from ..files import require_file, sha256_file
from ..provenance import weights_of
from .base import Backend
from .openvino_backend import OpenVinoBackend
from .ort_backend import OrtBackend

# the runtimes an .onnx model runs on, and the precisions each can be asked to compute in
ONNX_RUNTIMES = {"onnxruntime": OrtBackend.PRECISIONS, "openvino": OpenVinoBackend.PRECISIONS}
DEFAULT_ONNX_RUNTIME = "onnxruntime"


def runtime_problem(path: str, runtime: str | None, precision: str | None, remote: bool = False) -> str | None:
    """Why ``runtime`` and ``precision`` (and a ``remote`` device) cannot run ``path``, or None;
    read from the names alone, so a command line can say it before any work. An engine computes
    in the precision it was built at, on the runtime it was built for; an .onnx model runs here."""
    if path.endswith(".onnx") and remote:
        return "--rpc runs TVM engines; an .onnx file runs here (drop --rpc)"
    if not path.endswith(".onnx"):
        if runtime is not None:
            return (f"--runtime {runtime} runs .onnx models; {path} is an engine, which runs on the runtime it was "
                    f"built for")
        if precision is not None:
            return (f"--precision chooses what an .onnx model's runtime computes in; {path} is an engine, which "
                    f"computes in the precision it was built at (build_engine.py --precision)")
        return None
    runtime = runtime or DEFAULT_ONNX_RUNTIME
    if runtime not in ONNX_RUNTIMES:
        return f"unknown runtime '{runtime}' (choose from {', '.join(ONNX_RUNTIMES)})"
    if precision is not None and precision not in ONNX_RUNTIMES[runtime]:
        return f"{runtime} computes in {', '.join(ONNX_RUNTIMES[runtime])}, not {precision}"
    return None


def load_engine(path: str, remote=None) -> Backend:
    """Open an engine on the device it was built for (IGIE engines on IGIE's graph executor);
    with ``remote`` (an ``rpc.RemoteDevice``), on that device through its RPC session."""
    require_file(path, "engine")
    meta = read_engine_metadata(path)
    if meta is None:
        raise ToolkitError(f"{path} is not an engine built by this toolkit (no build description); rebuild it")
    problem = description_problem(meta)
    if problem:
        raise ToolkitError(f"{path} cannot be trusted: {problem}; rebuild it")
    if image_damaged(path, meta):
        raise ToolkitError(f"{path} is damaged: its image does not match the digest in its build description; "
                           f"rebuild it")
    if remote is not None:
        if meta["target"].get("kind") == "iluvatar":
            raise ToolkitError("IGIE engines run on the local MR-V100 only, not through --rpc")
        from .remote_backend import RemoteTvmBackend

        backend = RemoteTvmBackend(path, meta, remote)
    elif meta["target"].get("kind") == "iluvatar":
        from .igie_backend import IgieBackend

        backend = IgieBackend(path, meta)
    else:
        from .tvm_backend import TvmBackend

        backend = TvmBackend(path, meta)
    backend.runtime = "igie" if meta["target"].get("kind") == "iluvatar" else "tvm"
    backend.runtime_version = meta.get("tvm_version")
    backend.precision = meta["precision"]
    # the build description's words for what the matrix products compute in (absent in engines
    # built before it was recorded)
    backend.computes_in = meta.get("arithmetic") or meta["precision"]
    backend.model_sha256 = meta.get("model_sha256")
    backend.weights = meta.get("weights") or weights_of(meta.get("model_metadata"), meta.get("model_path"),
                                                        backend.model_sha256)
    return backend


def open_backend(path: str, batch_size: int | None = None, input_name: str | None = None,
                 remote=None, runtime: str | None = None, precision: str | None = None,
                 image_shape=None) -> Backend:
    """Open an engine file or ``.onnx``; check it against the batch size and input name asked for.
    ``remote``: run the engine on that RPC device instead of here. An ``.onnx`` runs on
    ``runtime`` (one of ONNX_RUNTIMES, default onnxruntime) computing in ``precision`` (None: the
    runtime's default); ``image_shape`` (C, H, W) fills the model's free image dimensions for a
    runtime that compiles for one shape (OpenVINO)."""
    problem = runtime_problem(path, runtime, precision, remote is not None)
    if problem:
        raise ToolkitError(problem)
    require_file(path, "engine")
    if path.endswith(".onnx"):
        if runtime == "openvino":
            backend = OpenVinoBackend(path, batch_size or 1, image_shape, precision)
            backend.model_metadata = onnx_metadata(path)
        else:
            backend = OrtBackend(path)
        backend.model_sha256 = sha256_file(path)
        backend.weights = weights_of(backend.model_metadata, path, backend.model_sha256)
        if batch_size and backend.input_shape[0] is None:
            backend.input_shape = (batch_size, *backend.input_shape[1:])
    else:
        backend = load_engine(path, remote)
    if input_name and input_name != backend.input_name:
        raise ToolkitError(f"{path} has input '{backend.input_name}', not '{input_name}'")
    if batch_size and backend.input_shape[0] != batch_size:
        raise ToolkitError(
            f"{path} was built for batch size {backend.input_shape[0]}, not {batch_size}; rebuild it for input "
            f"{backend.input_name}:{batch_size},{','.join(map(str, backend.input_shape[1:]))}"
        )
    return backend


def onnx_metadata(path: str) -> dict:
    """An ONNX model's metadata_props (where a PP-OCR model carries its dictionary), read without
    starting a runtime."""
    import onnx

    require_file(path, "ONNX model")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own
        raise ToolkitError(f"{path} is not an ONNX model ({first_line(exc)})")
    return {prop.key: prop.value for prop in model.metadata_props}


__all__ = ["Backend", "DEFAULT_ONNX_RUNTIME", "ONNX_RUNTIMES", "OpenVinoBackend", "OrtBackend", "load_engine",
           "onnx_metadata", "open_backend", "runtime_problem"]
