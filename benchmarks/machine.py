"""What a timing was measured on, and how busy the machine was: the one description of the CPU that the
stage table (scripts/run_tests.py) and the benchmarks print beside their times. Standard library only, so
that it imports anywhere, the GPU machines' image included."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

# Flags worth naming beside a timing: the vector and matrix instructions TensorFlow's kernels may use.
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and flags, from /proc/cpuinfo (as `lscpu` shows them); the platform's name elsewhere."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = re.search(r"flags\s*:\s*(.*)", info)
    name = model.group(1).strip() if model else platform.processor() or platform.machine() or "unknown CPU"
    return name, set(flags.group(1).split()) if flags else set()


def cpu() -> str:
    """The CPU's name, its widest vector instructions (oneDNN's limit where $ONEDNN_MAX_CPU_ISA sets one) and
    the cores this process may use, for every timing printed."""
    name, flags = cpu_info()
    vector = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):  # TensorFlow's kernels then use no more than this
        vector += f"; oneDNN limited to {os.environ['ONEDNN_MAX_CPU_ISA']}"
    usable, total = cores(), os.cpu_count() or 1
    return f"{name} ({vector}), {usable} of {total} cores" if usable < total else f"{name} ({vector}), {total} cores"


def flags() -> str:
    """The CPU's notable flags that it has (NOTABLE_FLAGS), space-separated, for a benchmark's record."""
    have = cpu_info()[1]
    return " ".join(flag for flag in NOTABLE_FLAGS if flag in have) or "none of " + " ".join(NOTABLE_FLAGS)


def cores() -> int:
    """The cores this process may run on (fewer than the machine's under `taskset`)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; /proc/stat), 0 where unknown."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in stat.read_text().split()[1:9])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
