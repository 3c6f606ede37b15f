"""Atomic output and the project's one checkpoint codec (named pytree <-> .npz).

Every file the project writes goes through `write_outputs` (or `atomic_path` / `save_*`, its
one-file forms), built on `paths.staged_outputs`: every target is checked first (a regular file
or missing, never a symlink, folder, FIFO or device; its folder exists or can be made;
writable), each file is written to a temp beside its target, and only when all are written are
they renamed onto their targets, with the umask's mode; on an error or interrupt the temps are
removed, so a failed command leaves nothing behind. The `*_writer` functions let a command
collect its outputs first and write them together at the end.

Pytrees of arrays are stored with '/'-joined names (`{"conv0": {"kernel": a}}` -> `conv0/kernel`)
and an optional JSON metadata record; loading never unpickles, checks every member's header
(numeric dtype, size within the archive and memory) before reading it, and checks names and
shapes against a template (as Equinox's `tree_deserialise_leaves(path, like)` does).
"""
from __future__ import annotations

import contextlib
import json
import os
import zipfile
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory
# Re-exported: fileio is the one place callers import file checks and writers from.
from rand_ensemble.paths import (check_input_file, check_output_dir,  # noqa: F401
                                 check_output_path, is_writer, plan_output_folder,
                                 plan_outputs, staged_outputs)

META_KEY = "meta/config_json"   # the JSON metadata record inside a tree .npz (uint8 bytes)
Writer = Callable[[str], None]  # writes one output's bytes to the (temp) path it is given


def write_outputs(outputs: Mapping[Any, Writer]) -> None:
    """Write the files of one command as a unit, all or none: {target: writer(tmp_path)}.

    In a process that does not write (all but the first of a run, `paths.set_writer`) the
    targets are checked and nothing is written."""
    if not is_writer():
        plan_outputs(list(outputs))
        return
    with staged_outputs(list(outputs)) as temps:
        for tmp, writer in zip(temps, outputs.values()):
            writer(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp path beside `path`; it replaces `path` only if the block succeeds."""
    with staged_outputs([path]) as (tmp,):
        yield tmp


def npy_writer(array) -> Writer:
    """A writer of one array as .npy (never pickled)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
    return write


def npz_writer(arrays: Mapping[str, Any]) -> Writer:
    """A writer of a dict of arrays as an uncompressed .npz."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return write


def json_writer(obj) -> Writer:
    """A writer of strict JSON, indented, keys sorted, trailing newline; NaN/inf become null."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return text_writer(text)


def json_safe(obj):
    """NaN and infinities (an undefined AUC, say) become None: JSON has no NaN."""
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def jsonl_writer(rows) -> Writer:
    """A writer of JSON lines, one row each, keys sorted (failure rows, `--failures`)."""
    return text_writer("".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in rows))


def text_writer(text: str) -> Writer:
    """A writer of UTF-8 text."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return write


def tree_writer(tree: Mapping, meta: Mapping | None = None) -> Writer:
    """A writer of a named pytree as .npz (see save_tree)."""
    arrays = flatten_tree(tree)
    if meta is not None:
        arrays[META_KEY] = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), np.uint8)
    return npz_writer(arrays)


def save_npy(path, array) -> None:
    """Write one array as .npy atomically (never pickled)."""
    write_outputs({path: npy_writer(array)})


def save_npz(path, arrays: Mapping[str, Any]) -> None:
    """Write a dict of arrays as an uncompressed .npz atomically."""
    write_outputs({path: npz_writer(arrays)})


def save_json(path, obj) -> None:
    """Write JSON atomically, indented, with a trailing newline."""
    write_outputs({path: json_writer(obj)})


def save_text(path, text: str) -> None:
    """Write a text file atomically."""
    write_outputs({path: text_writer(text)})


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
    write_outputs({path: tree_writer(tree, meta)})


def read_tree(path) -> tuple[dict, dict | None]:
    """Read a tree .npz without pickle: -> (flat {name: array}, meta dict or None).

    Every member must be a numeric .npy whose header agrees with the member's size; the sizes
    are checked against available memory before anything is decompressed.
    """
    path = check_input_file(path, "params file")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            check_memory(sum(i.file_size for i in infos), f"params file {path}")
            flat = {}
            for info in infos:
                name = _member_name(path, info, flat)
                with zf.open(info) as f:
                    flat[name] = _read_member(path, info, f)
    except RandEnsembleError:
        raise
    except zipfile.BadZipFile as e:
        raise RandEnsembleError(f"cannot read params from {path}: not an .npz archive "
                                f"({first_line(e)})") from None
    except (ValueError, OSError, EOFError, KeyError, RuntimeError, NotImplementedError,
            MemoryError) as e:
        raise RandEnsembleError(f"cannot read params from {path}: {first_line(e)}") from None
    return flat, _meta(path, flat.pop(META_KEY, None))


def _member_name(path, info, seen) -> str:
    """A member 'a/b.npy' -> 'a/b'; other files, folders and repeats are errors."""
    name, where = info.filename, f"cannot read params from {path}: member {info.filename!r}"
    if info.is_dir() or not name.endswith(".npy"):
        raise RandEnsembleError(f"{where} is not an .npy array")
    if name[:-4] in seen:
        raise RandEnsembleError(f"{where} appears twice")
    return name[:-4]


def _read_member(path, info, f) -> np.ndarray:
    """One .npy member: header checked (numeric dtype, size = member size), then read."""
    where = f"cannot read params from {path}: member {info.filename!r}"
    shape, fortran, dtype = read_npy_header(f, where)
    if dtype.hasobject or dtype.kind not in "fiu":
        raise RandEnsembleError(f"{where} holds {dtype} values, expected numbers")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if f.tell() + nbytes != info.file_size:
        raise RandEnsembleError(f"{where} declares {nbytes} bytes of data but holds "
                                f"{info.file_size - f.tell()}")
    raw = np.empty(nbytes, np.uint8)
    if f.readinto(memoryview(raw)) != nbytes or f.read(1):    # the read to EOF checks the CRC
        raise RandEnsembleError(f"{where} is truncated")
    return raw.view(dtype).reshape(shape, order="F" if fortran else "C")


def read_npy_header(f, where: str) -> tuple[tuple, bool, np.dtype]:
    """The header of an .npy stream: -> (shape, fortran order, dtype); reads nothing more."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(f)
        if version not in readers:
            raise RandEnsembleError(f"{where} has unsupported .npy version {version}")
        return readers[version](f)
    except RandEnsembleError:
        raise
    except Exception as e:      # numpy parses the header with ast/tokenize: any of their errors
        raise RandEnsembleError(f"{where}: bad .npy header ({first_line(e)})") from None


def _meta(path, raw) -> dict | None:
    """The stored JSON metadata record as a dict, or None."""
    if raw is None:
        return None
    try:
        text = raw.tobytes().decode()
    except UnicodeDecodeError as e:
        raise RandEnsembleError(f"{path}: bad stored metadata: {first_line(e)}") from None
    return strict_json_object(text, f"{path}: bad stored metadata")


def strict_json_object(text: str, where: str) -> dict:
    """Parse a JSON object strictly (NaN and Infinity refused) -> dict; errors name `where`."""
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise RandEnsembleError(f"{where}: {first_line(e)}") from None
    if not isinstance(obj, dict):
        raise RandEnsembleError(f"{where}: expected a JSON object")
    return obj


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def load_tree(path, like: Mapping, batch_dims: int = 0) -> tuple[dict, dict | None]:
    """Load a tree .npz against a template; names, shapes, number kinds and finiteness are
    checked.

    Args:
      path: a file written by `save_tree`.
      like: the expected tree (arrays or `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape`).
      batch_dims: leading axes the stored leaves carry beyond `like`'s shapes (1 for a model
        axis M); they must be >= 1 and equal across leaves.
    Returns:
      (tree of numpy arrays shaped as stored, meta dict or None): float32 where `like` holds
      floats (any stored float width is cast), integers where it holds integers.
    """
    flat, meta = read_tree(path)
    return check_tree(path, flat, like, batch_dims), meta


def check_tree(path, flat: dict, like: Mapping, batch_dims: int = 0) -> dict:
    """Stored leaves {name: array} (`read_tree`) checked against a template, as `load_tree`
    does: names, shapes (after `batch_dims` equal leading axes), number kinds, finiteness ->
    the tree, float leaves as float32. `path` names the file in errors."""
    flat = dict(flat)
    want = flatten_tree(like, leaf=lambda v: tuple(v.shape))
    floats = flatten_tree(like, leaf=lambda v: np.dtype(v.dtype).kind == "f")
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
        if floats[name] != (value.dtype.kind == "f"):     # integer weights would reach jnp ops
            raise RandEnsembleError(f"{path}: {name} holds {value.dtype} values, expected "
                                    f"{'floats' if floats[name] else 'integers'}")
        if value.dtype.kind == "f":
            if not np.all(np.isfinite(value)):
                raise RandEnsembleError(f"{path}: {name} has NaN or infinite values")
            flat[name] = value.astype(np.float32)
    return unflatten_tree({k: flat[k] for k in want})


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type name)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
