"""Where an engine's time goes, kernel by kernel.

    python tools/profile_engine.py --engine work/engines/svtr_bs_32_fp16.so [--runs 5] [--top 20] [--json F] [--flops]

Runs the engine on a fixed-seed batch of its own input shape with the Relax VM's instrument
hook and prints, per kernel (fused TIR function), its calls per run, milliseconds per run and
share of all kernels' time, slowest first. A kernel a repeated block calls several times is
one row. The last line gives the kernels' total, the VM's own builtins and a run's time with
and without the hook (the hook's overhead). ``--flops`` adds each kernel's GFLOP/s: the engine's
model (its build description names it; it must be unchanged) is lowered again to count every
kernel's FLOPs, so a kernel that is slow for its arithmetic stands out. Engines for this machine
only (not over RPC).
"""
import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


def main(argv=None):
    parser = cli.Parser(__doc__)
    parser.add_argument("--engine", required=True, type=cli.path, help="a TVM engine built by build_engine.py")
    parser.add_argument("--runs", type=cli.positive_int, default=5,
                        help="instrumented runs averaged (default 5)")
    parser.add_argument("--top", type=cli.nonnegative_int, default=25,
                        help="rows shown, slowest first (default 25; 0: all)")
    parser.add_argument("--json", default=None, type=cli.path, help="also write every kernel's figures to this file")
    parser.add_argument("--flops", action="store_true",
                        help="also each kernel's GFLOP/s (lowers the engine's model again to count its FLOPs)")
    args = parser.parse_args(argv)

    from svtr_toolkit.bench.profile import add_rates, format_profile, profile_vm
    from svtr_toolkit.errors import ToolkitError
    from svtr_toolkit.files import check_outputs_apart, check_writable, write_json
    from svtr_toolkit.numerics import random_batch
    from svtr_toolkit.runtime import open_backend

    if args.json:  # before the profile, not after it
        check_writable(args.json, "--json")
        check_outputs_apart([("--json", args.json)], [("--engine", args.engine)])
    backend = open_backend(args.engine)
    if not hasattr(backend, "vm"):
        raise ToolkitError(f"{args.engine} is not a TVM engine: only the Relax VM's kernels can be profiled")
    flops = None
    if args.flops:
        from svtr_toolkit.compile.build import kernel_flops

        flops = kernel_flops(backend.metadata)  # before timing: a missing or changed model fails fast
    profile = profile_vm(backend.vm, backend.device, random_batch(backend.input_shape), runs=args.runs)
    if flops is not None:
        add_rates(profile, flops)
    print(f"{args.engine}: {backend.name}, input {backend.input_name}:{list(backend.input_shape)}, "
          f"{len(profile['kernels'])} kernels, {args.runs} runs")
    print(format_profile(profile, top=args.top or None))
    if args.json:
        write_json(args.json, {**profile, "kernels": [k.__dict__ for k in profile["kernels"]]}, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
