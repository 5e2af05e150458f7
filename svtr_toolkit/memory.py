"""How much memory this machine can give a run, and the one error when a run asks for more."""
from __future__ import annotations

from .errors import ToolkitError

GIB = 1 << 30


def _cgroup_room() -> int | None:
    """Bytes the process's cgroup (v2) still allows, when it sets a limit (a container)."""
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as fh:
            return max(0, int(limit) - int(fh.read().strip()))
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Memory a new allocation can get without swapping: the kernel's MemAvailable, or the
    cgroup's room when that is less; None where neither can be read."""
    room = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    room = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    return room


def require_memory(needed: int, what: str, remedy: str = "use a smaller batch") -> None:
    """Refuse, before any work, a run whose buffers cannot fit in the memory available here:
    it would be killed (or swap for ever) part way instead."""
    room = available_bytes()
    if room is not None and needed > room:
        raise ToolkitError(f"{what} needs about {needed / GIB:.1f} GiB of memory and this machine has "
                           f"{room / GIB:.1f} GiB available; {remedy}")
