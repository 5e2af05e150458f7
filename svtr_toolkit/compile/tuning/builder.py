"""MetaSchedule's candidate builder: one fork per candidate, side by side, killed past a deadline."""
from __future__ import annotations

import os
import select
import signal
import time

from ...cpu_features import usable_cores


def build_in_children(items, build_one, timeout_s: float, workers: int) -> list:
    """``build_one(item)`` (an artifact path) for every item, each in a forked child, at most
    ``workers`` at once; per item ("ok", path) or ("error", message). A child past ``timeout_s``
    is killed. The children are forked one after another from this thread (no fork while other
    threads hold locks) and run side by side."""
    results = [None] * len(items)
    queue = list(enumerate(items))
    running = {}  # pipe -> [index, pid, start time, chunks read]

    def start(item):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: build, report the artifact path (or the error), leave at once
            os.close(read_fd)
            try:
                message = "ok:" + build_one(item)
            except BaseException as exc:  # any failure is just a bad candidate
                message = f"error:{exc.__class__.__name__}: {str(exc)[:500]}"
            os.write(write_fd, message.encode())
            os._exit(0)
        os.close(write_fd)
        return read_fd, pid

    def finish(read_fd, kill=False):
        index, pid = running.pop(read_fd)[:2]
        if kill:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        return index

    try:
        while queue or running:
            while queue and len(running) < workers:
                index, item = queue.pop(0)
                read_fd, pid = start(item)
                running[read_fd] = [index, pid, time.monotonic(), []]
            ready, _, _ = select.select(list(running), [], [], 0.5)
            for read_fd in ready:
                chunk = os.read(read_fd, 65536)
                if chunk:
                    running[read_fd][3].append(chunk)
                    continue
                message = b"".join(running[read_fd][3]).decode(errors="replace")  # end of file: done
                index = finish(read_fd)
                ok = message.startswith("ok:")
                results[index] = ("ok", message[3:]) if ok else ("error", message[6:] or "build process died")
            for read_fd, (index, _, started, _) in list(running.items()):
                if time.monotonic() - started > timeout_s:
                    finish(read_fd, kill=True)
                    results[index] = ("error", f"build timed out after {timeout_s:.0f} s")
    finally:  # interrupted: no child outlives the round
        for read_fd in list(running):
            finish(read_fd, kill=True)
    return results


def forking_builder(timeout_s: float = 60.0, workers: int | None = None):
    """A MetaSchedule builder over ``build_in_children``, one child per core by default.

    LocalBuilder restarts its worker pool for every batch, which costs more than the builds
    on a machine with few cores; building in this process is fast but a pathological candidate can
    keep LLVM busy for many minutes. A fork per candidate is cheap (copy-on-write) and can be
    killed when it runs past ``timeout_s``; while candidates are timed on remote devices (RPC),
    this machine's cores only build.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    workers = workers or usable_cores()

    def build_one(item):
        return default_export(default_build(item.mod, item.target, None))

    @derived_object
    class ForkingBuilder(PyBuilder):
        def build(self, build_inputs):
            done = build_in_children(list(build_inputs), build_one, timeout_s, workers)
            return [BuilderResult(value, None) if status == "ok" else BuilderResult(None, value)
                    for status, value in done]

    return ForkingBuilder()
