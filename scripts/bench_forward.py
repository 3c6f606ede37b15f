"""Ensemble forward pass, side by side in ONE warm process: blog vmap, lax.map, embed, torch, roof.

    python scripts/bench_forward.py --models 10 --repeats 7 --json bench_forward.json
    python scripts/bench_forward.py --family vgg --models 10   # the real-data family, 28 x 28 x 1
"""
import argparse
import gzip
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's idle threads must not spin under JAX

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (device_peak_gflops, forward_flops, machine, on_accelerator,  # noqa: E402
                          summary, time_alternating, torch_load, torch_net)

from rand_ensemble.model import ensemble
from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.model import nn  # noqa: E402
from rand_ensemble.model.config import FAMILY_INPUTS, from_flags  # noqa: E402

BLOG_SHAPE = (100, 11, 32, 32, 3)


def load_images(path, config):
    """The blog test set (.npy or .npy.gz), or as many random images of the config's input:
    (1100, H, W, C)."""
    if path and os.path.exists(path):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            images = np.load(f, allow_pickle=False)
        return images.reshape(-1, *images.shape[-3:]).astype(np.float32), path
    rng = np.random.default_rng(0)
    shape = (int(np.prod(BLOG_SHAPE[:2])), config.input_hw, config.input_hw, config.in_channels)
    return rng.uniform(0, 1, shape).astype(np.float32), "random"


def forward_lax_map(params, images, config):
    """lax.map over members, lax.conv on every layer -> (M, B, E): embed's choice for stride-1
    k x k layers only (it loses on the blog's strided ones)."""
    return jax.lax.map(lambda p: ensemble.apply_embedder(p, images, config), params)


def forward_im2col_batched(params, images, config):
    """Losing lowering kept for the record: every layer one matmul with M as its batch dimension.

    The first layer's input is shared, so its M kernels apply to one set of patches; slower than
    ensemble.forward_im2col on XLA:CPU (the (M, B*P, K) patch tensors fall out of cache).
    """
    x = None
    for name, (kh, kw, cin, cout), stride, relu in config.layers():
        kernel = params[name]["kernel"].reshape(-1, kh * kw * cin, cout)  # (M, K, C), HWIO order
        if x is None:
            patches = nn.im2col(images, kh, stride)               # (B, H', W', K), shared
            x = jnp.einsum("bhwk,mkc->mbhwc", patches, kernel)    # (M, B, H', W', C)
        else:
            patches = nn.im2col(x, kh, stride)                    # (M, B, H', W', K)
            x = jnp.einsum("mbhwk,mkc->mbhwc", patches, kernel)   # (M, B, H', W', C)
        if relu:
            x = jax.nn.relu(x)
    return nn.l2_normalize(jnp.mean(x, axis=(2, 3)), axis=-1)     # (M, B, E)


def forward_first_layer_shared(params, images, config):
    """Losing lowering kept for the record (blog net): the first layer's input is the same
    images for every member, so its patches are built once and multiplied by all M kernels in
    one GEMM, (B*H'*W', K) x (K, M*C); each member then takes its slice inside the lax.map and
    runs the rest as embed does. Slower on XLA:CPU: the (B, H', W', M, C) activation of a chunk
    falls out of cache (1.5-1.6x embed's time on the Intel Xeon host)."""
    layers = config.layers()
    name, (kh, _, cin, cout), stride, relu = layers[0]
    kernel = params[name]["kernel"]                                  # (M, kh, kw, cin, C)
    m, k = kernel.shape[0], kh * kh * cin
    patches = nn.im2col(images, kh, stride)                          # (B, H', W', K), shared
    b, h, w, _ = patches.shape
    first = patches.reshape(-1, k) @ jnp.moveaxis(kernel.reshape(m, k, cout), 0, 1).reshape(
        k, m * cout)                                                 # (B*H'*W', M*C)
    first = first.reshape(b, h, w, m, cout)
    first = jax.nn.relu(first) if relu else first

    def rest(args):
        p, member = args
        x = jnp.take(first, member, axis=3)                          # (B, H', W', C)
        for lname, _, lstride, lrelu in layers[1:]:
            x = nn.conv_forward_cpu(p[lname], x, stride=lstride)
            x = jax.nn.relu(x) if lrelu else x
        return nn.l2_normalize(jnp.mean(x, axis=(1, 2)), axis=-1)    # (B, E)
    others = {n: v for n, v in params.items() if n != name}
    return jax.lax.map(rest, (others, jnp.arange(m)))                # (M, B, E)


def forward_all_im2col(params, images, config):
    """embed's lowering before stride-1 k x k convs went to lax.conv: every layer patches @
    kernel, lax.map over members -> (M, B, E) (the same as embed for the blog net)."""
    return jax.lax.map(lambda p: ensemble.apply_embedder(p, images, config, conv=nn.conv_im2col),
                       params)


def jax_candidates(params, images, config):
    """name -> zero-arg callable that runs warm and blocks; each checked against embed. The
    grouped-conv vmap runs for the blog net (its formulation) and on accelerators; the
    M-batched matmul needs the blog's VALID, pool-free layers."""
    x = jnp.asarray(images)
    chunks = [jnp.asarray(images[i:i + 128]) for i in range(0, len(images), 128)]

    def chunked(fn):                    # over 128-image chunks, as embed streams
        jitted = jax.jit(fn, static_argnums=2)
        return lambda: np.concatenate([np.asarray(jitted(params, c, config)) for c in chunks], 1)
    blog_net = config.padding == "VALID" and not config.block_pools and config.norm == "none"
    lax_map = jax.jit(forward_lax_map, static_argnums=2)
    out = {"lax_map": lambda: np.asarray(lax_map(params, x, config)),
           "embed": lambda: ensemble.embed(params, images, config)}
    if blog_net or on_accelerator():
        blog = jax.jit(ensemble.forward_vmap, static_argnums=2)      # the blog's one big vmap
        out["blog_vmap"] = lambda: np.asarray(blog(params, x, config))
    if blog_net:
        out["im2col_batched"] = chunked(forward_im2col_batched)
        out["shared_layer0"] = chunked(forward_first_layer_shared)
    else:
        out["embed_all_im2col"] = chunked(forward_all_im2col)
    return out


def torch_candidates(params, images, config):
    """The same nets in PyTorch (weights copied from params): per-model loop and torch.func vmap."""
    if on_accelerator():
        print("JAX runs on an accelerator: the CPU PyTorch rows are left out")
        return {}
    try:
        import torch
        from torch.func import functional_call, stack_module_state, vmap
    except ImportError:
        print("torch not importable: skipping the PyTorch rows (pip install torch==2.13.0)")
        return {}

    class Normalize(torch.nn.Module):
        def forward(self, z):                                    # (B, E) -> unit rows
            return torch.nn.functional.normalize(z, dim=-1, eps=1e-12)
    torch.set_num_threads(os.cpu_count())
    m = ensemble.num_models(params)
    nets = [torch.nn.Sequential(torch_load(torch_net(config), jax.tree_util.tree_map(
        lambda a: np.asarray(a)[i], params), config), Normalize()).eval() for i in range(m)]
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # (N, C, H, W)
    stacked, buffers = stack_module_state(nets)

    def one(p, b, xx):
        return functional_call(nets[0], (p, b), (xx,))

    batched = vmap(one, in_dims=(0, 0, None))

    def loop():
        with torch.inference_mode():
            return np.stack([net(x).numpy() for net in nets])    # (M, N, E)

    def func_vmap():
        with torch.inference_mode():
            return batched(stacked, buffers, x).numpy()          # (M, N, E)

    return {"torch_loop": loop, "torch_func_vmap": func_vmap}


def matmul_roof(size):
    """A jitted square float32 matmul: (callable, its FLOP count)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    mm = jax.jit(lambda u: u @ u)
    return (lambda: mm(a).block_until_ready()), 2 * size ** 3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=10, help="M, ensemble members")
    p.add_argument("--family", default="blog", choices=sorted(FAMILY_INPUTS),
                   help="embedder family at its input (vgg: 28 x 28 x 1 random images)")
    p.add_argument("--test-set", "--images", dest="images",
                   default=os.environ.get("RAND_ENSEMBLE_BLOG_TEST_SET"),
                   help="blog test set .npy(.gz); random images of its shape when absent")
    p.add_argument("--repeats", type=int, default=7, help="alternating rounds (min and median)")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the roof matmul")
    p.add_argument("--json", default=None, help="write the results here (atomic)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 models, 110 images, 2 rounds")
    args = p.parse_args(argv)
    config = from_flags({"family": args.family, **FAMILY_INPUTS[args.family]})
    images, source = load_images(args.images if args.family == "blog" else None, config)
    if args.quick:
        args.models, args.repeats, args.matmul_size, images = 2, 2, 512, images[:110]
    params = ensemble.init_ensemble(jax.random.PRNGKey(0), args.models, config)
    n, m = images.shape[0], args.models
    flops = forward_flops(config) * n * m

    candidates = {**jax_candidates(params, images, config),
                  **torch_candidates(params, images, config)}
    roof, roof_flops = matmul_roof(args.matmul_size)
    reference = candidates["embed"]()
    for name, fn in candidates.items():                           # warm up and check numerics
        err = float(np.abs(fn() - reference).max())
        print(f"{name:16s} max |diff| vs embed {err:.2e}")
    roof()
    times = time_alternating({**candidates, "matmul_roof": roof}, args.repeats)

    info = machine()
    rows = {name: summary(ts) for name, ts in times.items()}
    roof_gflops = roof_flops / rows["matmul_roof"]["min_s"] / 1e9
    peak_gflops, peak_source = device_peak_gflops(roof_gflops)
    for name, row in rows.items():
        if name == "matmul_roof":
            row["gflops"] = roof_gflops
            continue
        row["images_models_per_s"] = n * m / row["min_s"]
        row["gflops"] = flops / row["min_s"] / 1e9
        row["fraction_of_roof"] = row["gflops"] / roof_gflops
        row["fraction_of_peak"] = row["gflops"] / peak_gflops
    embed_s = rows["embed"]["min_s"]
    ratios = {f"embed_speedup_vs_{name}": row["min_s"] / embed_s
              for name, row in rows.items() if name not in ("embed", "matmul_roof")}

    print(f"\n{info['cpu']}, {info['cores']} cores, jax {info['jax']} ({info['backend']}); "
          f"M={m}, N={n} images ({source}), {flops / 1e9:.1f} GFLOP, {args.repeats} rounds")
    print(f"{'candidate':16s} {'min s':>8s} {'median s':>9s} {'img*M/s':>9s} {'GFLOP/s':>8s} "
          f"{'of roof':>8s} {'embed x':>8s}")
    for name, row in rows.items():
        if name == "matmul_roof":
            print(f"{name:16s} {row['min_s']:8.3f} {row['median_s']:9.3f} {'':>9s} "
                  f"{row['gflops']:8.1f} {1:8.0%}")
            continue
        print(f"{name:16s} {row['min_s']:8.3f} {row['median_s']:9.3f} "
              f"{row['images_models_per_s']:9.0f} {row['gflops']:8.1f} "
              f"{row['fraction_of_roof']:8.0%} {row['min_s'] / embed_s:8.2f}")
    print(f"peak {peak_gflops:.0f} GFLOP/s ({peak_source}): embed at "
          f"{rows['embed']['fraction_of_peak']:.1%} of it")
    if args.json:
        fileio.save_json(args.json, {
            "machine": info, "family": args.family, "models": m, "images": n,
            "image_source": source,
            "gflop": flops / 1e9, "repeats": args.repeats, "results": rows, "ratios": ratios,
            "roof_gflops": roof_gflops, "peak_gflops": peak_gflops, "peak_source": peak_source})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
