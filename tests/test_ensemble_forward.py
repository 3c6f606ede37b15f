"""Every forward formulation equals a per-member loop of apply_embedder; streaming is exact."""
import jax
import numpy as np
import pytest

from rand_ensemble import ensemble, nn
from rand_ensemble.ensemble import EmbedderConfig

SMALL = EmbedderConfig(widths=(8, 16, 16, 16), dense=8, embedding_dim=4)
BIG_MEAN = EmbedderConfig(widths=(4, 8, 8, 8, 8), dense=8, embedding_dim=4, input_hw=64)
POOLED = EmbedderConfig(widths=(4, 8), dense=8, embedding_dim=4, input_hw=17, pool="mean")
CONFIGS = {"small": SMALL, "five_convs_64": BIG_MEAN, "mean_pool": POOLED}


def _images(n, hw, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, hw, hw, 3)).astype(np.float32)


def _loop(params, images, config):
    """Independent reference: a Python loop over members of the single-model net."""
    members = [jax.tree_util.tree_map(lambda a: a[i], params)
               for i in range(ensemble.num_models(params))]
    return np.stack([np.asarray(ensemble.apply_embedder(p, images, config)) for p in members])


@pytest.mark.parametrize("forward", sorted(ensemble.FORWARDS))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_matches_member_loop(forward, name):
    config = CONFIGS[name]
    params = ensemble.init_ensemble(jax.random.PRNGKey(1), 3, config)
    images = _images(5, config.input_hw)
    got = np.asarray(ensemble.embed_batch(params, images, config, forward))  # (M, B, E)
    assert got.shape == (3, 5, config.embedding_dim)
    np.testing.assert_allclose(got, _loop(params, images, config), atol=1e-5)


def test_im2col_conv_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 9, 9, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    ref = np.zeros((2, 4, 4, 5), np.float32)
    for i in range(4):
        for j in range(4):
            window = x[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]          # (B, 3, 3, Cin)
            ref[:, i, j] = np.einsum("bhwc,hwco->bo", window, kernel)
    got = np.asarray(nn.conv_im2col({"kernel": kernel}, x, stride=2))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(nn.conv({"kernel": kernel}, x, stride=2)), ref,
                               atol=1e-5)


def test_embed_memmap_ragged_chunks_and_uint8(tmp_path):
    params = ensemble.init_ensemble(jax.random.PRNGKey(3), 2, SMALL)
    raw = np.random.default_rng(4).integers(0, 256, (2, 7, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "images.npy"
    np.save(path, raw)
    whole = ensemble.embed(params, raw.astype(np.float32) / 255.0, SMALL, batch_size=1000)
    assert whole.shape == (2, 2, 7, 4) and whole.dtype == np.float32
    mapped = ensemble.embed(params, np.load(path, mmap_mode="r"), SMALL, batch_size=4)
    np.testing.assert_allclose(mapped, whole, atol=1e-6)      # uint8 memmap, ragged last chunk
    np.testing.assert_allclose(                                 # the plain lowering agrees
        ensemble.embed(params, raw, SMALL, batch_size=5, forward="vmap"), whole, atol=1e-5)


def test_embed_batch_shape_contract():
    params = jax.eval_shape(lambda: ensemble.init_ensemble(jax.random.PRNGKey(0), 4))
    out = jax.eval_shape(lambda p, x: ensemble.FORWARDS[ensemble.default_forward()](
        p, x, ensemble.DEFAULT_CONFIG), params, jax.ShapeDtypeStruct((6, 32, 32, 3), np.float32))
    assert out.shape == (4, 6, 32)
