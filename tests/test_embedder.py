"""EmbedderConfig(bias=...): old configs unchanged, zero-init biases, the biased net against a
numpy reference in both lowerings, and trained checkpoints read back by load_params."""
import jax
import numpy as np
import pytest

from rand_ensemble import ensemble, nn
from rand_ensemble.embedder import EmbedderConfig, apply_embedder, init_embedder
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.images import data, learn
from reference import conv_valid

LAYERS = ["conv0", "conv1", "conv2", "conv3", "dense", "embedding"]


def numpy_biased_net(params, images):
    """Blog net with a bias after every conv, float64 loops: (B, 32, 32, 3) -> (B, E)."""
    x = np.asarray(images, np.float64)
    for i, name in enumerate(LAYERS):
        p = {k: np.asarray(v, np.float64) for k, v in params[name].items()}
        x = conv_valid(x, p["kernel"], 2 if i < 4 else 1) + p["bias"]
        if name != "embedding":
            x = np.maximum(x, 0)
    x = x.mean(axis=(1, 2))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_bias_free_config_keeps_its_old_form():
    old = EmbedderConfig().to_dict()
    assert "bias" not in old
    assert set(old) == {"widths", "dense", "embedding_dim", "input_hw", "kernel_size", "stride",
                        "pool"}
    assert EmbedderConfig.from_dict(old) == EmbedderConfig()
    biased = EmbedderConfig(bias=True)
    assert biased.to_dict()["bias"] is True
    assert EmbedderConfig.from_dict(biased.to_dict()) == biased


def test_biases_start_at_zero_and_kernels_match_the_bias_free_init():
    key = jax.random.PRNGKey(3)
    plain = init_embedder(key, EmbedderConfig())
    biased = init_embedder(key, EmbedderConfig(bias=True))
    for name in LAYERS:
        assert "bias" not in plain[name]
        np.testing.assert_array_equal(np.asarray(biased[name]["kernel"]),
                                      np.asarray(plain[name]["kernel"]))
        cout = plain[name]["kernel"].shape[-1]
        np.testing.assert_array_equal(np.asarray(biased[name]["bias"]), np.zeros(cout))


@pytest.mark.parametrize("conv", [nn.conv, nn.conv_im2col])
def test_biased_net_matches_numpy_reference(conv):
    cfg = EmbedderConfig(bias=True)
    params = init_embedder(jax.random.PRNGKey(0), cfg)
    rng = np.random.default_rng(0)
    for name in LAYERS:                          # non-zero biases, so they matter
        params[name]["bias"] = rng.normal(0, 0.1, params[name]["bias"].shape).astype(np.float32)
    images = rng.random((3, 32, 32, 3)).astype(np.float32)
    ours = np.asarray(apply_embedder(params, images, cfg, conv=conv))
    np.testing.assert_allclose(ours, numpy_biased_net(params, images), atol=1e-4)


def test_trained_checkpoint_round_trip_and_architecture_check(tmp_path):
    cfg = EmbedderConfig(bias=True)
    params = ensemble.init_ensemble(jax.random.PRNGKey(1), 2, cfg)
    params["dense"]["bias"] = params["dense"]["bias"] + 0.5
    path = tmp_path / "ck.npz"
    learn.save_checkpoint(path, jax.device_get(params), cfg, {"learn": {"signal": "augment"}})
    loaded, loaded_cfg = data.load_params(path)
    assert loaded_cfg == cfg
    np.testing.assert_array_equal(loaded["dense"]["bias"], np.asarray(params["dense"]["bias"]))
    with pytest.raises(RandEnsembleError, match="names do not match"):
        data.load_params(path, EmbedderConfig())             # another architecture
