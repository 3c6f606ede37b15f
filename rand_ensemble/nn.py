"""Layers as init/apply pairs over named-dict pytrees, written for ONE model.

The model axis never appears here: ensembles vmap these functions (see ensemble.py).
"""
import jax
import jax.numpy as jnp
from jax import lax

# NHWC images, HWIO kernels, NHWC outputs: the layout of every conv in the project.
CONV_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def orthogonal(key, shape, dtype=jnp.float32):
    """Orthogonal matrix init for ONE kernel: reshaped to (prod(shape[:-1]), shape[-1]) it has
    orthonormal columns (or rows, when shape[-1] is the larger side)."""
    fan_in = 1
    for d in shape[:-1]:
        fan_in *= d
    flat = jax.nn.initializers.orthogonal()(key, (fan_in, shape[-1]), dtype)  # (fan_in, cout)
    return flat.reshape(shape)


def init_conv(key, kh, kw, cin, cout):
    """One bias-free conv: {"kernel": (kh, kw, cin, cout)}, orthogonal per kernel."""
    return {"kernel": orthogonal(key, (kh, kw, cin, cout))}


def conv(params, x, stride=1, padding="VALID"):
    """Bias-free 2-D convolution: (B, H, W, Cin) -> (B, H', W', Cout)."""
    return lax.conv_general_dilated(
        x, params["kernel"], window_strides=(stride, stride), padding=padding,
        dimension_numbers=CONV_DIMENSION_NUMBERS)


def l2_normalize(x, axis=-1, eps=1e-12):
    """Scale to unit L2 norm along `axis`; an all-zero vector stays zero (no NaN, finite grads)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    safe = jnp.where(sq > eps * eps, sq, 1.0)
    return jnp.where(sq > eps * eps, x * lax.rsqrt(safe), jnp.zeros_like(x))
