"""TVM's CPU thread pool: sized once, explicitly, by whoever runs or times CPU kernels."""
from __future__ import annotations

import os


def use_all_cpu_cores() -> int:
    """Size TVM's CPU thread pool to every core this process may run on; returns the count.

    Unless told otherwise, TVM's runtime halves the logical CPU count on x86 on the
    assumption that half are hyper-threads. On a VM whose vCPUs are whole cores that runs
    every kernel on a single thread: half the throughput. A TVM_NUM_THREADS set by the
    user wins. The variable is also exported, so worker processes (MetaSchedule's runner)
    time kernels with the same pool.
    """
    import tvm

    if os.environ.get("TVM_NUM_THREADS"):
        return int(os.environ["TVM_NUM_THREADS"])
    cores = sorted(os.sched_getaffinity(0))
    os.environ["TVM_NUM_THREADS"] = str(len(cores))
    # -3: every worker may run on all the listed cores (no one-core-per-thread pinning);
    # this also resizes a pool that an earlier call already started.
    tvm.get_global_func("runtime.config_threadpool")(-3, len(cores), [str(c) for c in cores])
    return len(cores)
