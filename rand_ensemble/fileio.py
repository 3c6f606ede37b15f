"""Atomic file writes and the project's one checkpoint codec (named pytree <-> .npz).

Every file the project writes goes through `atomic_path`: a temp file in the target's folder,
then `os.replace`, so a crash never leaves a half-written file at the target. Pytrees of
arrays are stored with '/'-joined names (`{"conv0": {"kernel": a}}` -> `conv0/kernel`) and an
optional JSON metadata record; loading never unpickles and checks names and shapes against a
template (as Equinox's `tree_deserialise_leaves(path, like)` does).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from rand_ensemble.errors import RandEnsembleError

META_KEY = "meta/config_json"   # the JSON metadata record inside a tree .npz (uint8 bytes)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npy(path, array) -> None:
    """Write one array as .npy atomically (never pickled)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)


def save_npz(path, arrays: Mapping[str, Any]) -> None:
    """Write a dict of arrays as an uncompressed .npz atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def save_json(path, obj) -> None:
    """Write JSON atomically, indented, with a trailing newline."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")


def save_text(path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def flatten_tree(tree: Mapping, leaf: Callable = np.asarray, prefix: str = "") -> dict:
    """Named dict tree -> {"tower/lstm/kernel": leaf(array), ...}, in the tree's order."""
    flat = {}
    for name, value in tree.items():
        if "/" in name:
            raise RandEnsembleError(f"parameter name {name!r} may not contain '/'")
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, leaf, key + "/"))
        else:
            flat[key] = leaf(value)
    return flat


def unflatten_tree(flat: Mapping[str, Any]) -> dict:
    """{"a/b/c": array} -> {"a": {"b": {"c": array}}}."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, name = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = value
    return tree


def save_tree(path, tree: Mapping, meta: Mapping | None = None) -> None:
    """Write a named pytree of arrays as .npz ('/'-joined names), with optional JSON `meta`.

    Args:
      path: target file; written atomically.
      tree: nested dicts whose leaves are arrays (jax or numpy); names may not contain '/'.
      meta: JSON-ready dict stored beside the arrays (e.g. the architecture config).
    """
    arrays = flatten_tree(tree)
    if meta is not None:
        arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    save_npz(path, arrays)


def read_tree(path) -> tuple[dict, dict | None]:
    """Read a tree .npz without pickle: -> (flat {name: array}, meta dict or None)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RandEnsembleError(f"params file not found: {path}")
    if not os.path.isfile(path):
        raise RandEnsembleError(f"params path is not a regular file: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise RandEnsembleError(f"{path} is not an .npz archive")
            flat = {k: f[k] for k in f.files}
    except RandEnsembleError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError, MemoryError) as e:
        raise RandEnsembleError(f"cannot read params from {path}: {first_line(e)}") from None
    raw = flat.pop(META_KEY, None)
    meta = None
    if raw is not None:
        try:
            meta = json.loads(raw.tobytes().decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise RandEnsembleError(f"{path}: bad stored metadata: {first_line(e)}") from None
        if not isinstance(meta, dict):
            raise RandEnsembleError(f"{path}: stored metadata is not a JSON object")
    return flat, meta


def load_tree(path, like: Mapping, batch_dims: int = 0) -> tuple[dict, dict | None]:
    """Load a tree .npz against a template; names, shapes and finiteness are checked.

    Args:
      path: a file written by `save_tree`.
      like: the expected tree (arrays or `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape`).
      batch_dims: leading axes the stored leaves carry beyond `like`'s shapes (1 for a model
        axis M); they must be >= 1 and equal across leaves.
    Returns:
      (tree of float32/int numpy arrays shaped as stored, meta dict or None).
    """
    flat, meta = read_tree(path)
    want = flatten_tree(like, leaf=lambda v: tuple(v.shape))
    if set(flat) != set(want):
        missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
        raise RandEnsembleError(f"{path}: parameter names do not match the architecture "
                                f"(missing {missing or 'none'}, unexpected {extra or 'none'})")
    lead = None
    for name, shape in want.items():
        value = flat[name]
        if value.ndim != len(shape) + batch_dims or tuple(value.shape[batch_dims:]) != shape:
            expected = "(M,) + " * batch_dims + str(shape)
            raise RandEnsembleError(
                f"{path}: {name} has shape {tuple(value.shape)}, expected {expected}")
        if lead is None:
            lead = value.shape[:batch_dims]
        if value.shape[:batch_dims] != lead or (batch_dims and min(lead) < 1):
            raise RandEnsembleError(f"{path}: {name} has leading shape {value.shape[:batch_dims]},"
                                    f" other leaves have {lead}")
        if value.dtype.kind not in "fiu":
            raise RandEnsembleError(f"{path}: {name} has dtype {value.dtype}, expected numbers")
        if value.dtype.kind == "f":
            if not np.all(np.isfinite(value)):
                raise RandEnsembleError(f"{path}: {name} has NaN or infinite values")
            flat[name] = value.astype(np.float32)
    return unflatten_tree({k: flat[k] for k in want}), meta


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type name)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
