"""The machine's measured peaks, each in a fresh process so the probe's threads and memory go away.

- fp32: the better of onnxruntime's MLAS sgemm on an n^3 MatMul (a model built in memory) and an
  fp32 matmul at an SVTR MLP shape compiled by the toolkit's default rules, on all cores and on
  one. MLAS picks its kernels from the CPU it runs on; numpy's OpenBLAS may not know a newer CPU
  and then under-reads the peak several times. Neither probe is always the faster (the JSON
  keeps both readings), and a peak that a contender's own kernels beat would put its
  "% peak" above what the CPU allows.
- fp16: where the CPU has fp16 arithmetic (x86 avx512_fp16, ARMv8.2 fp16), an fp16 matmul at the
  same shape compiled by the default rules with fp16 accumulation over the whole K (the K-chunked
  kernel without its fp32 chunk sums: the CPU's fp16 FMAs); elsewhere there is no fp16 figure and
  fp16 engines are set against the fp32 peak.
- bf16: where the CPU has bf16 arithmetic the toolkit uses (AMX-BF16 or avx512_bf16), the
  bf16 plan's product by weights as the build compiles it (AMX tiles or vdpbf16ps); elsewhere
  bf16 engines (bf16 values in fp32 arithmetic) are set against the fp32 peak.
"""
from __future__ import annotations

import os
import subprocess
import sys

from ..errors import ToolkitError
from .kernels import FP32, WHOLE_K

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gemm_flops(n: int) -> float:
    """FLOPs of an n x n x n matrix product (one multiply-add = 2 FLOPs)."""
    return 2.0 * n ** 3


def matmul_model(n: int):
    """An ONNX model computing one n x n x n fp32 MatMul of its two inputs."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", inputs,
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def ort_sgemm_flops(n: int, repeats: int, threads: int) -> float:
    """Best FLOP/s of onnxruntime's MatMul (MLAS sgemm) at n^3 with ``threads`` intra-op threads."""
    import time

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(matmul_model(n).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {name: np.random.default_rng(k).standard_normal((n, n), dtype=np.float32) for k, name in enumerate("ab")}
    session.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return gemm_flops(n) / best


# The compiled probes' product: SVTR-Tiny's last MLP product at batch 32 (50 tokens x 32 images, K 1024).
RULE_PROBE_MNK = (1600, 256, 1024)
# The fp16 probe's kernel: fp16 operands summed in fp16 over the whole K (no fp32 chunk sums), the
# most an fp16 CPU's FMAs give through the default rules (chunked-contraction).
FP16_PROBE_KERNEL = WHOLE_K


def tvm_rule_matmul_flops(kernel: str = FP32, m: int = RULE_PROBE_MNK[0], n: int = RULE_PROBE_MNK[1],
                          k: int = RULE_PROBE_MNK[2], repeats: int = 5) -> float:
    """Best FLOP/s of an m x n x k matmul compiled for this host by the default schedule rules, as
    the kernel sweep compiles its ``kernel`` (``kernels.variants``: FP32, or FP16_PROBE_KERNEL),
    on the threads TVM_NUM_THREADS gives it. Its b is an input, whose K x nr panels the rule packs
    at run time; an engine's constant weights are packed at build time instead, which at this
    shape reads the same (a long K pays for the copy)."""
    import numpy as np
    import tvm
    from tvm import relax

    from ..compile.targets import host_cpu_target
    from .kernels import compile_kernel, variants

    variant = next((v for v in variants() if v.name == kernel), None)
    if variant is None:
        raise ToolkitError(f"no kernel {kernel!r} to probe (choose from {', '.join(v.name for v in variants())})")
    executable, _ = compile_kernel(variant, m, n, k, host_cpu_target())
    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.standard_normal(shape).astype(variant.dtype), dev) for shape in ((m, k), (k, n))]
    timer = vm.time_evaluator("main", dev, number=10, repeat=repeats)
    return 2.0 * m * n * k / min(timer(*args).results)


# The bf16 probe: a product by weights of the bf16 plan, in whole AMX tiles and register tiles.
BF16_PROBE_MNK = (3200, 512, 512)


def tvm_bf16_matmul_flops(m: int = BF16_PROBE_MNK[0], n: int = BF16_PROBE_MNK[1], k: int = BF16_PROBE_MNK[2],
                          repeats: int = 5) -> float:
    """Best FLOP/s of a bf16 product by weights (bf16-rounded activations, bf16 weights, fp32
    sums) compiled for this host by the default build: AMX tiles or vdpbf16ps, as the CPU has."""
    import numpy as np
    import tvm
    from tvm import relax

    from ..compile.arithmetic import AMX_BF16, bf16_matrix_instructions
    from ..compile.targets import host_cpu_target
    from ..runtime.library import request_amx_state

    instructions = bf16_matrix_instructions(host_cpu_target().spec)
    refused = request_amx_state() if instructions == AMX_BF16 else None
    if instructions is None or refused:
        raise ToolkitError(f"the bf16 probe needs bf16 arithmetic: {refused or 'this CPU has none the toolkit uses'}")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "float32"))
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((k, n)).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    with bb.function("main", [x]):
        with bb.dataflow():
            rounded = bb.emit(relax.op.astype(relax.op.astype(x, "bfloat16"), "float32"))
            out = bb.emit_output(relax.op.matmul(rounded, relax.const(weight)))
        bb.emit_func_output(out)
    target = host_cpu_target()
    tvm_target = target.tvm_target()
    report = {}
    executable = tvm.compile(bb.get(), tvm_target, relax_pipeline=target.module.pipeline(tvm_target, None, report))
    if instructions not in report.values():
        raise ToolkitError(f"the bf16 probe's product was not a {instructions} kernel ({report})")
    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    timer = vm.time_evaluator("main", dev, number=10, repeat=repeats)
    return 2.0 * m * n * k / min(timer(tvm.runtime.tensor(rng.standard_normal((m, k)).astype(np.float32), dev)).results)


def _probe(call: str, env_threads: int | None = None, timeout: int = 600, exact_threads: bool = False) -> float:
    """Run ``call`` (an expression of this module) in a fresh interpreter; its FLOP/s. TVM's
    threads: ``env_threads`` unless TVM_NUM_THREADS is set (always ``env_threads`` with
    ``exact_threads``)."""
    env = dict(os.environ)
    if env_threads:
        env["TVM_NUM_THREADS"] = str(env_threads) if exact_threads else env.get("TVM_NUM_THREADS") or str(env_threads)
    snippet = f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); from svtr_toolkit.bench import peak; print(peak.{call})"
    try:
        done = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, check=True,
                              timeout=timeout)
        return float(done.stdout.strip().splitlines()[-1])
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise ToolkitError(f"the peak probe peak.{call} failed: {tail[0]}")
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise ToolkitError(f"the peak probe peak.{call} failed: {exc}")


def measure_gemm_flops(n: int = 2048, repeats: int = 3, threads: int = 1) -> float:
    """Best FLOP/s of onnxruntime's n^3 fp32 sgemm with ``threads`` threads, in a fresh process."""
    return _probe(f"ort_sgemm_flops({n}, {repeats}, {threads})")


def measure_rule_matmul_flops(threads: int) -> float:
    """Best FLOP/s of the default rules' fp32 matmul on ``threads`` threads, in a fresh process."""
    return _probe(f"tvm_rule_matmul_flops({FP32!r})", env_threads=threads, exact_threads=threads == 1)


def measure_fp16_flops(cores: int) -> float:
    """Best FLOP/s of the default rules' fp16 matmul (fp16 accumulation) on every core, in a fresh process."""
    return _probe(f"tvm_rule_matmul_flops({FP16_PROBE_KERNEL!r})", env_threads=cores)


def measure_bf16_flops(cores: int) -> float:
    """Best FLOP/s of the bf16 plan's AMX product on every core, in a fresh process."""
    return _probe("tvm_bf16_matmul_flops()", env_threads=cores)


def measure_peak(cores: int, n: int = 2048, repeats: int = 3, fp16_arithmetic: bool | None = None,
                 bf16_arithmetic: bool | None = None) -> dict:
    """fp32 (all cores, one core) and, on CPUs with fp16 arithmetic, fp16 and, on CPUs with bf16
    arithmetic the toolkit uses (AMX tiles, vdpbf16ps), bf16 peaks in FLOP/s."""
    if fp16_arithmetic is None:
        from ..cpu_features import host

        fp16_arithmetic = host().has_fp16_arithmetic
    from ..compile.arithmetic import bf16_matrix_instructions
    from ..compile.targets import host_cpu_target

    instructions = bf16_matrix_instructions(host_cpu_target().spec)
    if bf16_arithmetic is None:
        bf16_arithmetic = instructions is not None
    readings = {
        "mlas_all_cores_flops": measure_gemm_flops(n, repeats, threads=cores),
        "mlas_one_core_flops": measure_gemm_flops(n, repeats, threads=1),
        "rules_all_cores_flops": measure_rule_matmul_flops(cores),
        "rules_one_core_flops": measure_rule_matmul_flops(1),
    }
    m, nn, k = RULE_PROBE_MNK
    return {
        "gemm_n": n, "repeats": repeats, "cores": cores,
        "fp32_probe": f"best of onnxruntime MLAS sgemm {n}^3 and TVM default-rules matmul M={m} N={nn} K={k}",
        "all_cores_flops": max(readings["mlas_all_cores_flops"], readings["rules_all_cores_flops"]),
        "one_core_flops": max(readings["mlas_one_core_flops"], readings["rules_one_core_flops"]),
        "fp32_readings": readings,
        "fp16_arithmetic": bool(fp16_arithmetic),
        "fp16_probe": (f"TVM default-rules fp16 matmul M={m} N={nn} K={k}, fp16 accumulation over the whole K"
                       if fp16_arithmetic else None),
        "fp16_flops": measure_fp16_flops(cores) if fp16_arithmetic else None,
        "bf16_arithmetic": bool(bf16_arithmetic),
        "bf16_probe": (f"TVM bf16 product by weights M={BF16_PROBE_MNK[0]} N={BF16_PROBE_MNK[1]} K={BF16_PROBE_MNK[2]}, "
                       f"{instructions} kernels, fp32 sums") if bf16_arithmetic else None,
        "bf16_flops": measure_bf16_flops(cores) if bf16_arithmetic else None,
    }


def merge_peaks(before: dict, after: dict) -> dict:
    """Best of two probes, keeping both readings."""
    merged = dict(before)
    for key in ("all_cores_flops", "one_core_flops", "fp16_flops", "bf16_flops"):
        if before.get(key) is None and after.get(key) is None:
            continue
        merged[key] = max(v for v in (before.get(key), after.get(key)) if v is not None)
        merged[key + "_probes"] = [before.get(key), after.get(key)]
    return merged


def describe_peak(peak: dict) -> str:
    """The peaks in words: fp32 on all cores and one, and fp16 or why there is none."""
    line = (f"fp32 {peak['all_cores_flops'] / 1e9:.1f} GFLOP/s on {peak['cores']} cores, "
            f"{peak['one_core_flops'] / 1e9:.1f} on 1 core ({peak['fp32_probe']}); ")
    if peak.get("fp16_flops"):
        line += f"fp16 {peak['fp16_flops'] / 1e9:.1f} GFLOP/s ({peak['fp16_probe']})"
    else:
        line += "this CPU has no fp16 arithmetic: fp16 engines are set against the fp32 peak"
    if peak.get("bf16_flops"):
        return line + f"; bf16 {peak['bf16_flops'] / 1e9:.1f} GFLOP/s ({peak['bf16_probe']})"
    return line + "; no bf16 matrix arithmetic (AMX): bf16 engines are set against the fp32 peak"


def peak_for(peak: dict, arithmetic: str | None):
    """(FLOP/s, label) of the peak that matches a contender's arithmetic ("fp32", "fp16", "bf16");
    fp16 without fp16 arithmetic runs fp32 FMAs, so it is set against the fp32 peak. (None, label)
    where no matching probe exists."""
    if arithmetic == "fp16" and peak.get("fp16_flops"):
        return peak["fp16_flops"], "fp16"
    if arithmetic == "bf16" and peak.get("bf16_flops"):
        return peak["bf16_flops"], "bf16"
    if arithmetic in ("fp32", None) or (arithmetic == "fp16" and not peak.get("fp16_arithmetic")) \
            or (arithmetic == "bf16" and not peak.get("bf16_arithmetic")):
        return peak.get("all_cores_flops"), "fp32"
    return None, f"no {arithmetic} probe"
