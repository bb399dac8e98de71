"""What machine a measurement ran on, in a few words (wall times differ several-fold between
a 2-core AVX2 machine and one with AVX-512 and AMX).

Example:
    >>> describe().split(" CPUs")[0].isdigit()
    True
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_features() -> str:
    """The widest matrix instructions this CPU has: ``AMX-BF16``, ``AVX-512``, ``AVX2`` or ''.

    Example:
        >>> cpu_features() in ("AMX-BF16", "AVX-512", "AVX2", "")
        True
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        flags = set(next(line for line in text.splitlines()
                         if line.startswith(("flags", "Features"))).split(":", 1)[1].split())
    except (OSError, StopIteration, IndexError):
        return ""
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return name
    return ""


def describe() -> str:
    """``"2 CPUs x86_64 AMX-BF16"``: cores, architecture and :func:`cpu_features`."""
    features = cpu_features()
    return f"{os.cpu_count()} CPUs {platform.machine()}" + (f" {features}" if features else "")
