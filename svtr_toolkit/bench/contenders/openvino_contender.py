"""OpenVINO on the same ONNX model as onnxruntime, in two settings: ``openvino-fp32`` (fp32 asked
for) and ``openvino-default`` (its own default: bf16 on CPUs with bf16). Each is compiled for one
static batch per sweep batch, with the thread count the other contenders use; what each computes
in is read back from OpenVINO (``runtime.openvino_backend``)."""
from __future__ import annotations

from ...runtime.openvino_backend import OpenVinoBackend, import_openvino, openvino_version
from . import Entry, Setup

# contender name -> the precision asked for (None: OpenVINO's default)
SETTINGS = {"openvino-fp32": "fp32", "openvino-default": None}


def version() -> str | None:
    return openvino_version()


def unavailable() -> str | None:
    return import_openvino()[1]


def entries(setup: Setup) -> list:
    out = []
    for name, precision in SETTINGS.items():
        backends = [OpenVinoBackend(setup.model_path, batch, setup.image_chw, precision, setup.threads)
                    for batch in setup.model_batches]
        out += [Entry(name, b, batch=b.input_shape[0], arithmetic=b.computes_in) for b in backends]
        if backends:
            setup.log(f"{name}: OpenVINO {backends[0].runtime_version}, config {backends[0].config}, computes in "
                      f"{backends[0].inference_precision}")
    return out
