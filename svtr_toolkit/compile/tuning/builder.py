"""MetaSchedule's candidate builder: one fork per candidate, killed past a deadline."""
from __future__ import annotations

import os


def forking_builder(timeout_s: float = 60.0):
    """Builds each candidate in a forked child with a deadline.

    LocalBuilder restarts its worker pool for every batch, which costs more than the builds
    on a machine with few cores; building in this process is fast but a pathological candidate can
    keep LLVM busy for many minutes. A fork per candidate is cheap (copy-on-write) and can be
    killed when it runs past ``timeout_s``.
    """
    import select
    import signal

    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    def build_one(item):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: build, report the artifact path (or the error), leave at once
            os.close(read_fd)
            try:
                message = "ok:" + default_export(default_build(item.mod, item.target, None))
            except BaseException as exc:  # any failure is just a bad candidate
                message = f"error:{exc.__class__.__name__}: {str(exc)[:500]}"
            os.write(write_fd, message.encode())
            os._exit(0)
        os.close(write_fd)
        try:
            ready, _, _ = select.select([read_fd], [], [], timeout_s)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                return BuilderResult(None, f"build timed out after {timeout_s:.0f} s")
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
            message = b"".join(chunks).decode(errors="replace")
        finally:
            os.close(read_fd)
            os.waitpid(pid, 0)
        if message.startswith("ok:"):
            return BuilderResult(message[3:], None)
        return BuilderResult(None, message[6:] or "build process died")

    @derived_object
    class ForkingBuilder(PyBuilder):
        def build(self, build_inputs):
            return [build_one(item) for item in build_inputs]

    return ForkingBuilder()
