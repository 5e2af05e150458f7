"""Where an engine's time goes: every kernel the Relax VM calls, timed by its instrument hook.

The VM calls a hook before and after each call instruction. A call during which other calls
ran is a Relax function (``main``, the fp16 plan's ``rectifier`` / ``recogniser`` / ``head``):
its time is its callees', so it is left out; the VM's own builtins (allocation, shape checks)
are counted apart. A kernel called several times per run (a repeated block's convolution) is
one row with its call count, so a row's time is what that kernel costs the whole run.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from ..table import render_table

BUILTIN_PREFIX = "vm.builtin."


@dataclass
class KernelTime:
    kernel: str
    calls_per_run: float
    ms_per_run: float
    share: float  # of all kernels' time
    gflop_per_s: float | None = None  # with kernel FLOPs (``add_rates``); None: no estimate

    def row(self, rates: bool = False) -> list:
        # the name last: fused kernels' names run to a hundred characters and more
        rate = [] if not rates else ["-" if self.gflop_per_s is None else _rate(self.gflop_per_s)]
        return [f"{self.ms_per_run:.2f}", f"{100 * self.share:.1f}", f"{self.calls_per_run:g}", *rate, self.kernel]


def _rate(gflop_per_s: float) -> str:
    """One decimal, or two significant digits under 1 GFLOP/s: a small kernel's rate (a copy
    with a few additions) must not read 0.0, which says it does no arithmetic."""
    return f"{gflop_per_s:.1f}" if gflop_per_s >= 1 else f"{gflop_per_s:.2g}"


def add_rates(profile: dict, flops_per_call: dict) -> None:
    """Each kernel's GFLOP/s from its FLOPs per call (``compile.build.kernel_flops``); kernels
    with no FLOPs (copies, gathers) keep None."""
    for row in profile["kernels"]:
        flops = flops_per_call.get(row.kernel)
        if flops and row.ms_per_run > 0:
            row.gflop_per_s = flops * row.calls_per_run / (row.ms_per_run * 1e-3) / 1e9
    profile["rates"] = True


class _Recorder:
    """The instrument hook: per symbol, summed seconds and calls of the calls that are leaves."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.stack = []  # [symbol, start, had_callee]

    def __call__(self, func, symbol, before_run, ret_value, *args):
        now = time.perf_counter()
        if before_run:
            if self.stack:
                self.stack[-1][2] = True
            self.stack.append([str(symbol), now, False])
        else:
            name, start, had_callee = self.stack.pop()
            if not had_callee:
                self.seconds[name] += now - start
                self.calls[name] += 1
        return 0  # go on with the call as usual


def profile_vm(vm, device, data, runs: int = 5, warmup: int = 2) -> dict:
    """Time every kernel of ``vm``'s ``main`` on ``data`` (a host array) over ``runs`` runs after
    ``warmup`` plain ones. Returns {"kernels": [KernelTime, ...] slowest first, "kernel_ms",
    "builtin_ms", "instrumented_ms", "plain_ms"} (per run)."""
    import tvm

    tensor = tvm.runtime.tensor(data, device)
    for _ in range(warmup):
        vm["main"](tensor)
    start = time.perf_counter()
    for _ in range(runs):
        vm["main"](tensor)
    device.sync()
    plain = (time.perf_counter() - start) / runs

    recorder = _Recorder()
    vm.set_instrument(recorder)
    try:
        start = time.perf_counter()
        for _ in range(runs):
            vm["main"](tensor)
        device.sync()
        instrumented = (time.perf_counter() - start) / runs
    finally:
        vm.set_instrument(lambda *_: 0)  # the hook adds overhead to every later call otherwise
    kernels = {k: s for k, s in recorder.seconds.items() if not k.startswith(BUILTIN_PREFIX)}
    total = sum(kernels.values())
    rows = [KernelTime(name, recorder.calls[name] / runs, 1e3 * seconds / runs, seconds / total if total else 0.0)
            for name, seconds in sorted(kernels.items(), key=lambda kv: -kv[1])]
    builtin = sum(s for k, s in recorder.seconds.items() if k.startswith(BUILTIN_PREFIX))
    return {"kernels": rows, "kernel_ms": 1e3 * total / runs, "builtin_ms": 1e3 * builtin / runs,
            "instrumented_ms": 1e3 * instrumented, "plain_ms": 1e3 * plain}


def format_profile(profile: dict, top: int | None = None) -> str:
    rows = profile["kernels"][:top] if top else profile["kernels"]
    rates = bool(profile.get("rates"))
    header = ["ms/run", "% of kernels", "calls/run"] + (["GFLOP/s"] if rates else []) + ["kernel"]
    table = render_table(header, [r.row(rates) for r in rows], align="rrr" + ("r" if rates else "") + "l")
    left = len(profile["kernels"]) - len(rows)
    return (table + (f"\n... {left} more kernels" if left > 0 else "")
            + f"\nkernels {profile['kernel_ms']:.1f} ms per run, VM builtins {profile['builtin_ms']:.1f} ms; "
              f"a run took {profile['plain_ms']:.1f} ms plain, {profile['instrumented_ms']:.1f} ms instrumented")
