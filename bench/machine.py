"""The CPU a benchmark runs on: its model name and instruction-set flags (from ``/proc/cpuinfo``)."""

from __future__ import annotations

import platform
from pathlib import Path

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # instructions that make bf16 matmuls fast on a CPU


def cpu_info() -> tuple[str, set[str]]:
    """``(model name, flags)``; the platform's processor name and no flags where ``/proc/cpuinfo`` is absent."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return model, flags
