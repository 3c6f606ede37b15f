"""Text layers in the Trax vocabulary: Embedding, LSTM, Mean, Fn / Normalize, Serial, Parallel.

Each layer object is static config (never a pytree leaf) with
  init(key, input_shape) -> (output_shape, params)     params: a named dict ({} if none)
  apply(params, x, mask=None) -> y
`mask` is (B, T) bool, True on real tokens. Serial derives it from integer token ids
(PAD_ID = 0) and hands it to every layer, so layers after the Embedding still know where
the padding is. Parameter sharing is by reuse: the same layer object appearing twice in a
Serial or Parallel owns ONE entry in the params dict (as in JAXnet).
"""
import jax
import jax.numpy as jnp
from jax import lax

from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.model.nn import l2_normalize
from rand_ensemble.questions.text import PAD_ID


class Layer:
    """Base layer: a name (its key in a parent's params dict) and a Trax-style repr."""

    name = "layer"

    def init(self, key, input_shape):
        """Parameter-free default: shape passes through, params are {}."""
        return input_shape, {}

    def apply(self, params, x, mask=None):
        raise NotImplementedError

    def __call__(self, params, x, mask=None):
        return self.apply(params, x, mask)


class Embedding(Layer):
    """Token ids to vectors: (B, T) int -> (B, T, D); params {"table": (V, D)}."""

    name = "embedding"

    def __init__(self, vocab_size, d_feature):
        self.vocab_size, self.d_feature = int(vocab_size), int(d_feature)

    def init(self, key, input_shape):
        # Trax's default: normal with std 1 per entry, so random towers already separate words.
        table = jax.random.normal(key, (self.vocab_size, self.d_feature), jnp.float32)
        return (*input_shape, self.d_feature), {"table": table}

    def apply(self, params, x, mask=None):
        return jnp.take(params["table"], x, axis=0)  # (B, T, D)

    def __repr__(self):
        return f"Embedding_{self.vocab_size}_{self.d_feature}"


def lstm_cell(kernel, bias, carry, x_proj):
    """One LSTM step. carry = (c, h), each (B, H); x_proj = x @ kernel[:Din], (B, 4H).

    Gates follow Trax's order i, j, f, o over the fused kernel on [x, h]; the input half of the
    product is computed outside the scan (one big matmul instead of T small ones).
    """
    c, h = carry
    d_in = kernel.shape[0] - h.shape[-1]
    gates = x_proj + h @ kernel[d_in:] + bias  # (B, 4H)
    i, j, f, o = jnp.split(gates, 4, axis=-1)  # each (B, H)
    c = c * jax.nn.sigmoid(f) + jax.nn.sigmoid(i) * jnp.tanh(j)
    h = jnp.tanh(c) * jax.nn.sigmoid(o)
    return c, h


class LSTM(Layer):
    """Unidirectional LSTM over time: (B, T, Din) -> (B, T, H); params {"kernel", "bias"}.

    kernel (Din + H, 4H) is one fused matrix over the concatenation [x, h], bias (4H,) starts at
    1 on the forget gate (keep the memory early in training). The scan carry is (c, h), both
    (B, H) and zero at t = 0. On padded steps the carry is held, so the final state (and every
    output at a real step) is unchanged by right-padding.
    """

    name = "lstm"

    def __init__(self, n_units):
        self.n_units = int(n_units)

    def init(self, key, input_shape):
        d_in, hid = input_shape[-1], self.n_units
        # Glorot-uniform on the fused matrix, as Trax's Dense does.
        kernel = jax.nn.initializers.glorot_uniform()(key, (d_in + hid, 4 * hid), jnp.float32)
        bias = jnp.zeros((4 * hid,), jnp.float32).at[2 * hid:3 * hid].set(1.0)
        return (*input_shape[:-1], hid), {"kernel": kernel, "bias": bias}

    def apply(self, params, x, mask=None):
        kernel, bias = params["kernel"], params["bias"]
        b, t, d_in = x.shape
        hid = kernel.shape[-1] // 4
        x_proj = jnp.einsum("btd,dg->tbg", x, kernel[:d_in])  # (T, B, 4H), time-major for scan
        keep = jnp.ones((t, b), bool) if mask is None else jnp.swapaxes(mask, 0, 1)  # (T, B)

        def step(carry, inputs):
            xp, m = inputs
            c, h = lstm_cell(kernel, bias, carry, xp)
            m = m[:, None]  # (B, 1)
            carry = (jnp.where(m, c, carry[0]), jnp.where(m, h, carry[1]))
            return carry, carry[1]  # padded steps repeat the last real output

        zeros = jnp.zeros((b, hid), x.dtype)
        _, hs = lax.scan(step, (zeros, zeros), (x_proj, keep))  # (T, B, H)
        return jnp.swapaxes(hs, 0, 1)  # (B, T, H)

    def __repr__(self):
        return f"LSTM_{self.n_units}"


class Mean(Layer):
    """Mean over time of real (unmasked) steps only: (B, T, D) -> (B, D).

    A plain mean over padded steps would shrink a short question's vector toward the padding
    outputs; an all-padding row gives zeros (Normalize keeps those finite).
    """

    name = "mean"

    def init(self, key, input_shape):
        return (*input_shape[:-2], input_shape[-1]), {}

    def apply(self, params, x, mask=None):
        if mask is None:
            return jnp.mean(x, axis=-2)
        w = mask.astype(x.dtype)[..., None]  # (B, T, 1)
        total = jnp.sum(x * w, axis=-2)  # (B, D)
        return total / jnp.maximum(jnp.sum(w, axis=-2), 1.0)

    def __repr__(self):
        return "Mean"


class Fn(Layer):
    """A parameter-free layer from a function of x (shape-preserving unless `out_shape` given)."""

    def __init__(self, name, fn, out_shape=None):
        self.name, self.fn, self.out_shape = name, fn, out_shape

    def init(self, key, input_shape):
        return (input_shape if self.out_shape is None else self.out_shape(input_shape)), {}

    def apply(self, params, x, mask=None):
        return self.fn(x)

    def __repr__(self):
        return self.name


def Normalize():  # noqa: N802 (Trax's spelling)
    """L2-normalise the last axis, NaN-safe: (..., D) -> (..., D)."""
    return Fn("Normalize", l2_normalize)


def _child_names(layers):
    """One params key per distinct layer object (reuse shares), suffixed _1, _2 on clashes."""
    names, taken = {}, set()
    for layer in layers:
        if id(layer) in names:
            continue
        base, n = layer.name.lower(), 0
        name = base
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        names[id(layer)] = name
        taken.add(name)
    return [names[id(layer)] for layer in layers]


def _token_mask(x, mask):
    if mask is None and jnp.issubdtype(x.dtype, jnp.integer):
        return x != PAD_ID  # (B, T)
    return mask


class Serial(Layer):
    """Layers in sequence; params {child_name: child_params} for children that have params."""

    def __init__(self, *layers, name="serial"):
        self.layers, self.name = list(layers), name
        self.child_names = _child_names(self.layers)

    def init(self, key, input_shape):
        params, shape = {}, input_shape
        keys = jax.random.split(key, max(len(self.layers), 1))
        for k, layer, name in zip(keys, self.layers, self.child_names):
            if name in params:  # a reused layer: already initialised, share it
                shape = layer.init(k, shape)[0]
                continue
            shape, p = layer.init(k, shape)
            if p:
                params[name] = p
        return shape, params

    def apply(self, params, x, mask=None):
        mask = _token_mask(x, mask)
        for layer, name in zip(self.layers, self.child_names):
            x = layer.apply(params.get(name, {}), x, mask)
        return x

    def __repr__(self):
        return "Serial[ " + " ".join(repr(layer) for layer in self.layers) + " ]"


class Parallel(Layer):
    """Branch i applied to input i: tuple of n inputs -> tuple of n outputs.

    Parallel(tower, tower) with the SAME object has one params entry used by both branches.
    """

    def __init__(self, *layers, name="parallel"):
        self.layers, self.name = list(layers), name
        self.child_names = _child_names(self.layers)

    def init(self, key, input_shape):
        if len(input_shape) != len(self.layers):
            raise RandEnsembleError(f"{self!r} expects {len(self.layers)} input shapes")
        params, shapes = {}, []
        keys = jax.random.split(key, max(len(self.layers), 1))
        for k, layer, name, shape in zip(keys, self.layers, self.child_names, input_shape):
            out, p = layer.init(k, shape)
            shapes.append(out)
            if p and name not in params:
                params[name] = p
        return tuple(shapes), params

    def apply(self, params, xs, mask=None):
        masks = (None,) * len(self.layers) if mask is None else mask
        return tuple(layer.apply(params.get(name, {}), x, m)
                     for layer, name, x, m in zip(self.layers, self.child_names, xs, masks))

    def __repr__(self):
        n = len(self.layers)
        return f"Parallel_in{n}_out{n}[ " + " ".join(repr(layer) for layer in self.layers) + " ]"
