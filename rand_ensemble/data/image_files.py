"""Image files: a glob (`images:`) or class folders (`folder:`), decoded by data/decode.py.

Listing: every path a glob matches is an item or a failure row, never skipped: folders that
match, dangling symlinks, FIFOs, sockets and devices (never opened: `stat` says S_ISREG first),
unreadable and undecodable files are failure rows. A glob's literal folder is the longest run of
leading path components that exist as written, so a folder named `img[1]` is taken literally;
the id of a file is its path below that folder. Walking a folder (images:FOLDER, folder:ROOT)
follows symlinks, reports symlink loops and unreadable folders, and leaves out names starting
with '.' (as a glob's '*' does).

Class folders (torchvision's ImageFolder / Keras convention): ROOT/CLASS/**/FILE; the classes
are ROOT's subfolders in sorted order, coded 0..K-1 (`class_names`); files directly in ROOT are
failure rows.
"""
from __future__ import annotations

import glob
import os
import stat

from rand_ensemble.data import decode
from rand_ensemble.data.dataset import Raw
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory

_CHECK_EVERY = 256     # decoded images between checks of the memory they hold


def split_glob(pattern: str) -> tuple[str, str]:
    """A glob -> (literal folder, the glob below it); components that exist as written are
    literal (a folder named 'img[1]'), the rest is the pattern."""
    parts = pattern.split(os.sep)
    for k, part in enumerate(parts):
        if glob.has_magic(part) and not os.path.lexists(os.sep.join(parts[:k + 1])):
            base = os.sep.join(parts[:k]) or (os.sep if pattern.startswith(os.sep) else "")
            return base, os.sep.join(parts[k:])
    return os.path.dirname(pattern), glob.escape(os.path.basename(pattern))


def list_glob(pattern: str) -> tuple[str, list[str]]:
    """(base folder, sorted ids) of everything a recursive glob matches (folders included)."""
    if os.path.isdir(pattern):
        return pattern, None
    base, rest = split_glob(pattern)
    ids = sorted(glob.glob(rest, root_dir=base or None, recursive=True))
    if not ids:
        hint = ("; '[' starts a glob character class, write [[] for a literal '['"
                if "[" in rest else "")
        raise RandEnsembleError(f"no files match {pattern}{hint}")
    return base, ids


def walk(root: str, raw_failures: list) -> list[str]:
    """Sorted file ids (paths below root) of a folder tree; loops and unreadable folders are
    failure rows; names starting with '.' are left out."""
    seen, ids = set(), []

    def error(e):
        raw_failures.append({"input": {"file": e.filename}, "stage": "list",
                             "error": f"cannot list folder: {e.strerror}"})

    for folder, dirs, files in os.walk(root, onerror=error, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            raw_failures.append({"input": {"file": folder}, "stage": "list",
                                 "error": "symlink loop: folder already listed"})
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        ids += [f if rel == "." else os.path.join(rel, f) for f in files if not f.startswith(".")]
    return sorted(ids)


def read_regular(path: str) -> bytes:
    """A regular file's bytes; anything else (checked before opening) raises a reason."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise RandEnsembleError("dangling symlink" if os.path.islink(path)
                                else "file vanished") from None
    except OSError as e:
        raise RandEnsembleError(f"cannot stat: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise RandEnsembleError("a folder, not an image file")
    if not stat.S_ISREG(mode):
        raise RandEnsembleError("not a regular file (a FIFO, socket or device); not opened")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):   # replaced since the stat
            raise RandEnsembleError("not a regular file (a FIFO, socket or device)")
        return f.read()


def decode_files(base: str, ids: list, hw: int | None, raw: Raw) -> None:
    """Read and decode every item into raw.images (None and a failure row where it fails)."""
    if hw is not None:
        check_memory(len(ids) * hw * hw * 3, f"{len(ids):,} images at {hw}x{hw}")
    held = 0
    for i, image_id in enumerate(ids):
        image = None if i in raw.failed else _decode_one(os.path.join(base, image_id), hw, raw, i)
        raw.images.append(image)
        held += 0 if image is None else image.nbytes
        if i % _CHECK_EVERY == 0:
            check_memory(2 * held, f"the images read so far ({i + 1:,} of {len(ids):,})")


def _decode_one(path: str, hw: int | None, raw: Raw, i: int):
    """One file -> uint8 (H, W, C), or None with item i marked failed."""
    try:
        return decode.decode_bytes(read_regular(path), hw)
    except Exception as e:                     # Pillow and the OS raise many types
        raw.fail(i, "decode", e)
        return None


def load_images(path: str, split: str | None, hw: int | None) -> Raw:
    """images: a glob, one file, or a folder's tree (PATH/SPLIT) -> Raw (ids = relative paths)."""
    if split is not None:
        path = os.path.join(path, split)
    failures: list = []
    base, ids = list_glob(path)
    if ids is None:
        ids = walk(base, failures)
    raw = Raw([{"file": os.path.join(base, i), "image_id": i} for i in ids], list(ids), [],
              failures=failures)
    mark_same_files(raw)
    decode_files(base, ids, hw, raw)
    return raw


def mark_same_files(raw: Raw) -> None:
    """An item that is the same file as an earlier one (a symlink, a linked folder a glob
    followed) is a failure row, not a second copy of the image in the pool."""
    first = {}
    for i, item in enumerate(raw.inputs):
        try:
            st = os.stat(item["file"])
        except (OSError, ValueError):
            continue                      # decode_files reports it
        key = (st.st_dev, st.st_ino)
        if key in first and os.path.isfile(item["file"]):
            raw.fail(i, "list", f"the same file as {first[key]!r} (a link)")
        first.setdefault(key, item["image_id"])


def load_folder(path: str, split: str | None, hw: int | None) -> Raw:
    """folder: ROOT/CLASS/**/FILE -> Raw with labels = class codes, class_names = folders."""
    root = os.path.join(path, split) if split is not None else path
    if not os.path.isdir(root):
        raise RandEnsembleError(f"class folder root not found: {root}")
    failures: list = []
    ids = walk(root, failures)
    classes = tuple(sorted({i.split(os.sep)[0] for i in ids if os.sep in i}))
    code = {name: k for k, name in enumerate(classes)}
    raw = Raw([{"file": os.path.join(root, i), "image_id": i} for i in ids], list(ids), [],
              [code.get(i.split(os.sep)[0]) if os.sep in i else None for i in ids], classes,
              failures=failures)
    for k, i in enumerate(ids):
        if os.sep not in i:
            raw.fail(k, "labels", "not inside a class folder (ROOT/CLASS/FILE)")
    mark_same_files(raw)
    decode_files(root, ids, hw, raw)
    return raw
