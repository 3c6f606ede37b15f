"""One image embedder, written for ONE model: its config, init and apply (no model axis here).

The data path, every part chosen by an `EmbedderConfig` field:

    image (H, W, C) -> [conv k x k, stride s, VALID|SAME (+ bias) -> GroupNorm? -> ReLU
                        -> 2x2 pool (none|mean|max)?] per width
                    -> 1x1 "dense" conv + ReLU (unless dense=0) -> 1x1 linear "embedding"
                    -> global pool (none|mean|max) -> L2 normalisation

The default is the blog's net (3x3 stride-2 VALID convs, no biases, no norm, no pools).
`FAMILIES` names architectures selectable by one word (`EmbedderConfig.preset`);
`ensemble.py` adds the model axis by vmap.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.model import nn

POOLS = ("none", "mean", "max")          # global pooling, and the 2x2 pools between convs
PADDINGS = ("VALID", "SAME")
NORMS = ("none", "group")                # stateless per-example norms only (vmap-safe)


@dataclasses.dataclass(frozen=True)
class EmbedderConfig:
    """Architecture of one embedder; the default is the blog's 32x32 net.

    Fields after `bias` were added for real data; at their defaults they are left out of
    `to_dict`, so configs (and params files) written before them read back unchanged.
    """
    widths: tuple = (32, 64, 128, 256)   # output channels of the k x k convs, in order
    dense: int = 32                      # 1x1 conv + ReLU after the convs (0: none)
    embedding_dim: int = 32              # E: the 1x1 linear embedding
    input_hw: int = 32                   # H = W of input images
    kernel_size: int = 3
    stride: int | tuple = 2              # every conv's stride, or one per conv
    pool: str = "none"                   # global pool at the end; "none": must reach 1x1
    bias: bool = False                   # zero-init biases on every layer (trained nets; the
                                         # random members of the blog have none)
    in_channels: int = 3                 # C of input images (1: greyscale)
    padding: str = "VALID"               # of every k x k conv: VALID or SAME (side / stride)
    block_pools: tuple = ()              # per conv, a 2x2 stride-2 pool after its ReLU:
                                         # "none" | "mean" | "max"; () = none anywhere
    norm: str = "none"                   # "group": GroupNorm (per example, learned scale and
                                         # offset) between every conv and its ReLU
    norm_groups: int = 8                 # groups of the GroupNorm (1: LayerNorm over H, W, C)

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "block_pools", tuple(self.block_pools))
        if not isinstance(self.stride, int):
            object.__setattr__(self, "stride", tuple(int(s) for s in self.stride))
        if not self.widths or min(self.widths) < 1:
            raise RandEnsembleError(f"widths must be positive channel counts, got {self.widths}")
        if min(self.embedding_dim, self.kernel_size, self.in_channels, self.norm_groups,
               *self.strides) < 1 or self.dense < 0:
            raise RandEnsembleError("embedding_dim, kernel_size, stride, in_channels and "
                                    "norm_groups must be >= 1, dense >= 0")
        if len(self.strides) != len(self.widths):
            raise RandEnsembleError(f"stride needs one entry per conv ({len(self.widths)}), "
                                    f"got {self.stride}")
        if self.pool not in POOLS:
            raise RandEnsembleError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.padding not in PADDINGS:
            raise RandEnsembleError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.norm not in NORMS:
            raise RandEnsembleError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.block_pools and (len(self.block_pools) != len(self.widths)
                                 or not set(self.block_pools) <= set(POOLS)):
            raise RandEnsembleError(f"block_pools must be empty or one of {POOLS} per conv "
                                    f"({len(self.widths)}), got {self.block_pools}")
        if self.norm == "group" and any(w % self.norm_groups for w in self.widths):
            raise RandEnsembleError(f"norm_groups={self.norm_groups} must divide every width "
                                    f"{self.widths}")
        side = self.final_hw
        if side < 1:
            raise RandEnsembleError(
                f"input_hw={self.input_hw} is too small for {len(self.widths)} convs")
        if self.pool == "none" and side != 1:
            raise RandEnsembleError(
                f"input_hw={self.input_hw} leaves {side}x{side} after {len(self.widths)} convs; "
                f"add a conv to widths or use pool='mean'")

    @classmethod
    def preset(cls, name: str, **overrides) -> "EmbedderConfig":
        """The named family `FAMILIES[name]` with fields replaced by `overrides` (e.g. the
        input's size and channels): `EmbedderConfig.preset("vgg", input_hw=28, in_channels=1)`."""
        if name not in FAMILIES:
            raise RandEnsembleError(f"unknown embedder family {name!r}; one of {sorted(FAMILIES)}")
        return cls(**{**FAMILIES[name], **overrides})

    @property
    def strides(self) -> tuple:
        """One stride per conv."""
        if isinstance(self.stride, int):
            return (self.stride,) * len(self.widths)
        return self.stride

    @property
    def conv_pools(self) -> tuple:
        """One 2x2 pool kind per conv ("none" where there is none)."""
        return self.block_pools or ("none",) * len(self.widths)

    @property
    def final_hw(self):
        """Spatial side after the convs and their pools."""
        side = self.input_hw
        for stride, pool in zip(self.strides, self.conv_pools):
            if self.padding == "SAME":
                side = -(-side // stride)
            else:
                side = (side - self.kernel_size) // stride + 1
            if pool != "none":
                side //= 2
        return side

    def layers(self):
        """[(name, kernel shape (kh, kw, cin, cout), stride, relu)] of every conv, in order."""
        k, out, cin = self.kernel_size, [], self.in_channels
        for i, (width, stride) in enumerate(zip(self.widths, self.strides)):
            out.append((f"conv{i}", (k, k, cin, width), stride, True))
            cin = width
        if self.dense:
            out.append(("dense", (1, 1, cin, self.dense), 1, True))
            cin = self.dense
        out.append(("embedding", (1, 1, cin, self.embedding_dim), 1, False))
        return out

    def to_dict(self):
        """JSON-ready form (see from_dict); fields at the defaults of the newer fields are left
        out, so the blog net's form is the one written before they existed."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        d["stride"] = self.stride if isinstance(self.stride, int) else list(self.stride)
        d["block_pools"] = list(self.block_pools)
        for name in _OPTIONAL_FIELDS:
            if getattr(self, name) == _OPTIONAL_FIELDS[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d):
        """Inverse of to_dict; unknown keys are an error, missing ones take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise RandEnsembleError(f"unknown embedder config keys: {sorted(unknown)}")
        return cls(**d)


# Left out of to_dict at these values (the blog net's stored form predates them).
_OPTIONAL_FIELDS = {"bias": False, "in_channels": 3, "padding": "VALID", "block_pools": (),
                    "norm": "none", "norm_groups": 8}

DEFAULT_CONFIG = EmbedderConfig()

# Named architectures (EmbedderConfig.preset): field values; the input's size and channels are
# given at the call.
FAMILIES = {
    # The blog's net: four 3x3 stride-2 VALID convs, 1x1 dense 32, E = 32, no biases.
    "blog": {},
    # A small VGG for real photos (Fashion-MNIST): 3x3 SAME stride-1 convs in three stages
    # (32, 64, 128) with GroupNorm + ReLU, 2x2 max-pool after the first two stages, global
    # mean pool, no dense layer, E = 128, biases.
    "vgg": dict(widths=(32, 64, 64, 128), kernel_size=3, stride=1, padding="SAME",
                block_pools=("max", "max", "none", "none"), norm="group", norm_groups=8,
                dense=0, embedding_dim=128, pool="mean", bias=True),
}


def init_embedder(key, config=DEFAULT_CONFIG):
    """One model's params: {"conv0": {"kernel": (3, 3, 3, 32)}, ..., "embedding": {...}}, each
    layer with a zero "bias": (cout,) when config.bias; with norm="group" also
    {"norm0": {"scale": ones (C,), "offset": zeros (C,)}, ...}, one per conv."""
    layers = config.layers()
    keys = jax.random.split(key, len(layers))
    params = {name: nn.init_conv(k, *shape, bias=config.bias)
              for k, (name, shape, _, _) in zip(keys, layers)}
    if config.norm == "group":
        for i, width in enumerate(config.widths):
            params[f"norm{i}"] = nn.init_group_norm(width)
    return params


def apply_embedder(params, images, config=DEFAULT_CONFIG, conv=nn.conv):
    """One model: (B, H, W, C) float in [0, 1] -> (B, E) unit rows (zero rows for blank input).

    `conv` picks the lowering of every layer (nn.conv or nn.conv_im2col); the maths is the same.
    """
    x = images
    pools = config.conv_pools + ("none",) * (len(config.layers()) - len(config.widths))
    for (name, _, stride, relu), pool in zip(config.layers(), pools):
        padding = config.padding if name.startswith("conv") else "VALID"
        x = conv(params[name], x, stride=stride, padding=padding)   # (B, H', W', C)
        if config.norm == "group" and name.startswith("conv"):
            x = nn.group_norm(params["norm" + name[4:]], x, config.norm_groups)
        if relu:
            x = jax.nn.relu(x)
        if pool != "none":
            x = nn.pool2x2(x, pool)                                  # (B, H'/2, W'/2, C)
    if config.pool == "max":
        x = jnp.max(x, axis=(1, 2))                                  # (B, E)
    else:
        x = jnp.mean(x, axis=(1, 2))                                 # (B, E); identity at 1x1
    return nn.l2_normalize(x, axis=-1)
