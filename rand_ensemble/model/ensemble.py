"""The model axis: M members initialised by vmap over keys, applied in one jitted pass, streamed.

Single-model code (`embedder.py`, `questions/tower.py`, `nn.py`) never mentions M. This module
is the one place that adds it: `init_members` (vmap over keys, used by both towers),
`FORWARDS` (vmap over params; `im2col` is the same maths lowered for XLA:CPU) and `embed`
(the one chunked, padded, streaming embedding path). `LOWERINGS` is the one place the
lowering is chosen per backend (measured in README, "Performance"). Several devices: both
forward lowerings and both step lowerings run on each device's members under `devices.py`.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np
from jax import lax

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.limits import check_memory
from rand_ensemble.model import devices, nn
from rand_ensemble.model.embedder import (
    DEFAULT_CONFIG,
    EmbedderConfig,
    apply_embedder,
    init_embedder,
)


def init_members(init_fn: Callable, key: jax.Array, num_models: int, *static):
    """M independent members of any single-model init: every leaf gains a leading M.

    Args:
      init_fn: `init_fn(key, *static) -> params` for ONE model (a named-dict pytree).
      key: PRNG key; split into M member keys.
      num_models: M >= 1.
      *static: hashable config passed unchanged to every member.
    Returns:
      params whose leaves are shaped (M, ...).
    """
    if isinstance(num_models, bool) or int(num_models) != num_models or num_models < 1:
        raise RandEnsembleError(f"num_models must be an integer >= 1, got {num_models!r}")
    one = jax.eval_shape(lambda k: init_fn(k, *static), key)      # shapes only, no compute
    member_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(one))
    # The stacked params, the vmapped init's temporaries (about as much again) and the keys.
    check_memory(int(num_models) * (3 * member_bytes + 16), f"{num_models} members")
    keys = jax.random.split(key, int(num_models))
    # Not jitted: on XLA:CPU (jaxlib 0.10) one program holding several batched QR custom calls
    # can wedge the intra-op thread pool; eager vmap runs them one at a time and costs ~0.1 s.
    return jax.vmap(init_fn, in_axes=(0,) + (None,) * len(static))(keys, *static)


def init_ensemble(key: jax.Array, num_models: int, config: EmbedderConfig | None = None) -> dict:
    """M independent random image embedders, each orthogonally initialised on its own.

    Args:
      key: PRNG key.
      num_models: M >= 1.
      config: the architecture (default: the blog's 32x32 net).
    Returns:
      params: {"conv0": {"kernel": (M, 3, 3, 3, 32)}, ..., "embedding": {...}}.
    """
    return init_members(init_embedder, key, num_models, config or DEFAULT_CONFIG)


def num_models(params: dict) -> int:
    """M, the leading dimension shared by every leaf."""
    return int(jax.tree_util.tree_leaves(params)[0].shape[0])


def forward_vmap(params, images, config):
    """The plain formulation: vmap of the single-model net over members: (B, H, W, C) -> (M, B, E).

    XLA lowers it to grouped convolutions: the readable reference, and the likely GPU choice.
    """
    return jax.vmap(apply_embedder, in_axes=(0, None, None))(params, images, config)


def forward_im2col(params, images, config):
    """One member at a time, strided and 1x1 layers one 2-D matmul over patches, stride-1 k x k
    layers lax.conv (`nn.conv_forward_cpu`): (B, H, W, C) -> (M, B, E).

    The same maths as forward_vmap; on XLA:CPU small per-member GEMMs keep patches in cache.
    """
    return lax.map(lambda p: apply_embedder(p, images, config, conv=nn.conv_forward_cpu),
                   params)                                        # (M, B, E)


FORWARDS = {"vmap": forward_vmap, "im2col": forward_im2col}

# THE table of lowerings per backend, measured by scripts/bench_forward.py (the forward pass)
# and scripts/bench_train.py (the M-member training step; README, "Performance"); the losing
# lowerings live in those scripts. A backend not listed gets the plain vmap for both.
LOWERINGS = {"cpu": {"forward": "im2col", "step": "map"}}


def lowering(kind: str) -> str:
    """This backend's lowering of `kind` ("forward": im2col | vmap, "step": map | vmap)."""
    return LOWERINGS.get(jax.default_backend(), {}).get(kind, "vmap")


def default_forward() -> str:
    """The forward lowering used when none is named: im2col on CPU, vmap elsewhere."""
    return lowering("forward")


def member_conv(precision: str = "float32"):
    """The conv that single-member code that is differentiated (the training step) should use
    on this backend: im2col's matmuls on CPU, where the gradient of lax.conv is ~30x slower
    (forward-only code goes through `embed`, whose CPU lowering picks per layer).

    precision: a key of `nn.COMPUTE_DTYPES`; "bf16" casts every conv's operands to bfloat16
    (float32 sums, parameters and outputs). The same object is returned for the same
    arguments, so compiled steps cached on the conv are reused.
    """
    if precision not in nn.COMPUTE_DTYPES:
        raise RandEnsembleError(f"precision must be one of {sorted(nn.COMPUTE_DTYPES)}, "
                                f"got {precision!r}")
    conv = nn.conv_im2col if default_forward() == "im2col" else nn.conv
    return _PRECISION_CONVS[(conv, precision)]


# (conv, precision) -> that conv computing in the precision's dtype; built once (see member_conv)
_PRECISION_CONVS = {
    (conv, name): conv if dtype is None else functools.partial(conv, compute_dtype=dtype)
    for conv in (nn.conv, nn.conv_im2col) for name, dtype in nn.COMPUTE_DTYPES.items()}


def over_members(fn: Callable, num_shared: int = 0, how: str | None = None) -> Callable:
    """jit of `fn` (written for ONE member) over M members: every argument but the last
    `num_shared` carries a leading M, and so does every output.

    how "vmap": jit(vmap(fn)), the plain formulation (batched GEMMs; the GPU choice); "map":
    lax.map over members inside the one jit, the same maths one member at a time, faster on
    XLA:CPU where per-member GEMMs stay in cache. Default: `lowering("step")`. On several
    devices each runs that program on its own members (`devices.sharded`); on one, the plain
    jit runs.
    """
    how = how or lowering("step")
    if how not in ("vmap", "map"):
        raise RandEnsembleError(f"lowering must be 'vmap' or 'map', got {how!r}")

    def batched(*args):
        split = len(args) - num_shared
        if how == "vmap":
            return jax.vmap(fn, in_axes=(0,) * split + (None,) * num_shared)(*args)
        shared = args[split:]
        return lax.map(lambda a: fn(*a, *shared), args[:split])

    single, programs = jax.jit(batched), {}

    def run(*args):
        mesh = devices.mesh_for(num_models(args[0]))
        if mesh is None:
            return single(*args)
        key = (mesh, len(args))
        if key not in programs:
            axes = (devices.MEMBERS,) * (len(args) - num_shared) + (None,) * num_shared
            programs[key] = devices.sharded(batched, mesh, axes)
        return programs[key](*args)
    return run


@functools.partial(jax.jit, static_argnums=(2, 3))
def embed_batch(params, images, config=DEFAULT_CONFIG, forward=None):
    """All members in one jitted pass: (B, H, W, C) float32 -> (M, B, E) unit rows."""
    return FORWARDS[forward or default_forward()](params, images, config)


def embed(params: dict, images, config: EmbedderConfig | None = None, batch_size: int = 128,
          forward: str | None = None) -> np.ndarray:
    """Embed with every member: (..., H, W, C) -> np.float32 (M, ..., E), unit rows.

    The project's one chunked-embedding path: it streams over the leading axes in equal chunks
    of at most `batch_size` images (the last padded, so one compiled shape serves all; small
    chunks keep patches in cache), reading each chunk back while the next computes. A numpy
    memmap of any size works with flat memory; input of at most one batch is padded to a full
    batch (one compiled shape for callers that stream batches themselves). Every device in use
    takes a share of the members and of each chunk (`devices.mesh_for`); on several processes,
    every process must make the same call, and every process gets the whole result.

    Args:
      params: member params with a leading M on every leaf (`init_ensemble`).
      images: (..., H, W, C) with C = config.in_channels (3 for the blog net): uint8 (divided
        by 255) or float in [0, 1] (used as is).
      config: the architecture the params belong to (default: the blog's).
      batch_size: images per jitted chunk, >= 1.
      forward: a key of FORWARDS; default `default_forward()` for this backend.
    Returns:
      (M, ..., E) float32 unit rows (zero rows for blank images).
    """
    config = config or DEFAULT_CONFIG
    forward = forward or default_forward()
    if forward not in FORWARDS:
        raise RandEnsembleError(f"forward must be one of {sorted(FORWARDS)}, got {forward!r}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise RandEnsembleError(f"batch_size must be >= 1, got {batch_size}")
    images = _check_images(images, config)
    lead = images.shape[:-3]
    flat = images.reshape((-1,) + images.shape[-3:])            # (N, H, W, C), a view for memmaps
    total = flat.shape[0]
    m = num_models(params)
    out = np.empty((m, total, config.embedding_dim), np.float32)
    num_chunks = max(-(-total // int(batch_size)), 1)
    # Equal chunks; an input of at most one batch is padded to a full batch, so a stream of
    # small calls (the Beam job's batches) compiles one shape only.
    chunk = int(batch_size) if num_chunks == 1 else -(-total // num_chunks)
    run, params_placed, chunk = _chunk_program(params, config, forward, m, chunk)
    pending = None
    for start in range(0, total, chunk):
        part = as_float_images(flat[start:start + chunk])
        n = part.shape[0]
        if n < chunk:
            part = np.concatenate([part, np.zeros((chunk - n,) + part.shape[1:], np.float32)])
        result = run(params_placed, part)                       # (M, chunk, E), dispatched async
        if pending is not None:                                 # read the previous chunk back
            _store(out, *pending)                               # while this one computes
        pending = (result, start, n)
    if pending is not None:
        _store(out, *pending)
    check_embeddings(out, flat, params)
    return out.reshape((m,) + lead + (config.embedding_dim,))


def mirror_mean(rows_fn: Callable, images) -> np.ndarray:
    """Rows averaged over an image and its left-right mirror: `rows_fn` maps images
    (..., H, W, C) to unit rows (..., D) (any leading axes, e.g. (M, N, E)); -> the same shape,
    rows_fn(x) + rows_fn(x mirrored on W) scaled back to unit length (zero rows stay zero).
    What a mirror-averaged model (`checkpoint.Model.mirror`) embeds with."""
    images = np.asarray(images)                     # a memmap stays a view
    total = np.asarray(rows_fn(images), np.float32) + np.asarray(
        rows_fn(images[..., ::-1, :]), np.float32)
    norm = np.linalg.norm(total, axis=-1, keepdims=True)
    return np.where(norm > 0, total / np.maximum(norm, np.float32(1e-30)),
                    np.float32(0)).astype(np.float32)


def _chunk_program(params, config, forward, m, chunk):
    """-> (run(params, (chunk, H, W, C)) -> (M, chunk, E), params placed for it, chunk): the
    jitted single-device pass, or with several devices the sharded one (the chunk rounded up to
    a multiple of the batch parts, the params placed once)."""
    mesh = devices.mesh_for(m, chunk)
    if mesh is None:
        return (lambda p, x: embed_batch(p, x, config, forward)), params, chunk
    chunk = devices.padded_size(chunk, mesh.shape[devices.BATCH])
    placed = devices.put(params, devices.sharding_of(mesh, devices.MEMBERS, m))
    return _sharded_forward(config, forward, mesh), placed, chunk


@functools.lru_cache(maxsize=16)
def _sharded_forward(config, forward, mesh):
    """The forward lowering on every device's members and rows: (M, ...) params, (B, H, W, C)
    -> (M, B, E), members and rows split over `mesh`."""
    return devices.sharded(lambda p, x: FORWARDS[forward](p, x, config), mesh,
                           (devices.MEMBERS, devices.BATCH), (devices.MEMBERS, devices.BATCH))


def check_embeddings(emb, images, params) -> None:
    """Refuse embeddings that say nothing: (M, N, E) with a NaN/inf, or a member whose every
    row is zero although some image is not blank (e.g. finite but huge weights overflow)."""
    finite = np.isfinite(emb).all(axis=(1, 2))                    # (M,)
    zero = ~np.any(emb, axis=(1, 2))                              # (M,)
    bad = np.flatnonzero(~finite | zero)
    if not bad.size or (finite.all() and not _any_image_drawn(images)):
        return
    k = int(bad[0])
    what = "NaN or infinite" if not finite[k] else "zero for every image"
    largest = max(float(np.max(np.abs(np.asarray(leaf[k], np.float64))))
                  for leaf in jax.tree_util.tree_leaves(devices.to_host(params)))
    raise RandEnsembleError(
        f"member {k}'s embeddings are {what} ({len(bad)} of {emb.shape[0]} member(s) so); "
        f"the params are unusable (largest |weight| {largest:.3g}): a corrupt or diverged "
        "checkpoint")


def _any_image_drawn(images) -> bool:
    """Does any image hold a non-zero pixel? (blank images embed to zero rows)"""
    return any(np.any(images[i:i + 4096]) for i in range(0, images.shape[0], 4096))


def _store(out, result, start, n):
    out[:, start:start + n] = devices.to_host(result)[:, :n]


def as_uint8_images(images):
    """uint8 -> unchanged; float in [0, 1] -> round(x * 255) as uint8: (..., H, W, C)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def as_float_images(images):
    """uint8 -> float32 / 255; float -> float32 unchanged: (..., H, W, C)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)


def _check_images(images, config):
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    c = config.in_channels
    if images.ndim < 4 or images.shape[-1] != c:
        raise RandEnsembleError(
            f"images must be shaped (..., H, W, {c}), got {tuple(images.shape)}")
    hw = images.shape[-3:-1]
    if config.pool == "none" and hw != (config.input_hw, config.input_hw):
        raise RandEnsembleError(
            f"images are {hw[0]}x{hw[1]} but the config expects "
            f"{config.input_hw}x{config.input_hw}")
    return images
