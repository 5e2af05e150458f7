"""Progress of a long loop: a tqdm bar on a terminal, plain periodic lines in a log.

Carriage-return updates make a captured log one long line (22 updates on one line for 647
images), so when stderr is not a terminal the progress is a line every ``PLAIN_EVERY`` of the
total instead. ``enabled=False`` (the tools' ``--no_progress``) shows nothing.
"""
from __future__ import annotations

import sys
import time

PLAIN_EVERY = 0.25  # a plain line at 25 %, 50 %, 75 %, 100 %


class _Plain:
    def __init__(self, total: int, unit: str, desc: str, stream):
        self.total, self.unit, self.desc, self.stream = total, unit, desc, stream
        self.done, self.next_mark, self.start = 0, PLAIN_EVERY, time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        if self.total and self.done / self.total >= self.next_mark - 1e-9:
            while self.done / self.total >= self.next_mark - 1e-9:
                self.next_mark += PLAIN_EVERY
            seconds = time.perf_counter() - self.start
            print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f} %, "
                  f"{seconds:.1f} s)", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class _Off:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, unit: str, desc: str, enabled: bool = True, stream=None):
    """An object with ``update(n)`` and ``close()``: a bar, plain lines or nothing (see the module)."""
    stream = stream or sys.stderr
    if not enabled:
        return _Off()
    if not stream.isatty():
        return _Plain(total, unit, desc, stream)
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=stream)
