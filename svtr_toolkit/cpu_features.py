"""What the host CPU can execute, read from its own flags rather than from LLVM's CPU name.

LLVM names a CPU from its model number, and under a hypervisor that name both hides
features the VM has (one class of VM with AVX-512 fp16 was called ``rocketlake``) and
claims features it lacks. Engines and tuning databases are therefore matched on the ISA
features the kernel reports (``/proc/cpuinfo``), and the LLVM target gets them explicitly.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

# cpuinfo flag -> LLVM feature, for the features that change generated code.
X86_FEATURES = {
    "sse2": "sse2", "pni": "sse3", "ssse3": "ssse3", "sse4_1": "sse4.1", "sse4_2": "sse4.2",
    "popcnt": "popcnt", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
    "bmi1": "bmi", "bmi2": "bmi2", "movbe": "movbe",
    "avx512f": "avx512f", "avx512cd": "avx512cd", "avx512bw": "avx512bw", "avx512dq": "avx512dq",
    "avx512vl": "avx512vl", "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi",
    "avx512_vbmi2": "avx512vbmi2", "avx512_vnni": "avx512vnni", "avx512_bitalg": "avx512bitalg",
    "avx512_vpopcntdq": "avx512vpopcntdq", "avx512_bf16": "avx512bf16", "avx512_fp16": "avx512fp16",
    "avx_vnni": "avxvnni", "amx_tile": "amx-tile", "amx_bf16": "amx-bf16", "amx_int8": "amx-int8",
    "gfni": "gfni", "vaes": "vaes", "vpclmulqdq": "vpclmulqdq",
}
ARM_FEATURES = {
    "asimd": "neon", "fphp": "fullfp16", "asimdhp": "fullfp16", "asimddp": "dotprod",
    "asimdfhm": "fp16fml", "i8mm": "i8mm", "bf16": "bf16", "sve": "sve", "sve2": "sve2",
}


@dataclass(frozen=True)
class CpuFeatures:
    arch: str  # "x86_64", "aarch64", or what the machine calls itself
    features: frozenset  # LLVM feature names the CPU has (from X86_FEATURES / ARM_FEATURES)
    model: str = ""
    cores: int = 1

    @property
    def table(self) -> dict:
        return X86_FEATURES if self.arch == "x86_64" else ARM_FEATURES if self.arch == "aarch64" else {}

    def llvm_mattr(self) -> list:
        """Every feature we know of, on or off: what LLVM's CPU name implies is overridden
        both ways (a VM may lack AVX-512 that its CPU model has)."""
        known = sorted(set(self.table.values()))
        return [("+" if f in self.features else "-") + f for f in known]

    @property
    def has_fp16_arithmetic(self) -> bool:
        return "avx512fp16" in self.features or "fullfp16" in self.features

    @property
    def isa_level(self) -> str:
        """A short name for the widest vector ISA, for folder names and messages."""
        for feature, name in (("avx512fp16", "avx512fp16"), ("avx512f", "avx512"), ("avx2", "avx2"),
                              ("avx", "avx"), ("sve", "sve"), ("neon", "neon")):
            if feature in self.features:
                return name
        return "scalar"

    def describe(self) -> str:
        extras = [f for f in ("fma", "avx512bf16", "avx512fp16", "avxvnni", "amx-tile", "fullfp16", "dotprod", "bf16")
                  if f in self.features]
        return f"{self.arch} {self.isa_level}" + (f" (+{', '.join(extras)})" if extras else "")

    def to_json(self) -> dict:
        return {"arch": self.arch, "features": sorted(self.features), "cores": self.cores, "model": self.model}


def _normalise_arch(machine: str) -> str:
    machine = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}.get(machine, machine)


def parse_cpuinfo(text: str, arch: str | None = None, cores: int | None = None) -> CpuFeatures:
    """Features from a ``/proc/cpuinfo`` text (x86 ``flags`` or ARM ``Features`` lines).

    ``arch`` defaults to what the text implies (a ``flags`` line means x86-64).
    """
    fields = {}
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "processor":
            processors += 1
        fields.setdefault(key, value.strip())
    if arch is None:
        arch = "x86_64" if "flags" in fields else "aarch64" if "features" in fields else _normalise_arch(platform.machine())
    arch = _normalise_arch(arch)
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    table = X86_FEATURES if arch == "x86_64" else ARM_FEATURES if arch == "aarch64" else {}
    features = {llvm for flag, llvm in table.items() if flag in flags}
    model = fields.get("model name") or fields.get("cpu part") or ""
    return CpuFeatures(arch, frozenset(features), model, cores or processors or 1)


def cpuinfo_text() -> str:
    """This machine's ``/proc/cpuinfo`` ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def host() -> CpuFeatures:
    """This machine: its cpuinfo, and the cores this process may run on."""
    return parse_cpuinfo(cpuinfo_text(), _normalise_arch(platform.machine()), usable_cores())
