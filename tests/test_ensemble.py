import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rand_ensemble import ensemble, nn
from rand_ensemble.errors import RandEnsembleError
from reference import blog_embed

LAYERS = ["conv0", "conv1", "conv2", "conv3", "dense", "embedding"]


@pytest.fixture(scope="module")
def params():
    return ensemble.init_ensemble(jax.random.PRNGKey(0), 3)


def member(params, m):
    return jax.tree_util.tree_map(lambda a: a[m], params)


def test_every_leaf_has_leading_model_axis(params):
    shapes = {k: v["kernel"].shape for k, v in params.items()}
    assert shapes == {"conv0": (3, 3, 3, 3, 32), "conv1": (3, 3, 3, 32, 64),
                      "conv2": (3, 3, 3, 64, 128), "conv3": (3, 3, 3, 128, 256),
                      "dense": (3, 1, 1, 256, 32), "embedding": (3, 1, 1, 32, 32)}


def test_each_member_is_orthogonal_on_its_own(params):
    for name in LAYERS:
        for m in range(3):
            k = np.asarray(params[name]["kernel"][m], np.float64)
            flat = k.reshape(-1, k.shape[-1])                          # (kh*kw*cin, cout)
            gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
            np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5, err_msg=name)


def test_members_differ(params):
    k = np.asarray(params["conv0"]["kernel"])
    assert not np.allclose(k[0], k[1])


def test_joint_init_shrinks_members_but_ours_does_not(params):
    # The blog's joint init: one orthogonal matrix over the stacked (M*fan_in, cout) shape.
    m = 16
    joint = jax.nn.initializers.orthogonal()(jax.random.PRNGKey(1), (m * 288, 64))
    joint_norm = np.linalg.norm(np.asarray(joint).reshape(m, 288, 64)[0], axis=0).mean()
    ours = ensemble.init_ensemble(jax.random.PRNGKey(1), m)["conv1"]["kernel"]
    our_norm = np.linalg.norm(np.asarray(ours[0]).reshape(288, 64), axis=0).mean()
    assert abs(our_norm - 1.0) < 1e-5
    assert joint_norm == pytest.approx(1 / np.sqrt(m), rel=0.2)      # each member shrunk ~4x


def test_vmapped_pass_equals_member_loop_and_numpy_reference(params):
    images = np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)
    together = np.asarray(ensemble.embed_batch(params, images, ensemble.DEFAULT_CONFIG))
    for m in range(3):
        alone = np.asarray(ensemble.apply_embedder(member(params, m), images))
        np.testing.assert_allclose(together[m], alone, atol=1e-5)
        kernels = [np.asarray(params[n]["kernel"][m]) for n in LAYERS]
        np.testing.assert_allclose(together[m], blog_embed(kernels, images), atol=1e-4)


def test_unit_norms_and_blank_input_gives_zero_not_nan(params):
    images = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    images[2] = 0.0
    out = ensemble.embed(params, images)
    assert np.all(np.isfinite(out))
    norms = np.linalg.norm(out, axis=-1)
    np.testing.assert_allclose(norms[:, [0, 1, 3]], 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[:, 2], 0.0)
    grads = jax.grad(lambda x: jnp.sum(nn.l2_normalize(x)))(jnp.zeros((2, 4)))
    assert np.all(np.isfinite(np.asarray(grads)))


def test_streaming_chunks_memmap_and_uint8(params, tmp_path):
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, size=(7, 11, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, raw)
    mm = np.load(path, mmap_mode="r")
    a = ensemble.embed(params, mm, batch_size=10)                # 77 images: ragged last chunk
    b = ensemble.embed(params, raw.astype(np.float32) / 255.0, batch_size=77)
    assert a.shape == (3, 7, 11, 32)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_shape_contract_with_eval_shape(params):
    spec = jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.float32)
    out = jax.eval_shape(ensemble.embed_batch, params, spec, ensemble.DEFAULT_CONFIG)
    assert out.shape == (3, 8, 32) and out.dtype == jnp.float32


def test_other_configs():
    cfg64 = ensemble.EmbedderConfig(widths=(16, 16, 32, 32, 64), input_hw=64, embedding_dim=8)
    p = ensemble.init_ensemble(jax.random.PRNGKey(3), 2, cfg64)
    assert ensemble.embed(p, np.zeros((3, 64, 64, 3), np.uint8), cfg64).shape == (2, 3, 8)
    pooled = ensemble.EmbedderConfig(input_hw=64, pool="mean")
    assert pooled.final_hw == 3
    p = ensemble.init_ensemble(jax.random.PRNGKey(3), 2, pooled)
    img = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    out = ensemble.embed(p, img, pooled)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)
    cfg = ensemble.EmbedderConfig.from_dict(pooled.to_dict())
    assert cfg == pooled


@pytest.mark.parametrize("kwargs, match", [
    ({"input_hw": 64}, "leaves 3x3"),
    ({"input_hw": 8}, "too small"),
    ({"pool": "max"}, "pool"),
    ({"widths": ()}, "widths"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(RandEnsembleError, match=match):
        ensemble.EmbedderConfig(**kwargs)


def test_bad_inputs(params):
    with pytest.raises(RandEnsembleError, match="num_models"):
        ensemble.init_ensemble(jax.random.PRNGKey(0), 0)
    with pytest.raises(RandEnsembleError, match=r"\(\.\.\., H, W, 3\)"):
        ensemble.embed(params, np.zeros((2, 32, 32, 4), np.float32))
    with pytest.raises(RandEnsembleError, match="expects 32x32"):
        ensemble.embed(params, np.zeros((2, 64, 64, 3), np.float32))
