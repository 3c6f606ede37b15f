"""One image embedder, written for ONE model: init and apply (no model axis here); its config
(`EmbedderConfig`, `FAMILIES`) lives in model/config.py, free of JAX, and is re-exported here.

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

import jax
import jax.numpy as jnp

from rand_ensemble.model import nn
from rand_ensemble.model.config import (  # noqa: F401  (re-exported: the config lives apart
    DEFAULT_CONFIG, FAMILIES, NORMS, PADDINGS, POOLS, EmbedderConfig)  # so the CLI needs no JAX)

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
