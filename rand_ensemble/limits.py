"""Bounds from what this machine can hold: check the memory an input or option implies before
anything is allocated, so a huge request is a one-line error instead of a MemoryError.

    check_memory(nbytes, "--models 100000")   # RandEnsembleError naming the need and the supply
"""
from __future__ import annotations

import os

from rand_ensemble.errors import RandEnsembleError

# Fraction of the available memory one command may plan to use (the rest is headroom for
# XLA's buffers, Python objects and the other processes on the machine).
USABLE_FRACTION = 0.8
_FALLBACK = 1 << 40        # where the system cannot say: 1 TiB, i.e. only absurd sizes fail


def available_memory() -> int:
    """Bytes of memory available now: MemAvailable from /proc/meminfo, else sysconf, else 1 TiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _FALLBACK


def gib(nbytes: int) -> str:
    """Bytes as a short human string: 3.2 GiB, 512 MiB."""
    if nbytes >= 1 << 30:
        return f"{nbytes / (1 << 30):.3g} GiB"
    return f"{nbytes / (1 << 20):.3g} MiB"


def check_memory(nbytes: int, what: str) -> None:
    """Raise RandEnsembleError if `what` needs more than the usable share of available memory.

    Args:
      nbytes: the bytes `what` implies (a Python int: no overflow for absurd requests).
      what: the request, as the user wrote it (e.g. "--models 100000 on 1,000 examples").
    """
    budget = int(available_memory() * USABLE_FRACTION)
    if int(nbytes) > budget:
        raise RandEnsembleError(f"{what} needs about {gib(int(nbytes))} of memory; "
                                f"this machine has {gib(budget)} to spare")
