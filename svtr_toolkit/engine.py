"""Build, describe and run TVM engines compiled from an SVTR ONNX model.

An engine is one shared library. Its build description (source model hash, input,
precision, target, TVM version) is appended to the file after the ELF image, so the
engine carries it wherever it is copied, and it can be read without loading the library
(a CUDA engine can be checked on a CPU-only machine). The dynamic loader ignores the
trailing bytes.
"""
from __future__ import annotations

import json
import os
import struct
import time
import warnings

import numpy as np

from .backends import Backend
from .errors import ToolkitError
from .files import sha256_file as file_sha256
from .files import write_atomically
from .targets import BuildTarget

PRECISIONS = ("fp16", "fp32")
# Bump when the build recipe changes in a way that changes the engine: old engines go stale.
RECIPE_VERSION = 1
_FOOTER_MAGIC = b"SVTRMETA"
_FOOTER = struct.Struct("<Q8s")  # length of the JSON, magic


# ----------------------------------------------------------------------------- input spec
def parse_input_spec(text: str):
    """``x:32,3,64,256`` -> ("x", (32, 3, 64, 256))."""
    name, sep, dims = (text or "").partition(":")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or len(shape) != 4 or any(d <= 0 for d in shape):
        raise ToolkitError(f"--input must look like name:N,C,H,W with positive integers (e.g. x:32,3,64,256), got '{text}'")
    return name, shape


# ----------------------------------------------------------------------------- metadata
def read_engine_metadata(path: str) -> dict | None:
    """The build description appended to an engine, or None if the file has none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size < _FOOTER.size:
                return None
            fh.seek(size - _FOOTER.size)
            length, magic = _FOOTER.unpack(fh.read(_FOOTER.size))
            if magic != _FOOTER_MAGIC or length > size - _FOOTER.size:
                return None
            fh.seek(size - _FOOTER.size - length)
            return json.loads(fh.read(length).decode("utf-8"))
    except (OSError, ValueError):
        return None


def _append_metadata(path: str, meta: dict) -> None:
    blob = json.dumps(meta, sort_keys=True).encode("utf-8")
    with open(path, "ab") as fh:
        fh.write(blob)
        fh.write(_FOOTER.pack(len(blob), _FOOTER_MAGIC))


def build_identity(model_sha256: str, input_name: str, shape: tuple, precision: str, target: BuildTarget,
                   tuning_db: str | None = None) -> dict:
    """What an engine must match to be reused instead of rebuilt (``tuning_db``: database digest)."""
    import tvm

    return {
        "recipe_version": RECIPE_VERSION,
        "model_sha256": model_sha256,
        "input_name": input_name,
        "input_shape": list(shape),
        "precision": precision,
        "target": target.spec,
        "tvm_version": tvm.__version__,
        "tuning_db": tuning_db,
    }


def stale_reasons(meta: dict | None, identity: dict) -> list:
    """Why an existing engine cannot be reused; empty when it can."""
    if meta is None:
        return ["no build description (not built by this toolkit, or an older format)"]
    labels = {"model_sha256": "source model", "input_shape": "input shape", "input_name": "input name",
              "tuning_db": "tuning database"}
    return [
        f"{labels.get(key, key.replace('_', ' '))} changed ({meta.get(key)!r} -> {want!r})"
        for key, want in identity.items()
        if meta.get(key) != want
    ]


# ----------------------------------------------------------------------------- build
def load_onnx(path: str):
    import onnx

    if not os.path.isfile(path):
        raise ToolkitError(f"ONNX model not found: {path}")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ToolkitError(f"cannot read ONNX model {path}: {exc.__class__.__name__}")


def prepare_onnx(model, input_name: str, shape: tuple):
    """The graph the importer gets: static shape, fixed Resize inputs, elementwise clamps."""
    from . import onnx_passes

    model = onnx_passes.static_input(model, input_name, shape)
    model = onnx_passes.drop_empty_resize_inputs(model)
    return onnx_passes.decompose_clamps(model)


def _import(model, input_name, shape):
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with warnings.catch_warnings():
            # paddle2onnx's tensor names have dots; the importer renames them and warns each time
            warnings.filterwarnings("ignore", message="Renaming name")
            return from_onnx(model, shape_dict={input_name: list(shape)})
    except Exception as exc:  # the importer raises assorted errors for unsupported graphs
        raise ToolkitError(f"TVM cannot import the model: {str(exc).splitlines()[-1] if str(exc) else exc.__class__.__name__}")


def fp16_plan(model):
    """The fp16 engine's parts, in order: [(name, ONNX part, converted to fp16?)].

    The STN/TPS rectifier up to the GridSample (if the model has one) stays fp32: converting
    it loses the argmax. The CTC head (classifier, bias, softmax) stays fp32: fp16 logits
    swap near-tied characters. The recogniser between them is fp16.
    """
    from .onnx_passes import split_at_grid_sample, split_ctc_head

    parts, rest = [], model
    cut = split_at_grid_sample(rest)
    if cut is not None:
        parts.append(("rectifier", cut[0], False))
        rest = cut[1]
    cut = split_ctc_head(rest)
    parts += [("recogniser", cut[0], True), ("head", cut[1], False)] if cut else [("recogniser", rest, True)]
    return parts


def emulate_fp16_plan(model, input_name: str, shape: tuple, rounding: str = "all"):
    """The prepared model with ``fp16_plan``'s fp16 parts rounded as the engine rounds them
    (or only their weights / activations, see ``emulate_fp16_storage``), for onnxruntime: the
    reference that separates fp16 rounding from compiler error.
    Returns (model, a line naming the parts)."""
    from .onnx_passes import emulate_fp16_storage

    prepared = prepare_onnx(model, input_name, shape)
    parts = fp16_plan(prepared)
    region = {o for _, part, fp16 in parts if fp16 for n in part.graph.node for o in n.output}
    plan = ", ".join(f"{name} {'fp16' if fp16 else 'fp32'}" for name, _, fp16 in parts)
    return emulate_fp16_storage(prepared, region, rounding), plan


def to_relax(model, input_name: str, shape: tuple, precision: str):
    """Relax IRModule for the prepared ONNX model, and a line describing the precision plan.

    fp16 converts the parts ``fp16_plan`` marks with ToMixedPrecision (fp32 accumulation),
    each part its own function in the module. exp/erf/tanh/softmax become TVM's fast
    (polynomial) forms, which LLVM vectorises: otherwise each element is a scalar libm call,
    and GELU and softmax took ~40 % of a tuned CPU engine's time.
    """
    import tvm
    from tvm import relax

    if precision == "fp32":
        return _fast_math(_import(model, input_name, shape)), "all fp32"
    parts = fp16_plan(model)
    if len(parts) == 1:
        mixed = relax.transform.ToMixedPrecision(out_dtype="float32")
        return _fast_math(mixed(_import(model, input_name, shape))), "fp16 compute, fp32 accumulate/IO"
    functions, part_shape, described = [], list(shape), []
    for name, part, fp16 in parts:
        part_input = input_name if not functions else part.graph.input[0].name
        func = _import(part, part_input, part_shape)["main"]
        if fp16:
            func = relax.transform.ToMixedPrecision(out_dtype="float32")(tvm.IRModule({"main": func}))["main"]
        functions.append((name, func))
        part_shape = [int(d) for d in func.ret_ty.shape]
        described.append(f"{name} {'fp16' if fp16 else 'fp32'} ({len(part.graph.node)} nodes)")
    return _fast_math(_chain(functions, input_name, shape), skip="main"), ", ".join(described)


def _fast_math(mod, skip=None):
    """TVM's FastMathTransform on every function but ``skip`` (the pass cannot visit calls
    to other functions, which the chaining ``main`` consists of)."""
    import tvm
    from tvm import relax

    kept = {gv: func for gv, func in mod.functions_items() if gv.name_hint != skip}
    converted = relax.transform.FastMathTransform()(tvm.IRModule(kept))
    for gv, func in mod.functions_items():
        if gv.name_hint == skip:
            converted[gv] = func
    return converted


def _chain(functions, input_name, shape):
    """main(x) = fn(...f2(f1(x))) in one module, each (name, function) kept as its own function."""
    from tvm import relax

    bb = relax.BlockBuilder()
    handles = [bb.add_func(func.without_attr("global_symbol"), name) for name, func in functions]
    x = relax.Var(input_name, relax.TensorType(shape, "float32"))
    with bb.function("main", [x], {"num_input": 1}):
        value = x
        for handle in handles:
            value = bb.emit(relax.Call(handle, [value]))
        bb.emit_func_output(value)
    return bb.get()


def build_engine(model_path, input_name, shape, precision, target: BuildTarget, engine_path,
                 force=False, log=print, tuning_dir: str | None = "auto") -> dict:
    """Compile unless a fresh engine is already there; return the engine's metadata.

    ``tuning_dir``: "auto" applies the repository's MetaSchedule database for this CPU
    class if there is one, None builds without, a path names a database folder.
    """
    from . import tuning

    if precision not in PRECISIONS:
        raise ToolkitError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    model = load_onnx(model_path)
    if target.name != "llvm":
        tuning_dir = None
    elif tuning_dir == "auto":
        tuning_dir = tuning.database_dir(target.spec)
    db_digest = tuning.database_digest(tuning_dir) if tuning_dir else None
    identity = build_identity(file_sha256(model_path), input_name, shape, precision, target, db_digest)
    existing = read_engine_metadata(engine_path) if os.path.exists(engine_path) else None
    if os.path.exists(engine_path) and not force:
        reasons = stale_reasons(existing, identity)
        if not reasons:
            log(f"engine is up to date: {engine_path} ({precision}, {target.description})")
            return existing
        log(f"rebuilding {engine_path}: " + "; ".join(reasons))

    log(f"building {precision} engine for {target.description} from {model_path} with input {input_name}:{list(shape)}")
    start = time.perf_counter()
    meta = dict(identity)
    meta.update(
        model_path=os.path.abspath(model_path),
        target_description=target.description,
        model_metadata={p.key: p.value for p in model.metadata_props},
    )
    if target.name == "iluvatar":
        from . import igie

        # IGIE imports and converts precision itself; it gets the model file as the zoo does.
        write_atomically(engine_path, lambda tmp: (igie.build(model_path, input_name, shape, precision, tmp),
                                                   _append_metadata(tmp, meta)))
        meta["precision_plan"] = "IGIE relay.build precision=" + precision
    else:
        import tvm

        prepared = prepare_onnx(model, input_name, shape)
        mod, plan = to_relax(prepared, input_name, shape, precision)
        meta["precision_plan"] = plan
        log(f"precision plan: {plan}")
        tvm_target = target.tvm_target()
        pipeline = "default"
        if target.name == "llvm":
            meta["tuning"] = tuning.describe_coverage(mod, tvm_target, tuning_dir, log)
            pipeline = tuning.make_pipeline(tvm_target, tuning_dir if db_digest else None)
        try:
            executable = tvm.compile(mod, tvm_target, relax_pipeline=pipeline)
        except ToolkitError:
            raise
        except Exception as exc:
            raise ToolkitError(f"TVM could not compile the model for {target.description}: {str(exc).splitlines()[-1]}")
        meta["build_seconds"] = round(time.perf_counter() - start, 1)

        def write(tmp):
            executable.export_library(tmp)
            _append_metadata(tmp, meta)

        write_atomically(engine_path, write)
    log(f"wrote {engine_path} ({os.path.getsize(engine_path) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return meta


# ----------------------------------------------------------------------------- run
class TvmBackend(Backend):
    """A Relax VM over an engine built by ``build_engine``."""

    name = "tvm"

    def __init__(self, path, meta):
        import tvm
        from tvm import relax

        from .targets import BuildTarget

        self.metadata = meta
        self.input_name = meta["input_name"]
        self.input_shape = tuple(meta["input_shape"])
        self.model_metadata = meta.get("model_metadata", {})
        kind = meta["target"]["kind"]
        self.device = BuildTarget(kind, meta["target"], kind).device()
        self.name = f"tvm-{kind}-{meta['precision']}"
        try:
            self.vm = relax.VirtualMachine(tvm.runtime.load_module(path), self.device)
        except Exception as exc:
            raise ToolkitError(f"cannot load engine {path}: {str(exc).splitlines()[-1]}")

    def run(self, batch):
        import tvm

        self.check_batch(batch)
        data = tvm.runtime.tensor(np.ascontiguousarray(batch, dtype=np.float32), self.device)
        return self.vm["main"](data).numpy()

    def time_compute(self, repeat, number=1):
        import tvm

        batch = np.random.default_rng(0).uniform(-1, 1, self.input_shape).astype(np.float32)
        data = tvm.runtime.tensor(batch, self.device)
        timer = self.vm.time_evaluator("main", self.device, number=number, repeat=repeat)
        return list(timer(data).results)


def load_engine(path: str) -> Backend:
    """Open an engine on the device it was built for (IGIE engines through the IGIE adapter)."""
    meta = read_engine_metadata(path)
    if meta is None:
        raise ToolkitError(f"{path} is not an engine built by this toolkit (no build description); rebuild it")
    if meta["target"].get("kind") == "iluvatar":
        from .igie import IgieBackend

        return IgieBackend(path, meta)
    return TvmBackend(path, meta)
