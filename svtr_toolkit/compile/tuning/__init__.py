"""MetaSchedule tuning for the CPU engine: resumable, time-bounded, one JSON database per CPU class.

The engine's Relax module is lowered as far as the llvm target's pipeline lowers it before
scheduling (legalise + fuse), the fused kernels become tuning tasks, and the best schedule
found for each is kept in a JSON database under ``tuning/<target key>/``. ``build_engine``
applies a database whose target key matches; kernels without a record stay unscheduled.

- ``database``: location, opening, repair and compaction of a database folder;
- ``coverage``: tasks, their FLOPs and keys, how much of a module a database covers;
- ``planning``: trials per kernel; ``builder``: the candidate builder; ``loop``: ``tune``.
"""
from .coverage import coverage, describe_coverage, extract_tasks, task_flops  # noqa: F401
from .database import (DEFAULT_TUNING_ROOT, compact, database_digest, database_dir, drop_unreadable_records,  # noqa: F401
                       open_database, target_key)
from .loop import tune  # noqa: F401
from .planning import trial_plan  # noqa: F401
