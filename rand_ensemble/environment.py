"""The process's environment, checked before a command starts: the working folder, XLA_FLAGS
and (when JAX first fails) JAX_PLATFORMS, each a one-line error instead of a traceback or an
abort.

    check_environment()            # before any work: RandEnsembleError naming the problem
    backend_error(exc)             # a JAX backend-init RuntimeError -> one line (else None)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from rand_ensemble.errors import RandEnsembleError

# XLA parses XLA_FLAGS when the first backend starts and aborts the process (a fatal log line,
# no exception) on a flag it does not know, so the flags are tried in a child process first:
# about 1.5 s, paid only when XLA_FLAGS is set.
_PROBE = "import jax; jax.devices('cpu')"
PROBE_TIMEOUT_S = 120


def check_environment() -> None:
    """Raise RandEnsembleError if the working folder is gone or XLA_FLAGS would abort XLA."""
    try:
        os.getcwd()
    except OSError:
        raise RandEnsembleError("the working folder no longer exists (it was deleted or moved); "
                                "cd to an existing folder and run the command again") from None
    flags = os.environ.get("XLA_FLAGS", "").strip()
    if flags:
        check_xla_flags(flags)


def check_xla_flags(flags: str) -> None:
    """Start XLA's CPU backend with `flags` in a child process; a failure -> one-line error."""
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return                                # cannot probe: let XLA itself have the last word
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        fatal = [ln for ln in lines if "XLA_FLAGS" in ln or "flag" in ln.lower()]
        detail = _strip_log_prefix((fatal or lines or ["XLA failed to start"])[-1])
        raise RandEnsembleError(f"XLA_FLAGS={flags!r} stops XLA from starting: {detail}")


def backend_error(e: BaseException) -> str | None:
    """A RuntimeError from JAX failing to start a backend (e.g. JAX_PLATFORMS naming one that is
    not installed) -> a one-line message; any other error -> None."""
    text = str(e)
    match = re.search(r"Unable to initialize backend[^\n]*", text)
    if match is None:
        return None
    platforms = os.environ.get("JAX_PLATFORMS")
    where = f" (JAX_PLATFORMS={platforms!r})" if platforms else ""
    return f"JAX could not start{where}: {match.group(0)}"


def _strip_log_prefix(line: str) -> str:
    """'F1202 09:19:29.44 11873 parse_flags_from_env.cc:234] Unknown flag' -> 'Unknown flag'."""
    return re.sub(r"^[FEWI]\d{4} [\d:.]+\s+\d+ [^\]]+\]\s*", "", line.strip())
