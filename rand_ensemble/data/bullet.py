"""pybullet, imported with its build-time banner kept off stderr (`from ...bullet import p`).

pybullet's C code prints "pybullet build time: ..." to stderr when it loads; a later one-line
error would then read as two lines. The banner is sent to /dev/null instead.
"""
import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
    """fd 2 -> /dev/null for the block (C-level writes included)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:                       # no stderr at all: nothing to keep clean
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with _stderr_silenced():
    import pybullet as p  # noqa: E402,F401 (re-exported: render.py and scene.py import it from here)
    import pybullet_data  # noqa: E402,F401
