"""How many trials each kernel deserves."""
from __future__ import annotations

from .coverage import best_seconds, task_flops


def trial_plan(tasks, trials_per_task: int, light_trials: int, heavy_share: float = 0.01, seconds=None) -> list:
    """Trials each task deserves: the full count for kernels with >= ``heavy_share`` of the
    FLOPs or of the measured time, a few for the light ones (elementwise and reductions find
    their schedule fast).

    ``seconds`` (per task, None where not measured yet) are the best times the database
    holds: FLOPs alone miss kernels that are slow for their size (a small strided conv, a
    softmax, an attention matmul with a 32-wide inner dimension).
    """
    weights = [task_flops(t) * t.weight for t in tasks]
    total = sum(weights) or 1.0
    times = [(s or 0.0) * t.weight for s, t in zip(seconds or [None] * len(tasks), tasks)]
    total_time = sum(times) or 1.0
    return [trials_per_task if w / total >= heavy_share or s / total_time >= heavy_share
            else min(light_trials, trials_per_task) for w, s in zip(weights, times)]


def plan(database, keyed, trials_per_task: int, light_trials: int) -> dict:
    """{kernel key: trials wanted} from FLOPs and the database's measured times (redone after each pass)."""
    tasks = [t for t, _ in keyed]
    seconds = [best_seconds(database, t) for t in tasks]
    return {k: n for (_, k), n in zip(keyed, trial_plan(tasks, trials_per_task, light_trials, seconds=seconds))}
