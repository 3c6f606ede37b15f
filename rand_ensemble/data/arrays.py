"""Array sources: IDX (the MNIST family, gzipped or not), NumPy .npy (images) and .npz.

Images are (N, H, W) grey or (N, H, W, C) arrays, converted to uint8 by data/decode.py's dtype
rule; ids are the row numbers '0'..'N-1' unless an .npz holds an ids array. Sizes are checked
against available memory from the headers, before any array is read.

IDX: a big-endian header (0, 0, type code, ndim), ndim uint32 sizes, then the raw array; a
gzip stream is recognised by its magic bytes, whatever the name. A folder holds splits as
`PREFIX-images-idx3-ubyte[.gz]` with `PREFIX-labels-idx1-ubyte[.gz]` ('.idx3' also accepted);
prefix t10k is the split 'test'. Given one images file, its labels file is the same name with
images-idx3 -> labels-idx1, gzipped or not, if it exists (or `?labels=FILE`).
"""
from __future__ import annotations

import gzip
import os
import re
import struct
import zipfile
import zlib

import numpy as np

from rand_ensemble.data import decode
from rand_ensemble.data.dataset import Raw
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.fileio import first_line, read_npy_header
from rand_ensemble.limits import check_memory
from rand_ensemble.paths import check_input_file

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_IMAGES = re.compile(r"(.+)-images[-.]idx[34]-ubyte(\.gz)?\Z")
SPLIT_NAMES = {"t10k": "test"}


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzipped or not) -> its array, native byte order; damage is a one-line error."""
    path = check_input_file(path, "IDX file")
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            return _read_idx_stream(f, path)
    except (OSError, EOFError, zlib.error) as e:
        raise RandEnsembleError(f"cannot read IDX file {path}: {first_line(e)}") from None


def _read_idx_stream(f, path: str) -> np.ndarray:
    head = f.read(4)
    if len(head) != 4 or head[:2] != b"\0\0" or head[2] not in IDX_TYPES or not 1 <= head[3] <= 4:
        raise RandEnsembleError(f"{path} is not an IDX file (bad header {head.hex() or 'empty'})")
    ndim, dtype = head[3], np.dtype(IDX_TYPES[head[2]])
    sizes = f.read(4 * ndim)
    if len(sizes) != 4 * ndim:
        raise RandEnsembleError(f"IDX file {path} is truncated in its header")
    dims = struct.unpack(f">{ndim}I", sizes)
    nbytes = int(np.prod(dims, dtype=object)) * dtype.itemsize
    check_memory(nbytes, f"IDX file {path} ({'x'.join(map(str, dims))})")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise RandEnsembleError(f"IDX file {path} is truncated: {len(data)} of {nbytes} bytes")
    if f.read(1):
        raise RandEnsembleError(f"IDX file {path} has data after its {nbytes} bytes")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def idx_files(path: str, split: str | None, labels: str | None) -> tuple[str, str | None, str]:
    """(images file, labels file or None, split name) for an idx spec."""
    if not os.path.isdir(path):
        if labels is None:
            guess = re.sub(r"images([-.])idx[34]-ubyte(\.gz)?\Z", r"labels\1idx1-ubyte", path)
            labels = next((g for g in (guess, guess + ".gz") if g != path and
                           os.path.exists(g)), None)
        return path, None if labels == "none" else labels, split
    found = {}
    for name in sorted(os.listdir(path)):
        m = _IDX_IMAGES.match(name)
        if m:
            found.setdefault(SPLIT_NAMES.get(m.group(1), m.group(1)), name)
    if not found:
        raise RandEnsembleError(f"no *-images-idx3-ubyte files in {path}")
    if split is None and len(found) > 1:
        raise RandEnsembleError(f"{path} holds the splits {', '.join(sorted(found))}; add one "
                                f"as {path}:SPLIT")
    split = split if split is not None else next(iter(found))
    if split not in found:
        raise RandEnsembleError(f"{path} has no split {split!r} (it has "
                                f"{', '.join(sorted(found))})")
    images = os.path.join(path, found[split])
    return idx_files(images, None, labels)[0:2] + (split,)


def load_idx(path: str, split: str | None, labels: str | None) -> tuple[Raw, str | None]:
    """idx: a folder (with a split) or one images file -> (Raw, split)."""
    images_path, labels_path, split = idx_files(path, split, labels)
    images = image_array(read_idx(images_path), images_path)
    values = None
    if labels_path is not None:
        values = read_idx(labels_path)
        _check_rows(values, len(images), labels_path, "labels")
        values = values.tolist()
    return _positional(images, values, images_path), split


def image_array(array: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) pixels -> uint8 (N, H, W, 1 or 3) (decode's dtype rule)."""
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[3] not in (1, 2, 3, 4) or 0 in array.shape[1:]:
        raise RandEnsembleError(f"{where}: images must be (N, H, W) or (N, H, W, C) with C in "
                                f"1..4, got shape {array.shape}")
    return decode.from_array(array, where)


def _check_rows(values: np.ndarray, n: int, where: str, what: str) -> None:
    if values.ndim != 1 or len(values) != n:
        raise RandEnsembleError(f"{where}: {what} must be ({n},) to match the images, got "
                                f"{values.shape}")


def _positional(images: np.ndarray, labels, where: str, ids=None) -> Raw:
    """Raw from whole arrays; ids default to row numbers."""
    ids = list(range(len(images))) if ids is None else ids
    return Raw([{"file": where, "row": i} for i in range(len(images))], ids, images, labels)


def read_npy(opener, where: str) -> np.ndarray:
    """One .npy stream (opener() -> binary file), header and memory checked, never unpickled."""
    try:
        with opener() as f:
            shape, _, dtype = read_npy_header(f, where)
        check_memory(int(np.prod(shape, dtype=object)) * dtype.itemsize, where)
        with opener() as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except RandEnsembleError:
        raise
    except Exception as e:           # numpy and zipfile raise many types for damaged data
        raise RandEnsembleError(f"cannot read {where}: {first_line(e)}") from None


def load_npy(path: str) -> Raw:
    """npy: one (N, H, W[, C]) images array; ids = row numbers."""
    path = check_input_file(path, "data file")
    return _positional(image_array(read_npy(lambda: open(path, "rb"), path), path), None, path)


def _npz_key(names: set, given: str | None, defaults: list, split, where: str):
    """The member to read for `what`: given, else the first default present (None if none)."""
    if given == "none":
        return None
    if given is not None:
        if given not in names:
            raise RandEnsembleError(f"{where} has no array {given!r} (it has "
                                    f"{', '.join(sorted(names))})")
        return given
    candidates = [f"{d}_{split}" for d in defaults] if split else defaults
    return next((c for c in candidates if c in names), None)


def load_npz(path: str, split: str | None, options: dict) -> Raw:
    """npz: images (+ labels, ids) arrays chosen by key (spec options or the defaults)."""
    path = check_input_file(path, "data file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise RandEnsembleError(f"cannot read {path}: not an .npz archive "
                                f"({first_line(e)})") from None
    with zf:
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        keys = [_npz_key(names, options.get("images"), ["images", "x"], split, path),
                _npz_key(names, options.get("labels"), ["labels", "y"], split, path),
                _npz_key(names, options.get("ids"), ["ids"], split, path)]
        if keys[0] is None:
            raise RandEnsembleError(f"{path} has no images array (tried "
                                    f"{'x_' + split if split else 'images, x'}; it has "
                                    f"{', '.join(sorted(names))}); name it with ?images=KEY")
        arrays = [None if k is None else read_npy(lambda k=k: zf.open(k + ".npy"),
                                                  f"{path}:{k}") for k in keys]
    images = image_array(arrays[0], f"{path}:{keys[0]}")
    for k, a, what in zip(keys[1:], arrays[1:], ("labels", "ids")):
        if a is not None:
            _check_rows(a, len(images), f"{path}:{k}", what)
    return _positional(images, None if arrays[1] is None else arrays[1].tolist(), path,
                       None if arrays[2] is None else arrays[2].tolist())
