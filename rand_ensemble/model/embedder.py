"""One image embedder, written for ONE model: its config, init and apply (no model axis here).

The blog's net: 3x3 stride-2 VALID convs with ReLU, a 1x1 "dense" conv with ReLU, a 1x1 linear
embedding, L2 normalisation. `ensemble.py` adds the model axis by vmap.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.model import nn

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
    bias: bool = False                   # zero-init biases on every layer (trained nets; the
                                         # random members of the blog have none)

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
        if not self.bias:        # bias-free configs keep the pre-bias form (same params files)
            del d["bias"]
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
    """One model's params: {"conv0": {"kernel": (3, 3, 3, 32)}, ..., "embedding": {...}}, each
    layer with a zero "bias": (cout,) when config.bias."""
    layers = config.layers()
    keys = jax.random.split(key, len(layers))
    return {name: nn.init_conv(k, *shape, bias=config.bias)
            for k, (name, shape, _, _) in zip(keys, layers)}


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
