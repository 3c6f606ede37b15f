"""Test-set and parameter files: loading with validation (never unpickles) and atomic saving."""
import gzip
import os

import numpy as np

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory
from rand_ensemble.metrics import EXAMPLE_SIZE

_MAX_DIM = 1 << 16        # largest side, width or count a stored config may name
_VALIDATE_BYTES = 1 << 26  # values checked at a time, so memmaps stay streamed


def load_test_set(path, mmap=True):
    """Load and validate a test set: .npy / .npy.gz -> (N, 11, H, W, 3) float in [0, 1] or uint8.

    The header is read and checked first (shape, dtype, size against the file and against
    available memory), so a bad or huge file fails before anything large is read. Plain .npy
    files are memory-mapped (read-only) when `mmap` is true; .npy.gz is decompressed.
    """
    path = fileio.check_input_file(path, "test set")
    gz = path.endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            shape, dtype, order, offset = _read_header(f, path)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if not gz and os.path.getsize(path) != offset + nbytes:
                raise RandEnsembleError(f"{path}: the header declares {tuple(shape)} {dtype}, "
                                        f"but the file holds {os.path.getsize(path) - offset} "
                                        f"bytes of data, not {nbytes}")
            if gz or not mmap:
                check_memory(nbytes, f"test set {path} {tuple(shape)} {dtype}")
                array = _read_data(f, shape, dtype, order, nbytes, path)
        if not gz and mmap:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
    except RandEnsembleError:
        raise
    except (ValueError, OSError, EOFError, MemoryError) as e:
        raise RandEnsembleError(
            f"cannot read {path} as a .npy array: {fileio.first_line(e)}") from None
    validate_test_set(array, path)
    return array


def _read_header(f, path):
    """The .npy header: -> (shape, dtype, order, data offset), checked against the test-set
    contract before any data is read."""
    if f.read(6) != b"\x93NUMPY":
        raise RandEnsembleError(f"cannot read {path}: not a .npy file (bad header)")
    f.seek(0)
    shape, fortran, dtype = fileio.read_npy_header(f, f"cannot read {path}")
    if dtype.hasobject:
        raise RandEnsembleError(
            f"{path} holds a pickled object array; only numeric arrays are accepted")
    _check_layout(shape, dtype, path)
    return shape, dtype, "F" if fortran else "C", f.tell()


def _read_data(f, shape, dtype, order, nbytes, path):
    """The array data after the header, read into one buffer of exactly nbytes."""
    raw = np.empty(nbytes, np.uint8)
    if f.readinto(memoryview(raw)) != nbytes:
        raise RandEnsembleError(f"{path} is truncated: the header declares {tuple(shape)} {dtype}")
    if f.read(1):                              # reading to the end also checks a .gz's CRC
        raise RandEnsembleError(f"{path} has data after the {tuple(shape)} array it declares")
    return raw.view(dtype).reshape(shape, order=order)


def validate_test_set(array, name="test set"):
    """Check rank, 11 images per example, 3 channels, dtype, finiteness and [0, 1] range."""
    if array.dtype == object:
        raise RandEnsembleError(f"{name} holds Python objects; expected numbers")
    _check_layout(array.shape, array.dtype, name)
    n = array.shape[0]
    if array.dtype == np.uint8:
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise RandEnsembleError(f"{name} must be uint8 or float in [0, 1], got dtype {array.dtype}")
    step = max(1, _VALIDATE_BYTES // max(1, array[:1].size))
    for start in range(0, n, step):
        part = np.asarray(array[start:start + step])
        if not np.all(np.isfinite(part)):
            bad = start + int(np.argwhere(~np.isfinite(part))[0][0])
            raise RandEnsembleError(f"{name} has NaN or infinite values (first in example {bad})")
        lo, hi = float(part.min()), float(part.max())
        if lo < 0.0 or hi > 1.0:
            raise RandEnsembleError(
                f"{name} float values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]; "
                "scale 0..255 data by 1/255 or save it as uint8")


def _check_layout(shape, dtype, name):
    """(N, 11, H, W, 3) with N, H, W >= 1, uint8 or float: checked from a header or an array."""
    if len(shape) != 5:
        raise RandEnsembleError(
            f"{name} must be shaped (N, 11, H, W, 3), got {len(shape)}-d {tuple(shape)}")
    n, k, h, w, c = shape
    if n < 1:
        raise RandEnsembleError(f"{name} has no examples")
    if k != EXAMPLE_SIZE:
        raise RandEnsembleError(
            f"{name} must have 11 images per example (anchor, positive, 9 negatives), got {k}")
    if c != 3:
        raise RandEnsembleError(f"{name} images must have 3 channels (RGB), got {c}")
    if h < 1 or w < 1:
        raise RandEnsembleError(f"{name} images are {h}x{w}; they need at least one pixel")
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise RandEnsembleError(f"{name} must be uint8 or float in [0, 1], got dtype {dtype}")


def object_ids_path(test_set_path):
    """The sidecar file with object ids (N, 11) for a rendered test set: X.npy -> X.ids.npy."""
    base = os.fspath(test_set_path)
    for ext in (".npy.gz", ".npy"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base + ".ids.npy"


def save_test_set(path, images, object_ids):
    """Write uint8 images (N, 11, H, W, 3) to `path` and ids (N, 11) beside it, as one unit."""
    fileio.write_outputs({path: fileio.npy_writer(images),
                          object_ids_path(path): fileio.npy_writer(
                              np.asarray(object_ids, np.int32))})


def params_writer(params: dict, config):
    """A `fileio` writer of ensemble params and their config (see save_params)."""
    return fileio.tree_writer(params, meta=config.to_dict())


def save_params(path, params: dict, config) -> None:
    """Write ensemble params (leaves (M, kh, kw, cin, cout)) and their config as one .npz.

    The project's checkpoint codec (`fileio.save_tree`): '/'-joined names, the config as JSON.
    """
    fileio.write_outputs({path: params_writer(params, config)})


def load_params(path, config=None) -> tuple[dict, object]:
    """Load ensemble params from .npz (no pickles): -> (params with leading M, EmbedderConfig).

    Reads both `save_params` files (random ensembles) and trained checkpoints (metadata
    {"embedder": config, "training": ...}). The config stored in the file is used unless
    `config` is given; names, shapes (with a leading M) and finiteness are checked against it.
    """
    import jax                                          # keep data.py importable without jax

    from rand_ensemble.embedder import EmbedderConfig, init_embedder

    path = os.fspath(path)
    _, meta = fileio.read_tree(path)
    if meta is not None and "embedder" in meta:   # a trained checkpoint: {"embedder", "training"}
        meta = meta["embedder"]
    if config is None:
        try:
            config = EmbedderConfig() if meta is None else EmbedderConfig.from_dict(
                _checked_config(meta))
        except (ValueError, TypeError) as e:
            raise RandEnsembleError(f"{path}: bad stored config: {fileio.first_line(e)}") from None
    like = jax.eval_shape(lambda k: init_embedder(k, config), jax.random.PRNGKey(0))
    params, _ = fileio.load_tree(path, like, batch_dims=1)
    return params, config


def _checked_config(meta):
    """A stored embedder config with its value types checked (whole numbers >= 1, a list of
    widths, a pool name, a bias flag), so a NaN or 1e9 never reaches the architecture."""
    if not isinstance(meta, dict):
        raise RandEnsembleError("expected a JSON object")
    for key, value in meta.items():
        values = value if key == "widths" and isinstance(value, list) else [value]
        if key == "pool":
            ok = isinstance(value, str)
        elif key == "bias":
            ok = isinstance(value, bool)
        else:
            ok = bool(values) and all(type(v) is int and 1 <= v <= _MAX_DIM for v in values)
        if not ok:
            raise RandEnsembleError(f"{key}={value!r} is not a valid value")
    return meta
