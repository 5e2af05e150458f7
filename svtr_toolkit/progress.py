"""Progress of a long loop: a tqdm bar on a terminal, plain periodic lines in a log.

Carriage-return updates make a captured log one long line (22 updates on one line for 647
images), so when stderr is not a terminal the progress is a line every ``PLAIN_EVERY`` of the
total instead. ``enabled=False`` (the tools' ``--no_progress``) shows nothing. All three take
``update``, ``close``, ``set_description`` (what is running now: the bar's label, the next plain
line's) and ``set_postfix_str``, and a ``total`` that may be changed on the way.
"""
from __future__ import annotations

import sys
import time

PLAIN_EVERY = 0.25  # a plain line at 25 %, 50 %, 75 %, 100 %


class _Plain:
    def __init__(self, total: int, unit: str, desc: str, stream, initial: int = 0):
        self.total, self.unit, self.desc, self.stream = total, unit, desc, stream
        self.done, self.next_mark, self.start = initial, PLAIN_EVERY, time.perf_counter()
        self.postfix = ""
        self._pass_marks()  # resumed work: no lines for what was done

    def _pass_marks(self) -> bool:
        """Move the next mark past ``done``; True when ``done`` reached at least one mark."""
        if not self.total or self.done / self.total < self.next_mark - 1e-9:
            return False
        while self.done / self.total >= self.next_mark - 1e-9:
            self.next_mark += PLAIN_EVERY
        return True

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int) -> None:
        self.done += n
        if self._pass_marks():
            seconds = time.perf_counter() - self.start
            postfix = f", {self.postfix}" if self.postfix else ""
            print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f} %, "
                  f"{seconds:.1f} s{postfix})", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class _Off:
    total = 0

    def update(self, n: int) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, unit: str, desc: str, enabled: bool = True, stream=None, initial: int = 0):
    """A bar, plain lines or nothing (see the module); ``initial``: units already done (resumed work)."""
    stream = stream or sys.stderr
    if not enabled:
        return _Off()
    if not stream.isatty():
        return _Plain(total, unit, desc, stream, initial)
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=stream, initial=initial, dynamic_ncols=True)
