"""Embedder params on disk: ONE layout, one writer, one loader (never unpickles).

A params file is a `fileio` tree .npz: leaves '/'-joined (`conv0/kernel`, ...), each with a
leading model axis M, plus a JSON metadata record `{"embedder": EmbedderConfig dict,
"training": how they were trained, or absent for random members}`. Files of the first release
(random ensembles written by `eval --save-params`) stored the embedder config itself as the
record; `load_params` still reads them.
"""
from __future__ import annotations

import os

import jax

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.model.embedder import EmbedderConfig, init_embedder

_MAX_DIM = 1 << 16        # largest side, width or count a stored config may name


def params_writer(params: dict, embedder_config: EmbedderConfig,
                  training: dict | None = None) -> fileio.Writer:
    """A `fileio` writer of member params (leaves (M, ...)) with their config and training record."""
    meta = {"embedder": embedder_config.to_dict()}
    if training is not None:
        meta["training"] = training
    return fileio.tree_writer(params, meta=meta)


def save_params(path, params: dict, embedder_config: EmbedderConfig,
                training: dict | None = None) -> None:
    """Write member params (leaves (M, kh, kw, cin, cout)) and their config as one .npz, atomically.

    Args:
      path: target .npz.
      params: member params with a leading M (`init_ensemble`, a trained ensemble).
      embedder_config: their architecture.
      training: JSON-ready record of how they were trained (recipe, data, final log row), or None.
    """
    fileio.write_outputs({path: params_writer(params, embedder_config, training)})


def check_image_size(input_hw: int, h: int, w: int, what: str) -> None:
    """The one check that params fit the images: a net made for input_hw x input_hw refuses
    h x w images (`what` names them), rather than scoring them wrong or failing every item."""
    if (int(h), int(w)) != (int(input_hw), int(input_hw)):
        raise RandEnsembleError(f"the params were made for {input_hw}x{input_hw} images, but "
                                f"{what} are {h}x{w}")


def load_params(path, embedder_config: EmbedderConfig | None = None
                ) -> tuple[dict, EmbedderConfig]:
    """Load member params from .npz: -> (params with leading M, EmbedderConfig).

    The config stored in the file is used unless `embedder_config` is given; names, shapes
    (with a leading M) and finiteness are checked against it. Reads both layouts (see module).
    """
    path = os.fspath(path)
    _, meta = fileio.read_tree(path)
    if isinstance(meta, dict) and "embedder" in meta:
        unknown = sorted(set(meta) - {"embedder", "training"})
        if unknown:
            raise RandEnsembleError(f"{path}: unknown metadata key(s) {unknown}")
        meta = meta["embedder"]
    if embedder_config is None:
        try:
            embedder_config = EmbedderConfig() if meta is None else EmbedderConfig.from_dict(
                _checked_config(meta))
        except (ValueError, TypeError) as e:
            raise RandEnsembleError(f"{path}: bad stored config: {fileio.first_line(e)}") from None
    like = jax.eval_shape(lambda k: init_embedder(k, embedder_config), jax.random.PRNGKey(0))
    params, _ = fileio.load_tree(path, like, batch_dims=1)
    return params, embedder_config


def _checked_config(meta):
    """A stored embedder config with its value types checked (whole numbers >= 1, dense >= 0,
    lists of widths or strides, names of pools, paddings and norms, a bias flag), so a NaN or
    1e9 never reaches the architecture (EmbedderConfig checks the names themselves)."""
    if not isinstance(meta, dict):
        raise RandEnsembleError("expected a JSON object")
    for key, value in meta.items():
        values = value if key in ("widths", "stride", "block_pools") and isinstance(value, list) \
            else [value]
        if key in ("pool", "padding", "norm", "block_pools"):
            ok = all(isinstance(v, str) for v in values)
        elif key == "bias":
            ok = isinstance(value, bool)
        else:
            low = 0 if key == "dense" else 1
            ok = bool(values) and all(type(v) is int and low <= v <= _MAX_DIM for v in values)
        if not ok:
            raise RandEnsembleError(f"{key}={value!r} is not a valid value")
    return meta
