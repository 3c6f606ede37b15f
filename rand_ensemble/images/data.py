"""Test-set and parameter files: loading with validation (never unpickles) and atomic saving."""
import gzip
import os
import zipfile

import numpy as np

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.metrics import EXAMPLE_SIZE

_VALIDATE_CHUNK = 4096     # examples checked at a time, so memmaps stay streamed


def load_test_set(path, mmap=True):
    """Load and validate a test set: .npy / .npy.gz -> (N, 11, H, W, 3) float in [0, 1] or uint8.

    Plain .npy files are memory-mapped (read-only) when `mmap` is true; .npy.gz is decompressed.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RandEnsembleError(f"test set not found: {path}")
    if os.path.isdir(path):
        raise RandEnsembleError(f"test set path is a folder, expected a .npy or .npy.gz file: {path}")
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            raise RandEnsembleError(f"cannot read {path}: not a .npy file (bad header)")
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                array = np.load(f, allow_pickle=False)
        else:
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except RandEnsembleError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower() or "python objects" in str(e).lower():
            raise RandEnsembleError(
                f"{path} holds a pickled object array; only numeric arrays are accepted") from None
        raise RandEnsembleError(f"cannot read {path} as a .npy array: {fileio.first_line(e)}") from None
    except (OSError, EOFError, gzip.BadGzipFile, zipfile.BadZipFile) as e:
        raise RandEnsembleError(f"cannot read {path} as a .npy array: {fileio.first_line(e)}") from None
    validate_test_set(array, path)
    return array


def validate_test_set(array, name="test set"):
    """Check rank, 11 images per example, 3 channels, dtype, finiteness and [0, 1] range."""
    if array.dtype == object:
        raise RandEnsembleError(f"{name} holds Python objects; expected numbers")
    if array.ndim != 5:
        raise RandEnsembleError(
            f"{name} must be shaped (N, 11, H, W, 3), got {array.ndim}-d {tuple(array.shape)}")
    n, k, h, w, c = array.shape
    if n < 1:
        raise RandEnsembleError(f"{name} has no examples")
    if k != EXAMPLE_SIZE:
        raise RandEnsembleError(
            f"{name} must have 11 images per example (anchor, positive, 9 negatives), got {k}")
    if c != 3:
        raise RandEnsembleError(f"{name} images must have 3 channels (RGB), got {c}")
    if array.dtype == np.uint8:
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise RandEnsembleError(f"{name} must be uint8 or float in [0, 1], got dtype {array.dtype}")
    for start in range(0, n, _VALIDATE_CHUNK):
        part = np.asarray(array[start:start + _VALIDATE_CHUNK])
        if not np.all(np.isfinite(part)):
            bad = start + int(np.argwhere(~np.isfinite(part))[0][0])
            raise RandEnsembleError(f"{name} has NaN or infinite values (first in example {bad})")
        lo, hi = float(part.min()), float(part.max())
        if lo < 0.0 or hi > 1.0:
            raise RandEnsembleError(
                f"{name} float values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]; "
                "scale 0..255 data by 1/255 or save it as uint8")


def object_ids_path(test_set_path):
    """The sidecar file with object ids (N, 11) for a rendered test set: X.npy -> X.ids.npy."""
    base = os.fspath(test_set_path)
    for ext in (".npy.gz", ".npy"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base + ".ids.npy"


def save_test_set(path, images, object_ids):
    """Write uint8 images (N, 11, H, W, 3) to `path` and ids (N, 11) beside it, atomically."""
    fileio.save_npy(object_ids_path(path), np.asarray(object_ids, np.int32))
    fileio.save_npy(path, np.asarray(images))


def save_params(path, params: dict, config) -> None:
    """Write ensemble params (leaves (M, kh, kw, cin, cout)) and their config as one .npz.

    The project's checkpoint codec (`fileio.save_tree`): '/'-joined names, the config as JSON.
    """
    fileio.save_tree(path, params, meta=config.to_dict())


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
            config = EmbedderConfig() if meta is None else EmbedderConfig.from_dict(meta)
        except (ValueError, TypeError) as e:
            raise RandEnsembleError(f"{path}: bad stored config: {fileio.first_line(e)}") from None
    like = jax.eval_shape(lambda k: init_embedder(k, config), jax.random.PRNGKey(0))
    params, _ = fileio.load_tree(path, like, batch_dims=1)
    return params, config


