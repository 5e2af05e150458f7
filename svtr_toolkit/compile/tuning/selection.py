"""Which tuning database a build uses: chosen by what it was tuned on, not by a CPU name.

Each database folder carries ``target.json``: the architecture, the ISA features (LLVM
names, from the tuning machine's own flags), the core count and TVM version it was tuned
with, and the workloads (input shape and precision) that were tuned. A schedule only uses
instructions its target allows, so a database tuned on a CPU whose features are a subset of
this one's is valid here; one that needs a feature this CPU lacks, or comes from another
architecture or TVM release, is never used.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ...paths import shown
from ...cpu_features import CpuFeatures

MANIFEST = "target.json"


@dataclass(frozen=True)
class DatabaseInfo:
    folder: str
    arch: str
    features: frozenset
    cores: int
    tvm_version: str
    workloads: tuple = ()

    @classmethod
    def read(cls, folder: str) -> "DatabaseInfo | None":
        try:
            with open(os.path.join(folder, MANIFEST), encoding="utf-8") as fh:
                raw = json.load(fh)
            return cls(folder, raw["arch"], frozenset(raw["features"]), int(raw["cores"]), str(raw["tvm_version"]),
                       tuple(raw.get("workloads", ())))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def manifest(cpu: CpuFeatures, tvm_version: str, workloads) -> dict:
    return {"arch": cpu.arch, "features": sorted(cpu.features), "cores": cpu.cores, "tvm_version": tvm_version,
            "isa": cpu.isa_level, "workloads": sorted(set(workloads))}


def workload_key(input_name: str, shape, precision: str) -> str:
    return f"{input_name}:{','.join(str(d) for d in shape)} {precision}"


def _release(version: str) -> str:
    return ".".join(version.split(".")[:2])


@dataclass(frozen=True)
class Verdict:
    usable: bool
    exact: bool
    why: str


def judge(info: DatabaseInfo, cpu: CpuFeatures, tvm_version: str) -> Verdict:
    if info.arch != cpu.arch:
        return Verdict(False, False, f"tuned on {info.arch}, this CPU is {cpu.arch}")
    missing = sorted(info.features - cpu.features)
    if missing:
        return Verdict(False, False, f"needs {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}, which this CPU lacks")
    if _release(info.tvm_version) != _release(tvm_version):
        return Verdict(False, False, f"tuned with TVM {info.tvm_version}, this is {tvm_version}")
    if info.features == cpu.features and info.cores == cpu.cores and info.tvm_version == tvm_version:
        return Verdict(True, True, "tuned on this CPU class")
    notes = []
    if info.features != cpu.features:
        notes.append(f"its features are a subset of this CPU's ({len(cpu.features - info.features)} more here)")
    if info.cores != cpu.cores:
        notes.append(f"tuned with {info.cores} cores, {cpu.cores} here")
    if info.tvm_version != tvm_version:
        notes.append(f"TVM {info.tvm_version} vs {tvm_version}")
    return Verdict(True, False, "compatible: " + "; ".join(notes))


@dataclass
class Choice:
    folder: str | None
    why: str
    rejected: list = field(default_factory=list)  # [(folder, reason)]

    def line(self) -> str:
        if self.folder is None:
            head = f"no tuning database: {self.why}"
        else:
            head = f"tuning database {shown(self.folder)}: {self.why}"
        skipped = "; ".join(f"{os.path.basename(f)} not used ({why})" for f, why in self.rejected)
        return head + (f"; {skipped}" if skipped else "")


def choose(root: str, cpu: CpuFeatures, tvm_version: str, workload: str | None = None) -> Choice:
    """The best usable database under ``root``: an exact match first, then the compatible
    one that lists this workload, has this core count and the most features."""
    rejected, usable = [], []
    folders = sorted(os.path.join(root, d) for d in os.listdir(root)) if os.path.isdir(root) else []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        info = DatabaseInfo.read(folder)
        if info is None:
            rejected.append((folder, f"no readable {MANIFEST}"))
            continue
        verdict = judge(info, cpu, tvm_version)
        if not verdict.usable:
            rejected.append((folder, verdict.why))
            continue
        rank = (verdict.exact, workload in info.workloads, info.cores == cpu.cores, len(info.features))
        usable.append((rank, folder, verdict, info))
    if not usable:
        return Choice(None, "none matches this CPU (default schedule rules only)", rejected)
    usable.sort(key=lambda item: item[0], reverse=True)
    _, folder, verdict, info = usable[0]
    why = verdict.why
    if workload and workload not in info.workloads:
        why += f"; {workload} was not tuned there (kernels it lacks use the default rules)"
    return Choice(folder, why, rejected + [(f, "a better match was found") for _, f, _, _ in usable[1:]])
