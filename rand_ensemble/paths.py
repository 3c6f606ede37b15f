"""Paths checked before use: inputs must be regular files (a FIFO, device or folder is an error,
never a hang); outputs are planned before any is written, and staged as a unit.

    plan_outputs([json, params])          # every target checked before a command starts
    with staged_outputs([a, b]) as (ta, tb):
        ...                               # write ta, tb; both renamed onto a, b at the end

Targets must be regular files or missing (their folder existing or creatable, writable);
symlinks are refused, not followed, as are folders, FIFOs, sockets and devices. Staged files
get the mode the umask allows (0666 & ~umask), as `open` would give them; on an error or an
interrupt the temps and the folders made for them are removed.
"""
from __future__ import annotations

import contextlib
import glob
import os
import stat
import tempfile
from typing import Iterator, Sequence

from rand_ensemble.errors import RandEnsembleError

# In a run of several processes only the first writes (`model.devices.initialize` sets this):
# the others stage into a folder of their own that is then removed.
_WRITER = True
# A supervising parent (`cli.launch`) names a file here; every temp is listed in it, so that
# the parent can remove those a killed process left behind.
TEMPS_LOG_ENV = "RAND_ENSEMBLE_TEMPS_LOG"


def set_writer(writes: bool) -> None:
    """Does this process write outputs? False in every process of a run but the first."""
    global _WRITER
    _WRITER = bool(writes)


def is_writer() -> bool:
    """True unless this process is one of a run's non-writing processes (`set_writer`)."""
    return _WRITER


def check_input_file(path, what: str = "input file") -> str:
    """A readable regular file (symlinks to one are fine) -> its path; anything else an error."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise RandEnsembleError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as e:
        raise RandEnsembleError(f"cannot open {what} {path!r}: {_reason(e)}") from None
    if stat.S_ISDIR(mode):
        raise RandEnsembleError(f"{what} is a folder, expected a file: {path}")
    if not stat.S_ISREG(mode):
        raise RandEnsembleError(f"{what} is not a regular file (a FIFO, socket or device): {path}")
    if not os.access(path, os.R_OK):
        raise RandEnsembleError(f"{what} is not readable: {path}")
    return path


def _check_parent(folder: str, target: str) -> None:
    """The nearest existing ancestor of `folder` must be a writable folder."""
    probe = folder
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise RandEnsembleError(f"cannot write {target}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RandEnsembleError(f"cannot write {target}: folder {probe} is not writable")


def _abspath(path, what: str) -> str:
    """`path` made absolute; an empty path or one with a NUL byte is an error."""
    text = os.fspath(path)
    if not text or "\0" in text:
        raise RandEnsembleError(f"bad {what} path {text!r}")
    return os.path.abspath(text)


def check_output_path(path, what: str = "output") -> str:
    """Check that `path` can be (re)written as a regular file -> its absolute path.

    A missing file is fine if its folder exists or can be created; an existing target must be a
    writable regular file. Symlinks are refused (replacing one would silently cut the link),
    as are folders, FIFOs, sockets and devices.
    """
    path = _abspath(path, what)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise RandEnsembleError(f"cannot write {what} {path}: {e.strerror}") from None
    if mode is not None:
        kind = ("a symlink" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
                else None if stat.S_ISREG(mode) else "not a regular file")
        if kind:
            raise RandEnsembleError(f"{what} {path} is {kind}; give a regular file's path")
        if not os.access(path, os.W_OK):
            raise RandEnsembleError(f"{what} {path} exists and is not writable")
    _check_parent(os.path.dirname(path), path)
    return path


def check_output_dir(path, what: str = "output folder", inputs: Sequence = ()) -> str:
    """Check that `path` is, or can be made, a writable folder that is not, and does not lie
    inside, one of `inputs` (see `check_not_inputs`) -> its absolute path."""
    path = _abspath(path, what)
    check_not_inputs([path], inputs)
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise RandEnsembleError(f"{what} {path} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise RandEnsembleError(f"{what} {path} is not writable")
    else:
        _check_parent(os.path.dirname(path), path)
    return path


def plan_outputs(paths: Sequence, what: str = "output", inputs: Sequence = ()) -> list[str]:
    """Check every output path of one command before anything runs -> absolute paths.

    Two outputs naming one file are an error, and so is an output that is, or lies inside, one
    of the command's `inputs` (which it would destroy): a file, a folder (everything below it
    is protected) or a glob (every file it matches). Remote inputs (gs://...) are skipped.
    """
    checked = [check_output_path(p, what) for p in paths]
    repeated = sorted({p for p in checked if checked.count(p) > 1})
    if repeated:
        raise RandEnsembleError(f"two outputs name the same file: {', '.join(repeated)}")
    check_not_inputs(checked, inputs)
    return checked


def plan_output_folder(folder, names: Sequence = (), inputs: Sequence = (),
                       caches: Sequence = (), what: str = "--out folder") -> list[str]:
    """Check a folder of outputs before any work, as a command checks its files -> the named
    files' absolute paths.

    The folder must not be, or lie inside, one of `inputs` (`check_output_dir`); each of
    `names` (files in it) passes `plan_outputs` against the inputs; and no input may lie in one
    of `caches`, the subfolders whose files are named only as the work runs.
    """
    root = check_output_dir(folder, what, inputs)
    planned = plan_outputs([os.path.join(root, n) for n in names], what, inputs)
    for sub in caches:
        cache = os.path.join(root, sub)
        for source in (os.fspath(s) for s in inputs if s):
            if "://" not in source and os.path.lexists(source) and _is_or_inside(source, cache):
                raise RandEnsembleError(f"the input {source} lies inside {cache}, where this "
                                        f"run writes its own files; give another {what}")
    return planned


GLOB_CHARS = frozenset("*?[")


def check_not_inputs(targets: Sequence, inputs: Sequence) -> None:
    """Raise if any target (file or folder) is, or lies inside, one of `inputs`.

    An input is a file, a folder or a glob; a glob protects each path it matches (and a path
    that exists is taken literally even if its name holds glob characters).
    """
    for source in (os.fspath(s) for s in inputs if s):
        if "://" in source:
            continue
        matches = ([source] if os.path.lexists(source) or not GLOB_CHARS & set(source)
                   else glob.glob(source, recursive=True))
        for match in matches:
            for target in targets:
                if _is_or_inside(target, match):
                    shown = source if match == source else f"{match} (matched by {source})"
                    raise RandEnsembleError(
                        f"output {target} would overwrite the input {shown}" if
                        _real(target) == _real(match) or _same_file(match, target) else
                        f"output {target} lies inside the input folder {shown}; "
                        "write it somewhere else")


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _is_or_inside(target, source) -> bool:
    """Is `target` the file `source`, or a path below the folder `source`? (links resolved)"""
    if _same_file(source, target):
        return True
    t, s = _real(target), _real(source)
    return t == s or (os.path.isdir(s) and t.startswith(s.rstrip(os.sep) + os.sep))


@contextlib.contextmanager
def staged_outputs(paths: Sequence) -> Iterator[list[str]]:
    """Yield one temp path per target; rename them all onto the targets if the block succeeds.

    Targets are checked first (`plan_outputs`); missing folders are made. On an error or an
    interrupt the temps and the folders made here are removed and nothing reaches a target;
    OSErrors (ENOSPC, EACCES, ...) become one-line RandEnsembleErrors. In a process that does
    not write (`set_writer`), the temps lie in a private folder and never reach the targets.
    """
    targets = plan_outputs(paths)
    if not _WRITER:
        with tempfile.TemporaryDirectory(prefix="rand_ensemble-not-written-") as folder:
            yield [os.path.join(folder, f"{k}.tmp") for k in range(len(targets))]
        return
    made, temps, done = [], [], False
    try:
        for target in targets:
            made += _make_folders(os.path.dirname(target))
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                       dir=os.path.dirname(target))
            os.close(fd)
            temps.append(tmp)
            _log_temp(tmp)
        yield list(temps)
        mode = 0o666 & ~_umask()             # mkstemp made them 0600; give open()'s default
        for tmp, target in zip(temps, targets):
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        done = True
    except OSError as e:
        name = dict(zip(temps, targets)).get(getattr(e, "filename", None), e.filename)
        name = name or (targets[0] if len(targets) == 1 else ", ".join(targets))
        raise RandEnsembleError(f"cannot write {name}: {_reason(e)}") from None
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for folder in ([] if done else reversed(made)):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _log_temp(tmp: str) -> None:
    """List a temp in the supervising parent's log (`TEMPS_LOG_ENV`), if there is one."""
    log = os.environ.get(TEMPS_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(tmp + "\n")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_folders(folder: str) -> list[str]:
    """Create `folder` and its missing parents -> the folders made, outermost first."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for f in reversed(missing):
        os.mkdir(f)
    return missing[::-1]


def _reason(e: BaseException) -> str:
    """An OSError's strerror, else the first line of the message."""
    return getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
