"""The model axis: per-member init, every lowering against a member loop and a numpy
reference, streaming over memmaps, shape contracts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rand_ensemble.model import ensemble, nn
from rand_ensemble.model.embedder import EmbedderConfig
from rand_ensemble.errors import RandEnsembleError

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


def test_vmapped_pass_equals_member_loop_and_numpy_reference(params, reference):
    images = np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)
    together = np.asarray(ensemble.embed_batch(params, images, ensemble.DEFAULT_CONFIG))
    for m in range(3):
        alone = np.asarray(ensemble.apply_embedder(member(params, m), images))
        np.testing.assert_allclose(together[m], alone, atol=1e-5)
        kernels = [np.asarray(params[n]["kernel"][m]) for n in LAYERS]
        np.testing.assert_allclose(together[m], reference.blog_embed(kernels, images), atol=1e-4)


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


def test_bad_inputs(params):
    with pytest.raises(RandEnsembleError, match="num_models"):
        ensemble.init_ensemble(jax.random.PRNGKey(0), 0)
    with pytest.raises(RandEnsembleError, match=r"\(\.\.\., H, W, 3\)"):
        ensemble.embed(params, np.zeros((2, 32, 32, 4), np.float32))
    with pytest.raises(RandEnsembleError, match="expects 32x32"):
        ensemble.embed(params, np.zeros((2, 64, 64, 3), np.float32))


SMALL = EmbedderConfig(widths=(8, 16, 16, 16), dense=8, embedding_dim=4)
BIG_MEAN = EmbedderConfig(widths=(4, 8, 8, 8, 8), dense=8, embedding_dim=4, input_hw=64)
POOLED = EmbedderConfig(widths=(4, 8), dense=8, embedding_dim=4, input_hw=17, pool="mean")
SAME_POOLS = EmbedderConfig(widths=(4, 8, 8), stride=(1, 2, 1), padding="SAME",
                            block_pools=("max", "none", "mean"), norm="group", norm_groups=2,
                            dense=0, embedding_dim=4, input_hw=13, in_channels=1, pool="max",
                            bias=True)
VGG = EmbedderConfig.preset("vgg", input_hw=16, in_channels=1, widths=(8, 8, 16, 16))
CONFIGS = {"small": SMALL, "five_convs_64": BIG_MEAN, "mean_pool": POOLED,
           "same_pools_norm": SAME_POOLS, "vgg": VGG}


def _loop(params, images, config):
    """Independent reference: a Python loop over members of the single-model net."""
    members = [jax.tree_util.tree_map(lambda a: a[i], params)
               for i in range(ensemble.num_models(params))]
    return np.stack([np.asarray(ensemble.apply_embedder(p, images, config)) for p in members])


@pytest.mark.parametrize("forward", sorted(ensemble.FORWARDS))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_matches_member_loop(forward, name, random_images):
    config = CONFIGS[name]
    params = ensemble.init_ensemble(jax.random.PRNGKey(1), 3, config)
    images = random_images(5, config.input_hw)[..., :config.in_channels]
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


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("size", [7, 8])
def test_im2col_same_padding_matches_lax_and_numpy(stride, size, reference):
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    ref = reference.conv_padded(x.astype(np.float64), kernel.astype(np.float64), stride, "SAME")
    assert ref.shape[1] == -(-size // stride)
    for conv in (nn.conv, nn.conv_im2col, nn.conv_forward_cpu):
        got = np.asarray(conv({"kernel": kernel}, x, stride=stride, padding="SAME"))
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_greyscale_images_are_checked_against_in_channels():
    params = ensemble.init_ensemble(jax.random.PRNGKey(0), 2, VGG)
    out = ensemble.embed(params, np.zeros((3, 16, 16, 1), np.uint8) + 7, VGG)
    assert out.shape == (2, 3, 128)
    with pytest.raises(RandEnsembleError, match=r"\(\.\.\., H, W, 1\)"):
        ensemble.embed(params, np.zeros((3, 16, 16, 3), np.uint8), VGG)


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


@pytest.mark.parametrize("forward", sorted(ensemble.FORWARDS))
def test_shape_contract_with_eval_shape(forward):
    params = jax.eval_shape(lambda: ensemble.init_ensemble(jax.random.PRNGKey(0), 4))
    spec = jax.ShapeDtypeStruct((6, 32, 32, 3), jnp.float32)
    out = jax.eval_shape(lambda p, x: ensemble.embed_batch(p, x, ensemble.DEFAULT_CONFIG, forward),
                         params, spec)
    assert out.shape == (4, 6, 32) and out.dtype == jnp.float32


def test_mirror_mean_averages_each_image_with_its_mirror():
    """ensemble.mirror_mean against a loop: normalise(f(x) + f(x mirrored on W)) per image, for
    rows of any leading shape; blank images stay zero rows; a mirrored input gives the same."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 7, 2)).astype(np.uint8)
    images[3] = 0                                              # blank: f gives a zero row
    proj = rng.normal(size=(3, 6 * 7 * 2, 4))                  # 3 "members", E = 4

    def rows(x):                                               # (N, H, W, C) -> (3, N, 4) unit
        out = np.einsum("nd,mde->mne", x.reshape(len(x), -1).astype(np.float64), proj)
        norm = np.linalg.norm(out, axis=-1, keepdims=True)
        return np.where(norm > 0, out / np.where(norm > 0, norm, 1), 0)

    got = ensemble.mirror_mean(rows, images)
    assert got.shape == (3, 5, 4) and got.dtype == np.float32
    for i in range(5):
        mirrored = images[i][:, ::-1, :]                       # W reversed, by hand
        for m in range(3):
            total = rows(images[i:i + 1])[m, 0] + rows(mirrored[None])[m, 0]
            norm = np.linalg.norm(total)
            want = total / norm if norm > 0 else np.zeros(4)
            np.testing.assert_allclose(got[m, i], want, atol=1e-6)
    assert not np.any(got[:, 3]) and np.all(np.isfinite(got))
    np.testing.assert_allclose(ensemble.mirror_mean(rows, images[:, :, ::-1]), got, atol=1e-6)
