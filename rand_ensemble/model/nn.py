"""Conv layers as init/apply pairs over named-dict pytrees, written for ONE model.

The model axis never appears here: ensembles vmap these functions (see ensemble.py). The text
layers (Embedding, LSTM, ...) live with the question tower in questions/layers.py.
"""
import jax
import jax.numpy as jnp
from jax import lax

# NHWC images, HWIO kernels, NHWC outputs: the layout of every conv in the project.
CONV_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# The operand dtype of every conv and matmul, by name: "float32" (None: as given) or "bf16"
# (bfloat16 operands, float32 products and sums). Parameters and outputs stay float32.
COMPUTE_DTYPES = {"float32": None, "bf16": jnp.bfloat16}


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


def operands(x, kernel, compute_dtype=None):
    """(x, kernel, preferred_element_type) for a conv or matmul computed in `compute_dtype`:
    both cast to it and float32 products and sums; None: unchanged, the op's own defaults."""
    if compute_dtype is None:
        return x, kernel, None
    return x.astype(compute_dtype), kernel.astype(compute_dtype), jnp.float32


def conv(params, x, stride=1, padding="VALID", compute_dtype=None):
    """2-D convolution (+ bias if present): (B, H, W, Cin) -> (B, H', W', Cout) float32.

    compute_dtype (e.g. jnp.bfloat16): input and kernel cast to it, products summed in float32.
    """
    x, kernel, accumulate = operands(x, params["kernel"], compute_dtype)
    return add_bias(params, lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride), padding=padding,
        dimension_numbers=CONV_DIMENSION_NUMBERS, preferred_element_type=accumulate))


def same_padding(size, kernel_size, stride):
    """XLA's SAME padding of one spatial axis: -> (before, after), output side ceil(size / s)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def im2col(x, kernel_size, stride, padding="VALID"):
    """Patches by strided slices: (..., H, W, C) -> (..., H', W', k*k*C), in HWIO order; SAME
    pads with zeros first, as lax.conv_general_dilated does."""
    if padding == "SAME":
        (top, bottom), (left, right) = (same_padding(n, kernel_size, stride)
                                        for n in x.shape[-3:-1])
        pad = [(0, 0)] * (x.ndim - 3) + [(top, bottom), (left, right), (0, 0)]
        x = jnp.pad(x, pad)
    h, w = x.shape[-3:-1]
    ho, wo = (h - kernel_size) // stride + 1, (w - kernel_size) // stride + 1
    taps = [x[..., i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(kernel_size) for j in range(kernel_size)]  # k*k of (..., H', W', C)
    return jnp.concatenate(taps, axis=-1)                         # (..., H', W', k*k*C)


def conv_im2col(params, x, stride=1, padding="VALID", compute_dtype=None):
    """The conv of `conv`, lowered to patches @ kernel: (B, H, W, Cin) -> (B, H', W', Cout).

    On XLA:CPU one plain 2-D matmul per layer beats the conv emitter for these small-channel,
    strided layers (see README, "Performance"). compute_dtype as in `conv` (the patches are
    built in it, so a bfloat16 step moves half the bytes).
    """
    kh, kw, cin, cout = params["kernel"].shape
    x, kernel, accumulate = operands(x, params["kernel"], compute_dtype)
    patches = im2col(x, kh, stride, padding)                      # (B, H', W', K)
    b, h, w, k = patches.shape
    out = jnp.matmul(patches.reshape(b * h * w, k), kernel.reshape(k, cout),
                     preferred_element_type=accumulate)           # (B*H'*W', Cout)
    return add_bias(params, out.reshape(b, h, w, cout))


def conv_forward_cpu(params, x, stride=1, padding="VALID", compute_dtype=None):
    """The conv of `conv`, lowered per layer as XLA:CPU's forward pass runs it fastest:
    (B, H, W, Cin) -> (B, H', W', Cout). Stride-1 convs wider than 1x1 (the `vgg` family's SAME
    convs) go to lax.conv, 2.1-2.7x faster than their patches there; strided and 1x1 convs to
    `conv_im2col` (the blog net: 1.7x faster than lax.conv). Forward only: XLA:CPU's gradient of
    lax.conv is ~30x slower than im2col's, so training uses `conv_im2col` (README, "Performance").
    """
    if stride == 1 and params["kernel"].shape[0] > 1:
        return conv(params, x, stride, padding, compute_dtype)
    return conv_im2col(params, x, stride, padding, compute_dtype)


def init_group_norm(channels):
    """One GroupNorm: {"scale": ones (C,), "offset": zeros (C,)}."""
    return {"scale": jnp.ones((channels,), jnp.float32),
            "offset": jnp.zeros((channels,), jnp.float32)}


def group_norm(params, x, groups, eps=1e-5):
    """Per-example GroupNorm (stateless: no running statistics, so random members and vmapped
    training need nothing else): (B, H, W, C) -> (B, H, W, C), C split in `groups` groups."""
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)            # (B, 1, 1, G, 1)
    var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
    g = (g - mean) * lax.rsqrt(var + eps)
    return g.reshape(b, h, w, c) * params["scale"] + params["offset"]


def pool2x2(x, kind):
    """2x2 stride-2 "max" or "mean" pooling (odd sides drop the last row / column):
    (B, H, W, C) -> (B, H // 2, W // 2, C)."""
    b, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)
    return jnp.max(x, axis=(2, 4)) if kind == "max" else jnp.mean(x, axis=(2, 4))


def l2_normalize(x, axis=-1, eps=1e-12):
    """Scale to unit L2 norm along `axis`; an all-zero vector stays zero (no NaN, finite grads)."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    safe = jnp.where(sq > eps * eps, sq, 1.0)
    return jnp.where(sq > eps * eps, x * lax.rsqrt(safe), jnp.zeros_like(x))
