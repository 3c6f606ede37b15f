"""Embedder params on disk: ONE layout, one writer, one loader (never unpickles).

A params file is a `fileio` tree .npz: leaves '/'-joined (`conv0/kernel`, ...), each with a
leading model axis M, plus a JSON metadata record `{"embedder": EmbedderConfig dict,
"training": how they were trained, or absent for random members}`. Files of the first release
(random ensembles written by `eval --save-params`) stored the embedder config itself as the
record; `load_params` still reads them.

A trained model may keep the training-free signal its members learned from as one more voter
(`rand-ensemble train` with no recipe; README "Learning that generalises"): the record then has
`"signal": {"kind": "raw" | "pca" | "hog", "weight": w}` and the file holds its fitted map as
`signal/mean` (D,), `signal/components` (D, K) and `signal/scale` (K,) (none for raw), no M
axis. `load_model` returns it (`Model.signal`); `load_params` returns the members alone.

A model whose training mirrored images and whose recipe was chosen with the mirror test
(`learn.auto`: mirroring keeps neighbours) is mirror-averaged: the record has `"mirror": true`
and every command embeds an image as the mean of its rows and its left-right mirror's
(members and signal member each, re-normalised: `Model.mirror`, `ensemble.mirror_mean`).
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import jax
import numpy as np

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.model.embedder import EmbedderConfig, init_embedder

_MAX_DIM = 1 << 16        # largest side, width or count a stored config may name


SIGNAL_KINDS = ("raw", "pca", "hog")     # descriptors a model may keep (evaluate.baselines)
SIGNAL_ARRAYS = ("mean", "components", "scale")


class Model(NamedTuple):
    """A params file's contents: member params (leaves (M, ...)), their EmbedderConfig, and the
    signal member ({"kind", "weight", and for pca / hog "mean" (D,), "components" (D, K),
    "scale" (K,) float32}) or None, and whether its rows are mirror-averaged."""
    params: dict
    config: EmbedderConfig
    signal: dict | None = None
    mirror: bool = False


def params_writer(params: dict, embedder_config: EmbedderConfig,
                  training: dict | None = None, signal: dict | None = None,
                  mirror: bool = False) -> fileio.Writer:
    """A `fileio` writer of member params (leaves (M, ...)) with their config, training record,
    optional signal member (`Model.signal`; its arrays are stored as float32) and mirror flag
    (`Model.mirror`; recorded only when set, so other files keep their bytes)."""
    meta = {"embedder": embedder_config.to_dict()}
    if training is not None:
        meta["training"] = training
    if mirror:
        meta["mirror"] = True
    tree = params
    if signal is not None:
        meta["signal"] = _signal_meta(signal)
        arrays = {k: np.asarray(signal[k], np.float32) for k in SIGNAL_ARRAYS if k in signal}
        tree = {**params, "signal": arrays} if arrays else params
    return fileio.tree_writer(tree, meta=meta)


def _signal_meta(signal, arrays: bool = True) -> dict:
    """The signal member's JSON record, its kind and weight checked (and with `arrays`, that
    it holds its PCA map exactly where its kind has one)."""
    kind, weight = signal.get("kind"), signal.get("weight")
    if kind not in SIGNAL_KINDS or isinstance(weight, bool) or not isinstance(
            weight, (int, float)) or not (math.isfinite(weight) and weight > 0):
        raise RandEnsembleError(f"a signal member needs a kind in {SIGNAL_KINDS} and a finite "
                                f"weight > 0, got {kind!r} and {weight!r}")
    if arrays and (kind == "raw") != (not any(k in signal for k in SIGNAL_ARRAYS)):
        raise RandEnsembleError(f"signal member {kind}: {'no' if kind == 'raw' else 'its'} "
                                f"PCA arrays {SIGNAL_ARRAYS} expected")
    return {"kind": kind, "weight": float(weight)}


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
    A signal member, if the file keeps one, is left out (`load_model` returns it).
    """
    model = load_model(path, embedder_config)
    return model.params, model.config


def load_model(path, embedder_config: EmbedderConfig | None = None) -> Model:
    """Load a params file whole: -> Model(params with leading M, EmbedderConfig, signal or
    None, mirror); every array checked (names, shapes, number kinds, finiteness) as
    `load_params`."""
    path = os.fspath(path)
    flat, meta = fileio.read_tree(path)
    signal_meta, mirror = None, False
    if isinstance(meta, dict) and "embedder" in meta:
        unknown = sorted(set(meta) - {"embedder", "training", "signal", "mirror"})
        if unknown:
            raise RandEnsembleError(f"{path}: unknown metadata key(s) {unknown}")
        mirror = meta.get("mirror", False)
        if not isinstance(mirror, bool):
            raise RandEnsembleError(f"{path}: mirror must be true or false, got {mirror!r}")
        meta, signal_meta = meta["embedder"], meta.get("signal")
    if embedder_config is None:
        try:
            embedder_config = EmbedderConfig() if meta is None else EmbedderConfig.from_dict(
                _checked_config(meta))
        except (ValueError, TypeError) as e:
            raise RandEnsembleError(f"{path}: bad stored config: {fileio.first_line(e)}") from None
    stored = {k: flat.pop(k) for k in [k for k in flat if k.startswith("signal/")]}
    like = jax.eval_shape(lambda k: init_embedder(k, embedder_config), jax.random.PRNGKey(0))
    params = fileio.check_tree(path, flat, like, batch_dims=1)
    return Model(params, embedder_config, _load_signal(path, signal_meta, stored), mirror)


def _load_signal(path, meta, stored) -> dict | None:
    """The signal member from its record and arrays (None where the file keeps none)."""
    if meta is None:
        if stored:
            raise RandEnsembleError(f"{path}: signal arrays without a signal record")
        return None
    if not isinstance(meta, dict) or set(meta) != {"kind", "weight"}:
        raise RandEnsembleError(f"{path}: the signal record must be {{kind, weight}}, got "
                                f"{meta!r}")
    try:
        record = _signal_meta(meta, arrays=False)
    except RandEnsembleError as e:
        raise RandEnsembleError(f"{path}: {e}") from None
    if record["kind"] == "raw":
        like = {}
    else:
        scale = stored.get("signal/scale")
        mean = stored.get("signal/mean")
        k = scale.shape[0] if scale is not None and scale.ndim == 1 else 0
        d = mean.shape[0] if mean is not None and mean.ndim == 1 else 0
        if not 1 <= k <= d:
            raise RandEnsembleError(f"{path}: the signal member's arrays do not form a PCA map")
        like = {name: jax.ShapeDtypeStruct(shape, np.float32) for name, shape in
                (("mean", (d,)), ("components", (d, k)), ("scale", (k,)))}
    arrays = fileio.check_tree(path, {k[len("signal/"):]: v for k, v in stored.items()}, like)
    return {**record, **arrays}


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
