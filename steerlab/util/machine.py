"""What machine a measurement ran on, in a few words (wall times differ several-fold between
a 2-core AVX2 machine and one with AVX-512 and AMX). The one reader of ``/proc/cpuinfo``.

Example:
    >>> describe().split(" CPUs")[0].isdigit()
    True
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` ({} where absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            found.setdefault(key.strip(), value.strip())
    return found


def cpu_name() -> str:
    """The CPU's model name (``Intel(R) Xeon(R) Processor``), else the architecture."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx2``, ``amx_bf16``, ...); empty where unknown."""
    info = _cpuinfo()
    return set((info.get("flags") or info.get("Features") or "").split())


def cpu_features() -> str:
    """The widest matrix instructions this CPU has: ``AMX-BF16``, ``AVX-512``, ``AVX2`` or ''.

    Example:
        >>> cpu_features() in ("AMX-BF16", "AVX-512", "AVX2", "")
        True
    """
    flags = cpu_flags()
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return name
    return ""


def describe() -> str:
    """``"2 CPUs x86_64 AMX-BF16"``: cores, architecture and :func:`cpu_features`."""
    features = cpu_features()
    return f"{os.cpu_count()} CPUs {platform.machine()}" + (f" {features}" if features else "")
