"""Bounds from what this machine can hold: check the memory an input or option implies before
anything is allocated, so a huge request is a one-line error instead of a MemoryError.

    check_memory(nbytes, "--models 100000")   # RandEnsembleError naming the need and the supply
    check_work(render_seconds(n, hw), "--views 2000000")   # and the expected run time
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


# Work, bounded like memory: a request whose estimated run time is beyond MAX_WORK_SECONDS is
# refused before it starts, unless the command is given --allow-long.
MAX_WORK_SECONDS = 24 * 3600
MAX_IMAGE_SIDE = 4096          # largest rendered image side (--hw)
# One pybullet render (fast path, 2x oversampling, one core), measured on the project's 2-core
# machine: 0.038 s at 32x32, 0.11 s at 128x128, 1.18 s at 512x512 -> a + b * hw^2.
RENDER_SECONDS_PER_VIEW = 0.035
RENDER_SECONDS_PER_PIXEL = 4e-6


def render_seconds(num_renders: int, hw: int) -> float:
    """Estimated seconds for `num_renders` pybullet renders of hw x hw on one core."""
    return int(num_renders) * (RENDER_SECONDS_PER_VIEW + RENDER_SECONDS_PER_PIXEL * int(hw) ** 2)


def duration(seconds: float) -> str:
    """Seconds as a short human string: 3.2 h, 12 min, 40 s, 5.1 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size or (unit == "min" and seconds >= size):
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def check_work(seconds: float, what: str, allow_long: bool = False) -> None:
    """Raise RandEnsembleError if `what` is estimated to run beyond MAX_WORK_SECONDS, unless
    `allow_long` (the command's --allow-long)."""
    if seconds > MAX_WORK_SECONDS and not allow_long:
        raise RandEnsembleError(
            f"{what} would take about {duration(seconds)} (over the "
            f"{duration(MAX_WORK_SECONDS)} limit); ask for less, or pass --allow-long")
