"""Conv layers as init/apply pairs over named-dict pytrees, written for ONE model.

The model axis never appears here: ensembles vmap these functions (see ensemble.py). The text
layers (Embedding, LSTM, ...) live with the question tower in questions/layers.py.
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


def init_conv(key, kh, kw, cin, cout, bias=False):
    """One conv: {"kernel": (kh, kw, cin, cout)} orthogonal per kernel, + {"bias": (cout,)}
    zeros when `bias` (random members have none; trained ones may)."""
    params = {"kernel": orthogonal(key, (kh, kw, cin, cout))}
    if bias:
        params["bias"] = jnp.zeros((cout,), jnp.float32)
    return params


def add_bias(params, x):
    """x + params["bias"] when the layer has one: (..., Cout) -> (..., Cout)."""
    return x + params["bias"] if "bias" in params else x


def conv(params, x, stride=1, padding="VALID"):
    """2-D convolution (+ bias if present): (B, H, W, Cin) -> (B, H', W', Cout)."""
    return add_bias(params, lax.conv_general_dilated(
        x, params["kernel"], window_strides=(stride, stride), padding=padding,
        dimension_numbers=CONV_DIMENSION_NUMBERS))


def im2col(x, kernel_size, stride):
    """VALID patches by strided slices: (..., H, W, C) -> (..., H', W', k*k*C), in HWIO order."""
    h, w = x.shape[-3:-1]
    ho, wo = (h - kernel_size) // stride + 1, (w - kernel_size) // stride + 1
    taps = [x[..., i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(kernel_size) for j in range(kernel_size)]  # k*k of (..., H', W', C)
    return jnp.concatenate(taps, axis=-1)                         # (..., H', W', k*k*C)


def conv_im2col(params, x, stride=1):
    """VALID conv as `conv`, lowered to patches @ kernel: (B, H, W, Cin) -> (B, H', W', Cout).

    On XLA:CPU one plain 2-D matmul per layer beats the conv emitter for these small-channel,
    strided layers (see README, "Performance").
    """
    kh, kw, cin, cout = params["kernel"].shape
    patches = im2col(x, kh, stride)                               # (B, H', W', K)
    b, h, w, k = patches.shape
    out = patches.reshape(b * h * w, k) @ params["kernel"].reshape(k, cout)  # (B*H'*W', Cout)
    return add_bias(params, out.reshape(b, h, w, cout))


def l2_normalize(x, axis=-1, eps=1e-12):
    """Scale to unit L2 norm along `axis`; an all-zero vector stays zero (no NaN, finite grads)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    safe = jnp.where(sq > eps * eps, sq, 1.0)
    return jnp.where(sq > eps * eps, x * lax.rsqrt(safe), jnp.zeros_like(x))
