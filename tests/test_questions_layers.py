"""Text layers: LSTM against a numpy loop, masking, parameter sharing, repr."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rand_ensemble.questions import layers


def init(layer, shape, seed=0):
    """(output_shape, params), with the params initialised under jit (eager init is slow)."""
    box = {}

    def params_only(k):
        box["out"], params = layer.init(k, shape)  # the output shape is static: kept at trace
        return params

    params = jax.jit(params_only)(jax.random.key(seed))
    return box["out"], params


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(kernel, bias, x, lengths):
    """Reference: a plain loop over batch and time on the fused [x, h] kernel, gates i, j, f, o."""
    b, t, _ = x.shape
    hid = kernel.shape[1] // 4
    out = np.zeros((b, t, hid))
    final = np.zeros((b, hid))
    for n in range(b):
        c, h = np.zeros(hid), np.zeros(hid)
        for s in range(lengths[n]):
            gates = np.concatenate([x[n, s], h]) @ kernel + bias
            i, j, f, o = np.split(gates, 4)
            c = c * sigmoid(f) + sigmoid(i) * np.tanh(j)
            h = np.tanh(c) * sigmoid(o)
            out[n, s] = h
        final[n] = h
    return out, final


def test_lstm_matches_numpy_loop_at_real_steps():
    layer = layers.LSTM(5)
    shape, params = init(layer, (3, 6, 4))
    assert shape == (3, 6, 5)
    assert params["kernel"].shape == (4 + 5, 20) and params["bias"].shape == (20,)
    np.testing.assert_array_equal(np.asarray(params["bias"])[10:15], 1.0)  # forget gate
    np.testing.assert_array_equal(np.asarray(params["bias"])[:10], 0.0)
    # A non-trivial bias so every gate slice is exercised by the comparison.
    params = {"kernel": params["kernel"],
              "bias": jax.random.normal(jax.random.key(1), (20,)) * 0.5}
    x = np.asarray(jax.random.normal(jax.random.key(2), (3, 6, 4)))
    lengths = [6, 3, 1]
    mask = np.arange(6)[None, :] < np.asarray(lengths)[:, None]
    got = np.asarray(jax.jit(layer.apply)(params, jnp.asarray(x), jnp.asarray(mask)))
    want, _ = numpy_lstm(np.asarray(params["kernel"], np.float64),
                         np.asarray(params["bias"], np.float64), x, lengths)
    for n, length in enumerate(lengths):
        np.testing.assert_allclose(got[n, :length], want[n, :length], rtol=1e-5, atol=1e-5)
    # Unmasked: every step is real.
    got_full = np.asarray(jax.jit(layer.apply)(params, jnp.asarray(x)))
    want_full, _ = numpy_lstm(np.asarray(params["kernel"], np.float64),
                              np.asarray(params["bias"], np.float64), x, [6, 6, 6])
    np.testing.assert_allclose(got_full, want_full, rtol=1e-5, atol=1e-5)


def test_lstm_holds_state_on_padding():
    layer = layers.LSTM(3)
    _, params = init(layer, (2, 5, 2), 0)
    x = jax.random.normal(jax.random.key(1), (2, 5, 2))
    mask = jnp.asarray([[True, True, False, False, False], [True] * 5])
    out = np.asarray(jax.jit(layer.apply)(params, x, mask))
    # After the last real step the output (= h) stays at its value from step 2.
    np.testing.assert_array_equal(out[0, 2:], np.broadcast_to(out[0, 1], (3, 3)))


def test_embedding_lookup_and_mean_excludes_padding():
    emb = layers.Embedding(7, 3)
    shape, params = init(emb, (2, 4), 0)
    assert shape == (2, 4, 3) and params["table"].shape == (7, 3)
    ids = np.asarray([[3, 1, 0, 0], [6, 6, 2, 5]])
    vecs = np.asarray(emb.apply(params, jnp.asarray(ids)))
    np.testing.assert_array_equal(vecs, np.asarray(params["table"])[ids])
    mask = ids != 0
    got = np.asarray(layers.Mean().apply({}, jnp.asarray(vecs), jnp.asarray(mask)))
    want = np.stack([vecs[0, :2].mean(0), vecs[1].mean(0)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # An all-padding row gives zeros, and Normalize keeps them finite.
    zero = layers.Mean().apply({}, jnp.ones((1, 3, 2)), jnp.zeros((1, 3), bool))
    np.testing.assert_array_equal(np.asarray(zero), 0.0)


def test_normalize_is_nan_safe_with_finite_gradient():
    norm = layers.Normalize()
    x = jnp.asarray([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(np.asarray(norm.apply({}, x)), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    grad = jax.grad(lambda v: jnp.sum(norm.apply({}, v)))(x)
    assert np.all(np.isfinite(np.asarray(grad)))


def tower(vocab=20, d=8):
    return layers.Serial(layers.Embedding(vocab, d), layers.LSTM(d), layers.Mean(), layers.Normalize(), name="tower")


def test_padding_does_not_change_a_question_embedding():
    t = tower()
    _, params = init(t, (1, 8), 0)
    q = [5, 9, 2, 17, 3]
    short = np.zeros((1, 8), np.int32)
    short[0, :5] = q
    long = np.zeros((1, 32), np.int32)
    long[0, :5] = q
    apply = jax.jit(t.apply)
    a = np.asarray(apply(params, jnp.asarray(short)))
    b = np.asarray(apply(params, jnp.asarray(long)))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a), 1.0, rtol=1e-6)
    # A plain mean over the padded steps would not have been invariant.
    plain = layers.Serial(layers.Embedding(20, 8), layers.LSTM(8), layers.Fn("PlainMean", lambda x: x.mean(1)))
    pa = np.asarray(jax.jit(plain.apply)(params, jnp.asarray(short)))
    pb = np.asarray(jax.jit(plain.apply)(params, jnp.asarray(long)))
    assert not np.allclose(pa, pb, atol=1e-3)


def test_parallel_of_one_tower_has_one_parameter_set_used_by_both_branches():
    t = tower()
    model = layers.Parallel(t, t)
    _, params = init(model, ((2, 4), (2, 4)), 0)
    _, single = init(t, (2, 4), 0)
    assert list(params) == ["tower"]
    assert len(jax.tree.leaves(params)) == len(jax.tree.leaves(single)) == 3
    x1 = jnp.asarray([[1, 2, 3, 0], [4, 5, 0, 0]])
    x2 = jnp.asarray([[6, 7, 8, 9], [10, 11, 12, 0]])
    # Same question in either branch gives the same vector: both branches use one param set.
    a, b = jax.jit(model.apply)(params, (x1, x1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Gradient reaches the shared params from each branch on its own.
    def branch_loss(p, i):
        return jnp.sum(model.apply(p, (x1, x2))[i][:, 0])

    branch_grads = jax.jit(lambda p: [jax.grad(branch_loss)(p, i) for i in (0, 1)])(params)
    for branch, g in enumerate(branch_grads):
        assert float(jnp.abs(g["tower"]["lstm"]["kernel"]).sum()) > 0
        rows = np.asarray(jnp.abs(g["tower"]["embedding"]["table"]).sum(1))
        used = np.unique(np.asarray((x1, x2)[branch]))
        assert np.all(rows[used[used > 0]] > 0)  # this branch's tokens got gradient
    # Two distinct towers own two param sets.
    two = layers.Parallel(tower(), tower())
    _, p2 = init(two, ((2, 4), (2, 4)), 0)
    assert sorted(p2) == ["tower", "tower_1"] and len(jax.tree.leaves(p2)) == 6


def test_serial_reusing_a_layer_shares_it():
    lstm = layers.LSTM(4)
    model = layers.Serial(layers.Embedding(10, 4), lstm, lstm)
    _, params = init(model, (1, 3), 0)
    assert sorted(params) == ["embedding", "lstm"]
    x = jnp.asarray([[1, 2, 3]])
    by_hand = jax.jit(lambda p: lstm.apply(p["lstm"],
                                           lstm.apply(p["lstm"], p["embedding"]["table"][x])))
    np.testing.assert_allclose(np.asarray(jax.jit(model.apply)(params, x)),
                               np.asarray(by_hand(params)), rtol=1e-6)


def test_repr_in_trax_style():
    t = layers.Serial(layers.Embedding(500, 128), layers.LSTM(128), layers.Mean(), layers.Normalize())
    assert repr(t) == "Serial[ Embedding_500_128 LSTM_128 Mean Normalize ]"
    assert repr(layers.Parallel(t, t)) == ("Parallel_in2_out2[ Serial[ Embedding_500_128 LSTM_128 Mean "
                                       "Normalize ] Serial[ Embedding_500_128 LSTM_128 Mean "
                                       "Normalize ] ]")


def test_init_shapes_match_apply_and_jit_agrees():
    t = tower(vocab=30, d=6)
    out_shape, params = init(t, (4, 16), 3)
    x = jax.random.randint(jax.random.key(4), (4, 16), 0, 30)
    assert jax.eval_shape(t.apply, params, x).shape == out_shape == (4, 6)
    np.testing.assert_allclose(np.asarray(jax.jit(t.apply)(params, x)),
                               np.asarray(t.apply(params, x)), rtol=1e-5, atol=1e-6)


def test_parallel_rejects_wrong_number_of_inputs():
    with pytest.raises(ValueError):
        layers.Parallel(tower(), tower()).init(jax.random.key(0), ((1, 2),))
