"""Test-set and parameter files: loading with validation (never unpickles) and atomic saving."""
import gzip
import json
import os
import zipfile

import numpy as np

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError

EXAMPLE_SIZE = 11          # anchor, positive, 9 negatives
CONFIG_KEY = "meta/config_json"
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
        raise RandEnsembleError(f"cannot read {path} as a .npy array: {_first_line(e)}") from None
    except (OSError, EOFError, gzip.BadGzipFile, zipfile.BadZipFile) as e:
        raise RandEnsembleError(f"cannot read {path} as a .npy array: {_first_line(e)}") from None
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


def param_names(config):
    """'/'-joined parameter names in layer order, e.g. ['conv0/kernel', ..., 'embedding/kernel']."""
    return [f"{name}/kernel" for name, _, _, _ in config.layers()]


def save_params(path, params, config):
    """Write (M, kh, kw, cin, cout) kernels as .npz with '/'-joined names, plus the config, atomically."""
    arrays = {f"{layer}/{leaf}": np.asarray(value)
              for layer, leaves in params.items() for leaf, value in leaves.items()}
    arrays[CONFIG_KEY] = np.frombuffer(json.dumps(config.to_dict()).encode(), np.uint8)
    fileio.save_npz(path, arrays)


def load_params(path, config=None):
    """Load ensemble params from .npz (no pickles): -> (params, config); names and shapes checked.

    The config stored in the file is used unless `config` is given, which must then match it.
    """
    from rand_ensemble.ensemble import EmbedderConfig   # keep data.py importable without jax

    path = os.fspath(path)
    if not os.path.exists(path):
        raise RandEnsembleError(f"params file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise RandEnsembleError(f"{path} is not an .npz archive")
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise RandEnsembleError(f"cannot read params from {path}: {_first_line(e)}") from None
    stored = arrays.pop(CONFIG_KEY, None)
    if config is None:
        if stored is None:
            config = EmbedderConfig()
        else:
            try:
                config = EmbedderConfig.from_dict(json.loads(stored.tobytes().decode()))
            except (ValueError, TypeError) as e:
                raise RandEnsembleError(f"{path}: bad stored config: {_first_line(e)}") from None
    expected = {f"{name}/kernel": shape for name, shape, _, _ in config.layers()}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise RandEnsembleError(
            f"{path}: parameter names do not match the architecture "
            f"(missing {missing or 'none'}, unexpected {extra or 'none'})")
    num_models = None
    params = {}
    for name, shape in expected.items():
        value = arrays[name]
        if value.ndim != 5 or tuple(value.shape[1:]) != tuple(shape):
            raise RandEnsembleError(
                f"{path}: {name} has shape {tuple(value.shape)}, expected (M,) + {tuple(shape)}")
        if num_models is None:
            num_models = value.shape[0]
        if value.shape[0] != num_models or num_models < 1:
            raise RandEnsembleError(f"{path}: {name} has {value.shape[0]} models, expected {num_models}")
        if not np.all(np.isfinite(value)):
            raise RandEnsembleError(f"{path}: {name} has NaN or infinite values")
        layer, leaf = name.split("/")
        params[layer] = {leaf: value.astype(np.float32)}
    return params, config


def _first_line(e):
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
