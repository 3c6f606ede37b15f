"""Shared helpers of the benchmark scripts: machine description, timing, FLOP count, the
PyTorch twin of an embedder config."""
import os
import platform
import statistics
import time

import numpy as np


def cpu_model():
    """CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine():
    """{"cpu", "cores", "python", "jax"} for the JSON record."""
    import jax
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "backend": jax.default_backend()}


def forward_flops(config):
    """Multiply-adds x 2 of ONE model on ONE image, from the config's layer shapes (VALID or
    SAME convs, 2x2 pools after any conv; pools and norms themselves are not counted)."""
    side, total = config.input_hw, 0
    pools = config.conv_pools + ("none",) * (len(config.layers()) - len(config.widths))
    for (name, (kh, kw, cin, cout), stride, _), pool in zip(config.layers(), pools):
        if name.startswith("conv") and config.padding == "SAME":
            side = -(-side // stride)
        else:
            side = (side - kh) // stride + 1
        total += 2 * side * side * kh * kw * cin * cout
        side = side // 2 if pool != "none" else side
    return total


def time_alternating(candidates, repeats):
    """{name: [seconds]}: each round runs every candidate once, so load noise hits all alike."""
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summary(seconds):
    """min and median of a list of timings."""
    return {"min_s": min(seconds), "median_s": statistics.median(seconds), "all_s": seconds}


# Dense float32 peak (TFLOP/s, no tensor cores / TF32) from the vendors' datasheets, by a
# substring of jax's device_kind; other devices use the measured jitted-matmul roof.
PEAK_F32_TFLOPS = {"H200": 67.0, "H100": 67.0, "A100": 19.5, "L40S": 91.6, "L4": 30.3,
                   "A10G": 31.2, "V100": 15.7, "T4": 8.1}


def on_accelerator():
    """True when JAX runs on a GPU/TPU (torch CPU comparisons are then left out)."""
    import jax
    return jax.default_backend() != "cpu"


def device_peak_gflops(measured_roof_gflops=None):
    """(peak GFLOP/s, where it came from) for the device JAX uses: a datasheet figure, or the
    measured jitted float32 matmul roof."""
    import jax
    kind = jax.devices()[0].device_kind
    for name, tflops in PEAK_F32_TFLOPS.items():
        if name.lower() in kind.lower():
            return tflops * 1e3, f"datasheet fp32 peak of {kind}"
    return measured_roof_gflops, f"measured jitted matmul roof on {kind}"


def torch_net(config):
    """The config's net in PyTorch (VALID or stride-1 SAME convs, GroupNorm, 2x2 pools, the 1x1
    dense and embedding layers, then the global pool; biases when config.bias), NCHW -> (B, E),
    not normalised."""
    import torch
    nn, layers, cin = torch.nn, [], config.in_channels
    for w, stride, pool in zip(config.widths, config.strides, config.conv_pools):
        pad = "same" if config.padding == "SAME" else 0
        layers.append(nn.Conv2d(cin, w, config.kernel_size, stride=stride, padding=pad,
                                bias=config.bias))
        if config.norm == "group":
            layers.append(nn.GroupNorm(config.norm_groups, w))
        layers.append(nn.ReLU())
        if pool != "none":
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
        cin = w
    if config.dense:
        layers += [nn.Conv2d(cin, config.dense, 1, bias=config.bias), nn.ReLU()]
        cin = config.dense
    layers.append(nn.Conv2d(cin, config.embedding_dim, 1, bias=config.bias))
    layers.append(nn.AdaptiveMaxPool2d(1) if config.pool == "max" else nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers, nn.Flatten())


def torch_load(net, params, config):
    """Copy ONE member's params (HWIO kernels, biases, GroupNorm scales and offsets) into
    `torch_net(config)` -> net, in eval mode."""
    import torch
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net if isinstance(m, torch.nn.GroupNorm)]
    with torch.no_grad():
        for conv, (name, *_) in zip(convs, config.layers()):
            kernel = np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1)   # -> OIHW
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"])))
        for i, norm in enumerate(norms):
            norm.weight.copy_(torch.from_numpy(np.asarray(params[f"norm{i}"]["scale"])))
            norm.bias.copy_(torch.from_numpy(np.asarray(params[f"norm{i}"]["offset"])))
    return net.eval()


STRIDE1_MIN_CIN = 8     # thinner first layers keep their patches (K = 9 is cheap)


def stride1_vjp_applies(kernel_shape, stride):
    """Whether `stride1_vjp_conv` lowers a layer differently from im2col: a stride-1 k x k
    (k > 1) conv with at least STRIDE1_MIN_CIN input channels; kernel_shape (kh, kw, Cin, Cout)."""
    kh, kw, cin, _ = kernel_shape
    return stride == 1 and kh * kw > 1 and cin >= STRIDE1_MIN_CIN


def stride1_vjp_conv():
    """A training-step conv that LOST, kept as a benchmark candidate (README "Performance"):
    stride-1 k x k layers with >= STRIDE1_MIN_CIN input channels run lax.conv forward with a
    hand-written gradient (input gradient: the stride-1 conv of the output gradient with the
    flipped, transposed kernel; kernel gradient: one (Cin, B*H'*W') @ (B*H'*W', Cout) matmul per
    tap, no patch matrix), every other layer `nn.conv_im2col`. Per layer it beats im2col's
    forward + backward by 1.18x on `vgg` (bench_layers), but the whole training step does not
    move (bench_train). -> conv(params, x, stride, padding), the signature of `nn.conv`."""
    from functools import partial

    import jax
    import jax.numpy as jnp
    from jax import lax

    from rand_ensemble.model import nn
    dn = nn.CONV_DIMENSION_NUMBERS

    @partial(jax.custom_vjp, nondiff_argnums=(2,))
    def conv_s1(x, kernel, pads):
        return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=dn)

    def fwd(x, kernel, pads):
        return conv_s1(x, kernel, pads), (x, kernel)

    def bwd(pads, residuals, g):
        x, kernel = residuals
        kh, kw = kernel.shape[:2]
        back = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kh, kw), pads))
        dx = lax.conv_general_dilated(g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), (1, 1), back,
                                      dimension_numbers=dn)
        xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        ho, wo = g.shape[1:3]
        taps = [jnp.einsum("bhwc,bhwo->co", xp[:, i:i + ho, j:j + wo, :], g)
                for i in range(kh) for j in range(kw)]
        return dx, jnp.stack(taps).reshape(kernel.shape)

    conv_s1.defvjp(fwd, bwd)

    def conv(params, x, stride=1, padding="VALID"):
        kh, kw = params["kernel"].shape[:2]
        if stride1_vjp_applies(params["kernel"].shape, stride):
            pads = (tuple(nn.same_padding(n, k, 1) for n, k in zip(x.shape[-3:-1], (kh, kw)))
                    if padding == "SAME" else ((0, 0), (0, 0)))
            return nn.add_bias(params, conv_s1(x, params["kernel"], pads))
        return nn.conv_im2col(params, x, stride, padding)
    return conv
