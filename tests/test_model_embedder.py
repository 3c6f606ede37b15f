"""The single-model embedder: configs and their checks, the architecture fields (SAME, strides,
pools, GroupNorm, channels; the named families) against a numpy reference in both lowerings and
by eval_shape, EmbedderConfig(bias=...) (old configs unchanged, zero-init biases, the biased net
against a numpy reference in both lowerings), and trained checkpoints read back by load_params."""
import jax
import numpy as np
import pytest

from rand_ensemble.model import checkpoint, ensemble, nn
from rand_ensemble.model.embedder import EmbedderConfig, apply_embedder, init_embedder
from rand_ensemble.errors import RandEnsembleError

LAYERS = ["conv0", "conv1", "conv2", "conv3", "dense", "embedding"]


def to_bfloat16(a):
    """float32 -> the nearest bfloat16 (ties to even), as float32, by bit arithmetic."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("conv", [nn.conv, nn.conv_im2col, nn.conv_forward_cpu])
@pytest.mark.parametrize("stride,padding", [(2, "VALID"), (1, "SAME")])
def test_bf16_conv_sums_bfloat16_operands_in_float32(conv, stride, padding, reference):
    """compute_dtype=bfloat16: a float64 loop over the bf16-rounded image and kernel (+ bias)
    within float32 summation error, and measurably not the float32 conv."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 9, 5)).astype(np.float32)
    params = {"kernel": rng.normal(size=(3, 3, 5, 6)).astype(np.float32),
              "bias": rng.normal(size=6).astype(np.float32)}
    got = conv(params, x, stride=stride, padding=padding, compute_dtype=jax.numpy.bfloat16)
    assert got.dtype == np.float32
    rounded = reference.conv_padded(to_bfloat16(x).astype(np.float64),
                                    to_bfloat16(params["kernel"]).astype(np.float64),
                                    stride, padding) + params["bias"]
    np.testing.assert_allclose(np.asarray(got), rounded, rtol=1e-5, atol=1e-5)
    exact = reference.conv_padded(x.astype(np.float64), params["kernel"].astype(np.float64),
                                  stride, padding) + params["bias"]
    assert np.abs(exact - rounded).max() > 1e-2             # the rounding is there to see
    with pytest.raises(RandEnsembleError, match="precision must be one of"):
        ensemble.member_conv("float16")
    assert ensemble.member_conv("bf16") is ensemble.member_conv("bf16")


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


@pytest.mark.parametrize("conv", [nn.conv, nn.conv_im2col, nn.conv_forward_cpu])
def test_biased_net_matches_numpy_reference(conv, reference):
    cfg = EmbedderConfig(bias=True)
    params = init_embedder(jax.random.PRNGKey(0), cfg)
    rng = np.random.default_rng(0)
    for name in LAYERS:                          # non-zero biases, so they matter
        params[name]["bias"] = rng.normal(0, 0.1, params[name]["bias"].shape).astype(np.float32)
    images = rng.random((3, 32, 32, 3)).astype(np.float32)
    ours = np.asarray(apply_embedder(params, images, cfg, conv=conv))
    np.testing.assert_allclose(ours, reference.biased_embed(params, images), atol=1e-4)


def test_trained_checkpoint_round_trip_and_architecture_check(tmp_path):
    cfg = EmbedderConfig(bias=True)
    params = ensemble.init_ensemble(jax.random.PRNGKey(1), 2, cfg)
    params["dense"]["bias"] = params["dense"]["bias"] + 0.5
    path = tmp_path / "ck.npz"
    checkpoint.save_params(path, jax.device_get(params), cfg, {"learn": {"signal": "augment"}})
    loaded, loaded_cfg = checkpoint.load_params(path)
    assert loaded_cfg == cfg
    np.testing.assert_array_equal(loaded["dense"]["bias"], np.asarray(params["dense"]["bias"]))
    with pytest.raises(RandEnsembleError, match="names do not match"):
        checkpoint.load_params(path, EmbedderConfig())             # another architecture


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
    ({"pool": "sum"}, "pool"),
    ({"padding": "FULL"}, "padding"),
    ({"norm": "batch"}, "norm"),
    ({"norm": "group", "norm_groups": 5}, "divide"),
    ({"block_pools": ("max",)}, "block_pools"),
    ({"stride": (2, 2)}, "one entry per conv"),
    ({"dense": -1}, "dense >= 0"),
    ({"widths": ()}, "widths"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(RandEnsembleError, match=match):
        ensemble.EmbedderConfig(**kwargs)


NEW_FIELDS = {"in_channels", "padding", "block_pools", "norm", "norm_groups"}
VGG28 = EmbedderConfig.preset("vgg", input_hw=28, in_channels=1)
MIXED = EmbedderConfig(widths=(8, 8, 16), stride=(1, 2, 1), padding="SAME", kernel_size=3,
                       block_pools=("max", "none", "mean"), norm="group", norm_groups=4,
                       dense=12, embedding_dim=6, input_hw=15, in_channels=2, pool="max",
                       bias=True)


def test_new_fields_at_defaults_are_not_stored():
    assert not NEW_FIELDS & set(EmbedderConfig().to_dict())
    assert not NEW_FIELDS & set(EmbedderConfig(bias=True).to_dict())
    for cfg in (VGG28, MIXED, EmbedderConfig.preset("blog")):
        assert EmbedderConfig.from_dict(cfg.to_dict()) == cfg
    assert EmbedderConfig.preset("blog") == EmbedderConfig()
    assert MIXED.to_dict()["stride"] == [1, 2, 1]


def test_blog_params_layout_is_unchanged():
    shapes = jax.tree_util.tree_map(lambda a: a.shape, init_embedder(jax.random.PRNGKey(0)))
    assert shapes == {"conv0": {"kernel": (3, 3, 3, 32)}, "conv1": {"kernel": (3, 3, 32, 64)},
                      "conv2": {"kernel": (3, 3, 64, 128)}, "conv3": {"kernel": (3, 3, 128, 256)},
                      "dense": {"kernel": (1, 1, 256, 32)}, "embedding": {"kernel": (1, 1, 32, 32)}}


def test_family_presets():
    assert VGG28.final_hw == 7 and VGG28.in_channels == 1
    params = init_embedder(jax.random.PRNGKey(0), VGG28)
    assert set(params) == {"conv0", "conv1", "conv2", "conv3", "embedding"}  # dense=0, no norm
    assert params["conv1"]["kernel"].shape == (3, 3, 32, 64)
    grouped = init_embedder(jax.random.PRNGKey(0), EmbedderConfig.preset(
        "vgg", input_hw=28, in_channels=1, norm="group"))
    assert grouped["norm1"]["scale"].shape == (64,)
    with pytest.raises(RandEnsembleError, match="unknown embedder family"):
        EmbedderConfig.preset("resnet")


@pytest.mark.parametrize("conv", [nn.conv, nn.conv_im2col, nn.conv_forward_cpu])
@pytest.mark.parametrize("cfg", [MIXED, EmbedderConfig.preset("vgg", input_hw=12, in_channels=1,
                                                              widths=(8, 8, 16, 16))])
def test_configured_net_matches_numpy_reference(cfg, conv, reference):
    params = init_embedder(jax.random.PRNGKey(0), cfg)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(                  # non-trivial biases, scales and offsets
        lambda a: np.asarray(a) + rng.normal(0, 0.1, a.shape).astype(np.float32), params)
    images = rng.random((3, cfg.input_hw, cfg.input_hw, cfg.in_channels)).astype(np.float32)
    ours = np.asarray(apply_embedder(params, images, cfg, conv=conv))
    np.testing.assert_allclose(ours, reference.config_embed(params, images, cfg), atol=1e-4)


@pytest.mark.parametrize("cfg", [VGG28, MIXED, EmbedderConfig()])
def test_shape_contract_and_final_side(cfg):
    params = jax.eval_shape(lambda: init_embedder(jax.random.PRNGKey(0), cfg))
    spec = jax.ShapeDtypeStruct((5, cfg.input_hw, cfg.input_hw, cfg.in_channels), np.float32)
    out = jax.eval_shape(lambda p, x: apply_embedder(p, x, cfg), params, spec)
    assert out.shape == (5, cfg.embedding_dim)
    seen = []

    def spy(p, x, stride=1, padding="VALID"):       # the input of the first 1x1 layer
        if p["kernel"].shape[:2] == (1, 1) and not seen:
            seen.append(x.shape)
        return nn.conv(p, x, stride=stride, padding=padding)
    jax.eval_shape(lambda p, x: apply_embedder(p, x, cfg, conv=spy), params, spec)
    assert seen[0][1:3] == (cfg.final_hw, cfg.final_hw)


def test_num_params_counts_every_leaf():
    """`EmbedderConfig.num_params` (the memory checks' count) = the leaves init_embedder makes."""
    from rand_ensemble.model.embedder import FAMILIES
    for name in FAMILIES:
        for bias in (False, True):
            config = EmbedderConfig.preset(name, bias=bias)
            params = init_embedder(jax.random.PRNGKey(0), config)
            assert config.num_params == sum(x.size for x in jax.tree_util.tree_leaves(params))
