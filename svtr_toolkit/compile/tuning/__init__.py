"""MetaSchedule tuning for the CPU engine: resumable, time-bounded, one JSON database per CPU class.

The engine's Relax module is lowered as far as the llvm target's pipeline lowers it before
scheduling (legalise + fuse), the fused kernels become tuning tasks, and the best schedule
found for each is kept in a JSON database under ``tuning/<arch>-<isa>-<cores>c/`` with a
``target.json`` saying what it was tuned on. ``build_engine`` applies the best database
this CPU can use (``selection``); kernels without a record get the default schedule rules.

- ``database``: location, opening, repair and compaction of a database folder;
- ``coverage``: tasks, their FLOPs and keys, how much of a module a database covers;
- ``selection``: which database fits this CPU;
- ``versus_rules``: records kept only where they beat the default rules;
- ``planning``: trials per kernel; ``builder``: the candidate builder; ``loop``: ``tune``.
"""
from .coverage import coverage, describe_coverage, extract_tasks, task_flops  # noqa: F401
from .database import (DEFAULT_TUNING_ROOT, check_named_database, choose_database, compact,  # noqa: F401
                       database_digest, drop_unreadable_records, host_database_dir, open_database,
                       record_tuned_on)
from .loop import tune  # noqa: F401
from .planning import trial_plan  # noqa: F401
from .versus_rules import compare_with_rules, open_for_build, rules_win  # noqa: F401
