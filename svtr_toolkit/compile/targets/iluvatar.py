"""The Iluvatar MR-V100, through the IGIE build of TVM (Relay, its own ONNX importer).

It mirrors the model zoo's own build call and nothing more; it cannot be exercised without
that hardware and software, so it stays small and isolated.
"""
from __future__ import annotations

from ...errors import ToolkitError

KIND = "iluvatar"
TUNED = False
MODEL = "MR"
LIBS = "-libs=cudnn,cublas,ixinfer"


def available() -> bool:
    """The IGIE build of TVM carries Relay and its ONNX importer; Apache TVM 0.27 has neither."""
    try:
        from tvm.relay.import_model import import_model_to_igie  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(remote=None):
    if remote is not None:
        raise ToolkitError("target iluvatar: IGIE engines are built and run on the MR-V100 machine, not through --rpc")
    if not available():
        raise ToolkitError("target iluvatar needs the IGIE build of TVM (tvm.relay.import_model); it is not installed")
    return {"kind": KIND, "model": MODEL}, "Iluvatar MR-V100 (IGIE)"


def pipeline(target, database=None, report=None):
    return None  # IGIE builds through ``build`` below


def build(onnx_path: str, input_name: str, shape: tuple, precision: str, out_path: str, spec: dict) -> None:
    """Compile with IGIE's own importer and precision handling into ``out_path``."""
    import tvm
    from tvm import relay
    from tvm.relay.import_model import import_model_to_igie

    target = tvm.target.iluvatar(model=spec["model"], options=LIBS)
    device = tvm.device(spec["kind"], 0)
    mod, params = import_model_to_igie(onnx_path, {input_name: tuple(shape)}, "onnx")
    with tvm.transform.PassContext(opt_level=3):
        lib = relay.build(mod, target=target, params=params, precision=precision, device=device)
    lib.export_library(out_path)
