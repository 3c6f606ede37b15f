"""The image embedder's architecture, importable without JAX: `EmbedderConfig` (every field
with its command-line help and check, `options.option`), the named `FAMILIES` and
`from_flags`, which the CLI's architecture flags build (`cli.types.embedder_flags`).

`model/embedder.py` (init and apply, ONE model) re-exports these names.
"""
from __future__ import annotations

import dataclasses

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.options import option

POOLS = ("none", "mean", "max")          # global pooling, and the 2x2 pools between convs
PADDINGS = ("VALID", "SAME")
NORMS = ("none", "group")                # stateless per-example norms only (vmap-safe)


@dataclasses.dataclass(frozen=True)
class EmbedderConfig:
    """Architecture of one embedder; the default is the blog's 32x32 net.

    Fields after `bias` were added for real data; at their defaults they are left out of
    `to_dict`, so configs (and params files) written before them read back unchanged.
    """
    widths: tuple = option((32, 64, 128, 256), "output channels of the k x k convs, in "
                           "order (comma-separated)", "int_list")
    dense: int = option(32, "1x1 conv + ReLU after the convs (0: none)", "non_negative_int")
    embedding_dim: int = option(32, "E: the 1x1 linear embedding", "positive_int")
    input_hw: int = option(32, "H = W of input images (images are fitted to it)", "image_side")
    kernel_size: int = option(3, "side of every conv kernel", "positive_int")
    stride: int | tuple = option(2, "every conv's stride, or one per conv (comma-separated)",
                                 "int_or_list")
    pool: str = option("none", "global pool at the end (none: the convs must reach 1x1)",
                       choices=POOLS)
    bias: bool = option(False, "zero-init biases on every layer (trained nets; the random "
                               "members of the blog have none)")
    in_channels: int = option(3, "C of input images (1: greyscale, RGB converted to luma)",
                              choices=(1, 3))
    padding: str = option("VALID", "padding of every k x k conv (SAME: side / stride)",
                          choices=PADDINGS)
    block_pools: tuple = option((), "per conv, a 2x2 stride-2 pool after its ReLU, comma-"
                                    "separated none|mean|max (empty: none anywhere)",
                                "pool_list")
    norm: str = option("none", "group: GroupNorm (per example, learned scale and offset) "
                               "between every conv and its ReLU", choices=NORMS)
    norm_groups: int = option(8, "groups of the GroupNorm (1: LayerNorm over H, W, C)",
                              "positive_int")

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

    @property
    def num_params(self) -> int:
        """Parameters of one member (kernels, biases, norm scales and offsets)."""
        total = 0
        for _, (kh, kw, cin, cout), _, _ in self.layers():
            total += kh * kw * cin * cout + (cout if self.bias else 0)
        return total + (2 * sum(self.widths) if self.norm == "group" else 0)

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
    # A small VGG for real photos (Fashion-MNIST): 3x3 SAME stride-1 convs 32, 64, 64, 128
    # + ReLU, 2x2 max-pool after the first two, global mean pool, no dense layer, E = 128,
    # biases. No norm: GroupNorm (`norm="group"`, still a field) cost the oracle 0.835 ->
    # 0.858 P@1 at 500 steps on Fashion-MNIST and a third of the speed (README, "Real data").
    "vgg": dict(widths=(32, 64, 64, 128), kernel_size=3, stride=1, padding="SAME",
                block_pools=("max", "max", "none", "none"), dense=0, embedding_dim=128,
                pool="mean", bias=True),
}

# The input each family is built for (scripts that benchmark or study a family by name alone):
# the blog's 32x32 RGB renders, the VGG's 28x28 greyscale photos (Fashion-MNIST).
FAMILY_INPUTS = {"blog": dict(input_hw=32, in_channels=3), "vgg": dict(input_hw=28, in_channels=1)}


def from_flags(choice: dict | None, **fixed) -> EmbedderConfig:
    """The config the architecture flags name: {"family": NAME, field: value, ...} (None: the
    blog net) -> `EmbedderConfig.preset(family, **fields, **fixed)` (`fixed`, e.g. the test
    set's input_hw, wins over the flags)."""
    choice = dict(choice or {})
    family = choice.pop("family", None) or "blog"
    return EmbedderConfig.preset(family, **{**choice, **fixed})
