"""Runtimes behind one small interface (``base.Backend``): onnxruntime, TVM's Relax VM, IGIE.

``open_backend`` picks by file: a ``.onnx`` runs on onnxruntime (the reference), anything
else is an engine built by this toolkit, opened on the device its build description names.
Runtime reads engines through ``svtr_toolkit.engine_file`` only; it never imports compile.
"""
from __future__ import annotations

from ..engine_file import description_problem, image_damaged, read_engine_metadata
from ..errors import ToolkitError, first_line
from ..files import require_file, sha256_file
from ..provenance import weights_of
from .base import Backend
from .ort_backend import OrtBackend

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
    backend.model_sha256 = meta.get("model_sha256")
    backend.weights = meta.get("weights") or weights_of(meta.get("model_metadata"), meta.get("model_path"),
                                                        backend.model_sha256)
    return backend


def open_backend(path: str, batch_size: int | None = None, input_name: str | None = None,
                 remote=None) -> Backend:
    """Open an engine file or ``.onnx``; check it against the batch size and input name asked for.
    ``remote``: run the engine on that RPC device instead of here."""
    require_file(path, "engine")
    if path.endswith(".onnx") and remote is not None:
        raise ToolkitError("--rpc runs TVM engines; an .onnx file runs here on onnxruntime (drop --rpc)")
    if path.endswith(".onnx"):
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


__all__ = ["Backend", "OrtBackend", "load_engine", "onnx_metadata", "open_backend"]
