"""Devices and processes at the command's edge: the `--devices` flag of every command that
computes, the multi-process flags (`--coordinator HOST:PORT --num-processes N --process-id I`,
or `--distributed` to take them from SLURM, Open MPI or a TPU VM), and the supervisor that
runs a multi-process command in a child so that its end is always one line.

    device_flags(parser, processes=True)   # the flags (defined in cli/types.py)
    configure(args)                       # before the command's first JAX work (types.runner)
    supervise(argv)                       # main(): a multi-process command, in a child

Why a child: when a process of the run dies, JAX's coordination service ends the others
with a fatal log and SIGABRT (the coordinator at once, the others after `--peer-timeout`
seconds without heartbeats) and offers no hook (its callback cannot be called from Python on
jaxlib 0.10). The parent forwards the child's output, drops XLA's and gloo's log lines, turns
such an end into `rand-ensemble: error: ...` (exit 2), and removes any temp file the child
left (`paths.TEMPS_LOG_ENV`), so no partial output is left.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

from rand_ensemble import paths
from rand_ensemble.errors import RandEnsembleError

CHILD_ENV = "RAND_ENSEMBLE_SUPERVISED"
# XLA / TSL log lines ("F1207 15:44:21.25 8199 client.h:80] ..."), their stack traces and
# continuation lines, and gloo's connection notes: never shown to the user.
_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")
_NOISE = re.compile(r"^(\[Gloo\] |\s+@\s+0x|\*\*\* |terminate called|\s+what\(\):)")
_SHOWN = re.compile(r"^(rand-ensemble: |Traceback |\S+\.py:\d+: \w*Warning)")


def distributed(args: argparse.Namespace) -> bool:
    """Is this command one process of a multi-process run?"""
    return bool(getattr(args, "distributed", False) or any(
        getattr(args, name, None) is not None
        for name in ("coordinator", "num_processes", "process_id")))


def configure(args: argparse.Namespace) -> None:
    """Join the run (several processes) and pick the devices, before any JAX work."""
    if not hasattr(args, "devices"):
        return
    from rand_ensemble.model import devices  # JAX: the CLI starts without it (test_structure)
    if distributed(args):
        n, i = args.num_processes, args.process_id
        if n is not None and i is not None and i >= n:
            raise RandEnsembleError(f"--process-id {i} must be below --num-processes {n}")
        devices.initialize(args.coordinator, n, i, args.peer_timeout)
        if not paths.is_writer():            # process 0 prints the report; the others are
            sys.stdout = open(os.devnull, "w")   # quiet but for errors (stderr)
    devices.use_devices(args.devices)


def finish(args: argparse.Namespace) -> None:
    """Leave a multi-process run together (a barrier: every process has finished its work)."""
    if hasattr(args, "devices") and distributed(args):
        from rand_ensemble.model import devices  # JAX: the CLI starts without it
        devices.leave()
        if not paths.is_writer():
            sys.stdout = sys.__stdout__
            print("this process's share is done; process 0 writes the outputs and the report")


def supervised() -> bool:
    """Is this process the child of `supervise`?"""
    return os.environ.get(CHILD_ENV) == "1"


def run_error(e: BaseException) -> str | None:
    """A runtime error of JAX's collectives or coordination in one process of a run (a peer
    that died or cannot be reached) -> one line; any other error -> None."""
    text = str(e)
    if not supervised() or not any(word in text for word in (
            "Gloo", "gloo", "CoordinationService", "DEADLINE_EXCEEDED", "UNAVAILABLE")):
        return None
    first = " ".join(text.strip().splitlines()[0].split())[:200]
    return f"another process of the run stopped or cannot be reached ({first})"


def supervise(argv: list, prog: str) -> int:
    """Run `prog argv` in a child, forwarding its output and signals -> its exit status; a
    child killed by JAX's failure detection (or any signal) -> one line on stderr, status 2."""
    with tempfile.NamedTemporaryFile("w", prefix="rand_ensemble-temps-", suffix=".log",
                                     delete=False) as log:
        temps_log = log.name
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               **{CHILD_ENV: "1", paths.TEMPS_LOG_ENV: temps_log})
    child = subprocess.Popen([sys.executable, "-m", "rand_ensemble.cli", *argv], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             errors="replace", stdin=subprocess.DEVNULL)
    forward = {s: signal.signal(s, lambda signum, frame: child.send_signal(signum))
               for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        out = threading.Thread(target=_forward, args=(child.stdout, sys.stdout, None),
                               daemon=True)
        out.start()
        hidden, told = _forward(child.stderr, sys.stderr, f"{prog}: ")
        status = child.wait()
        out.join()
    finally:
        for s, handler in forward.items():
            signal.signal(s, handler)
        _remove_leftovers(temps_log)
    if status in (0, 1, 2, 130, 143):
        return status
    if not told:                         # the child's own one line was its last word
        print(f"{prog}: error: {_why(hidden, status)}; nothing was written", file=sys.stderr)
    return 2


def _forward(stream, to, ours) -> tuple[list[str], bool]:
    """Copy a stream of the child's to ours, without XLA's, TSL's and gloo's log lines (gloo
    writes to stdout) -> (those lines, whether a line began with `ours`, the CLI's error)."""
    hidden, in_log, told = [], False, False
    for line in stream:
        if _LOG_LINE.match(line):
            in_log = True
        elif _SHOWN.match(line):
            in_log = False
        if in_log or _NOISE.match(line):
            hidden.append(line)
            continue
        told = told or bool(ours) and line.startswith(ours)
        to.write(line)
        to.flush()
    return hidden, told


def _why(hidden: list[str], status: int) -> str:
    """One clause on why a child process ended abnormally."""
    text = "".join(hidden)
    if "stopped sending heartbeats" in text:
        return ("another process of the run stopped (it died, or was silent past "
                "--peer-timeout), so this one was ended")
    if "coordination service" in text or "distributed service" in text:
        return ("the run's coordinator (process 0) or another process went away, so this "
                "one was ended")
    what = f"signal {-status}" if status < 0 else f"status {status}"
    return f"the command's process ended abnormally ({what})"


def _remove_leftovers(temps_log: str) -> None:
    """Remove the temps a killed child left behind (a finished child renamed or removed its
    own, so their names are gone)."""
    with contextlib.suppress(OSError):
        with open(temps_log, encoding="utf-8") as f:
            for tmp in f.read().splitlines():
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    with contextlib.suppress(OSError):
        os.unlink(temps_log)
