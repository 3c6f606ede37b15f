"""The model axis: M random conv embedders initialised by vmap over keys, applied in one jitted pass.

Single-model code (`init_embedder`, `apply_embedder`) never mentions M; `init_ensemble` and the
forward formulations in `FORWARDS` are the only places that add it. `DEFAULT_FORWARD` is the one
place the lowering is chosen (measured in README, "Performance").
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rand_ensemble import nn
from rand_ensemble.errors import RandEnsembleError

POOLS = ("none", "mean")


@dataclasses.dataclass(frozen=True)
class EmbedderConfig:
    """Architecture of one embedder; the default is the blog's 32x32 net."""
    widths: tuple = (32, 64, 128, 256)   # channels of the 3x3 stride-2 VALID convs
    dense: int = 32                      # 1x1 conv + ReLU after the convs
    embedding_dim: int = 32              # E: the 1x1 linear embedding
    input_hw: int = 32                   # H = W of input images
    kernel_size: int = 3
    stride: int = 2
    pool: str = "none"                   # "none": convs must reduce to 1x1; "mean": global mean pool

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths or min(self.widths) < 1:
            raise RandEnsembleError(f"widths must be positive channel counts, got {self.widths}")
        if min(self.dense, self.embedding_dim, self.kernel_size, self.stride) < 1:
            raise RandEnsembleError("dense, embedding_dim, kernel_size and stride must be >= 1")
        if self.pool not in POOLS:
            raise RandEnsembleError(f"pool must be one of {POOLS}, got {self.pool!r}")
        side = self.final_hw
        if side < 1:
            raise RandEnsembleError(
                f"input_hw={self.input_hw} is too small for {len(self.widths)} convs")
        if self.pool == "none" and side != 1:
            raise RandEnsembleError(
                f"input_hw={self.input_hw} leaves {side}x{side} after {len(self.widths)} convs; "
                f"add a conv to widths or use pool='mean'")

    @property
    def final_hw(self):
        """Spatial side after the strided convs."""
        side = self.input_hw
        for _ in self.widths:
            side = (side - self.kernel_size) // self.stride + 1
        return side

    def layers(self):
        """[(name, kernel shape (kh, kw, cin, cout), stride, relu)] in order."""
        k, out, cin = self.kernel_size, [], 3
        for i, width in enumerate(self.widths):
            out.append((f"conv{i}", (k, k, cin, width), self.stride, True))
            cin = width
        out.append(("dense", (1, 1, cin, self.dense), 1, True))
        out.append(("embedding", (1, 1, self.dense, self.embedding_dim), 1, False))
        return out

    def to_dict(self):
        """JSON-ready form (see from_dict)."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d):
        """Inverse of to_dict; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise RandEnsembleError(f"unknown embedder config keys: {sorted(unknown)}")
        return cls(**d)


DEFAULT_CONFIG = EmbedderConfig()


def init_embedder(key, config=DEFAULT_CONFIG):
    """One model's params: {"conv0": {"kernel": (3, 3, 3, 32)}, ..., "embedding": {...}}."""
    layers = config.layers()
    keys = jax.random.split(key, len(layers))
    return {name: nn.init_conv(k, *shape) for k, (name, shape, _, _) in zip(keys, layers)}


def apply_embedder(params, images, config=DEFAULT_CONFIG, conv=nn.conv):
    """One model: (B, H, W, 3) float in [0, 1] -> (B, E) unit rows (zero rows for blank input).

    `conv` picks the lowering of every layer (nn.conv or nn.conv_im2col); the maths is the same.
    """
    x = images
    for name, _, stride, relu in config.layers():
        x = conv(params[name], x, stride=stride)                  # (B, H', W', C)
        if relu:
            x = jax.nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))                                 # (B, E); identity at 1x1
    return nn.l2_normalize(x, axis=-1)


def init_ensemble(key, num_models, config=None):
    """M independent members: every leaf gains a leading model axis, e.g. (M, 3, 3, 3, 32)."""
    config = config or DEFAULT_CONFIG
    if int(num_models) < 1:
        raise RandEnsembleError(f"num_models must be >= 1, got {num_models}")
    keys = jax.random.split(key, int(num_models))
    # Not jitted: on XLA:CPU (jaxlib 0.10) one program holding several batched QR custom calls
    # can wedge the intra-op thread pool; eager vmap runs them one at a time and costs ~0.1 s.
    return jax.vmap(init_embedder, in_axes=(0, None))(keys, config)


def forward_vmap(params, images, config):
    """The plain formulation: vmap of the single-model net over members (XLA: grouped convs)."""
    return jax.vmap(apply_embedder, in_axes=(0, None, None))(params, images, config)  # (M, B, E)


def forward_lax_map(params, images, config):
    """One member at a time with lax.map over plain convs: (B, H, W, 3) -> (M, B, E)."""
    return lax.map(lambda p: apply_embedder(p, images, config), params)  # (M, B, E)


def forward_im2col(params, images, config):
    """One member at a time, every layer one 2-D matmul over patches: (B, H, W, 3) -> (M, B, E)."""
    return lax.map(lambda p: apply_embedder(p, images, config, conv=nn.conv_im2col),
                   params)                                        # (M, B, E)


def forward_im2col_batched(params, images, config):
    """Every layer one matmul with the model axis as its batch dimension: -> (M, B, E).

    The first layer's input is shared, so its M kernels apply to one set of patches; measured
    slower than forward_im2col on XLA:CPU (the (M, B*P, K) patch tensors fall out of cache).
    """
    x = None
    for name, (kh, _, cin, cout), stride, relu in config.layers():
        kernel = params[name]["kernel"].reshape(-1, kh * kh * cin, cout)  # (M, K, C), HWIO order
        if x is None:
            patches = nn.im2col(images, kh, stride)               # (B, H', W', K), shared
            x = jnp.einsum("bhwk,mkc->mbhwc", patches, kernel)    # (M, B, H', W', C)
        else:
            patches = nn.im2col(x, kh, stride)                    # (M, B, H', W', K)
            x = jnp.einsum("mbhwk,mkc->mbhwc", patches, kernel)   # (M, B, H', W', C)
        if relu:
            x = jax.nn.relu(x)
    x = jnp.mean(x, axis=(2, 3))                                  # (M, B, E); identity at 1x1
    return nn.l2_normalize(x, axis=-1)


# The lowering choice, made here only. Measured by scripts/bench_forward.py (README, "Performance").
FORWARDS = {"vmap": forward_vmap, "lax_map": forward_lax_map, "im2col": forward_im2col,
            "im2col_batched": forward_im2col_batched}
DEFAULT_FORWARD = "im2col"


@functools.partial(jax.jit, static_argnums=(2, 3))
def embed_batch(params, images, config=DEFAULT_CONFIG, forward=DEFAULT_FORWARD):
    """All members in one jitted pass: (B, H, W, 3) float32 -> (M, B, E)."""
    return FORWARDS[forward](params, images, config)


def num_models(params):
    """M, the leading dimension shared by every leaf."""
    return int(jax.tree_util.tree_leaves(params)[0].shape[0])


def embed(params, images, config=None, batch_size=128, forward=DEFAULT_FORWARD):
    """Embed with every member: (..., H, W, 3) -> np.float32 (M, ..., E), unit rows.

    Streams over the leading axes in chunks of at most `batch_size` images (small chunks keep
    the patches in cache), so a numpy memmap of any size works with flat memory; uint8 input is
    divided by 255, float input is used as is.
    """
    config = config or DEFAULT_CONFIG
    if forward not in FORWARDS:
        raise RandEnsembleError(f"forward must be one of {sorted(FORWARDS)}, got {forward!r}")
    if int(batch_size) < 1:
        raise RandEnsembleError(f"batch_size must be >= 1, got {batch_size}")
    images = _check_images(images, config)
    lead = images.shape[:-3]
    flat = images.reshape((-1,) + images.shape[-3:])            # (N, H, W, 3), a view for memmaps
    total = flat.shape[0]
    m = num_models(params)
    out = np.empty((m, total, config.embedding_dim), np.float32)
    # Equal chunks (the last one padded): one compiled shape serves all and padding stays small.
    num_chunks = max(-(-total // int(batch_size)), 1)
    chunk = max(-(-total // num_chunks), 1)
    pending = None
    for start in range(0, total, chunk):
        part = as_float_images(flat[start:start + chunk])
        n = part.shape[0]
        if n < chunk:
            part = np.concatenate([part, np.zeros((chunk - n,) + part.shape[1:], np.float32)])
        result = embed_batch(params, part, config, forward)     # (M, chunk, E), dispatched async
        if pending is not None:                                 # read the previous chunk back
            _store(out, *pending)                               # while this one computes
        pending = (result, start, n)
    if pending is not None:
        _store(out, *pending)
    return out.reshape((m,) + lead + (config.embedding_dim,))


def _store(out, result, start, n):
    out[:, start:start + n] = np.asarray(result)[:, :n]


def as_float_images(images):
    """uint8 -> float32 / 255; float -> float32 unchanged: (..., H, W, 3)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)


def _check_images(images, config):
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    if images.ndim < 4 or images.shape[-1] != 3:
        raise RandEnsembleError(
            f"images must be shaped (..., H, W, 3), got {tuple(images.shape)}")
    hw = images.shape[-3:-1]
    if config.pool == "none" and hw != (config.input_hw, config.input_hw):
        raise RandEnsembleError(
            f"images are {hw[0]}x{hw[1]} but the config expects "
            f"{config.input_hw}x{config.input_hw}")
    return images
