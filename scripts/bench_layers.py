"""Per-layer profile of one member's convolutions: JAX's lowerings against PyTorch, forward and
forward + backward, each layer alone at the shape it has inside the net.

    python scripts/bench_layers.py [--family blog|vgg] [--batch 128] [--repeats 20] [--json J]
    python scripts/bench_layers.py --family blog --batch 256   # a training step's 2 x 128 views
    python scripts/bench_layers.py --quick                                      # smoke run

What bounds `embed` and the training step (README, "Performance"): for every conv layer of the
family (input side, channels, stride, padding from the config), the time of
  jax im2col fwd        `nn.conv_im2col` (patches by strided slices + one 2-D GEMM), jitted
  jax lax.conv fwd      `nn.conv` (XLA's conv emitter), jitted
  jax im2col fwd+bwd    value and gradient (input and kernel) of <conv_im2col(x, w), g>
  jax s1-vjp fwd+bwd    the same through `bench_common.stride1_vjp_conv` (lax.conv with a
                        hand-written gradient for wide stride-1 k x k layers): faster per
                        layer, no faster in the step, so not the training lowering
  jax lax.conv fwd+bwd  the same through `nn.conv` (--with-conv-grad; slow on XLA:CPU)
  jax GEMM alone        the layer's (B*H'*W', K) @ (K, Cout) matmul with the patches given
  torch fwd / fwd+bwd   `torch.nn.functional.conv2d` on NCHW tensors, the same maths
and the jitted 2048^2 float32 matmul roof in the same process. Candidates alternate round by
round (`bench_common.time_alternating`); min and median microseconds, GFLOP/s (forward 2 x
multiply-adds; fwd+bwd counted as 3 x forward) and the ratio torch / jax (> 1: JAX is faster).
Every JAX output is checked against torch's (forward and both gradients, 1e-4 relative).
"""
import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's idle threads must not spin under JAX

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import machine, stride1_vjp_conv, summary, time_alternating  # noqa: E402

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.model.config import FAMILY_INPUTS, from_flags  # noqa: E402


def conv_layers(config):
    """[(name, kernel (kh, kw, cin, cout), stride, padding, input side)] of the conv layers
    (1x1 dense / embedding layers included), the side each sees inside the net."""
    side, out = config.input_hw, []
    pools = config.conv_pools + ("none",) * (len(config.layers()) - len(config.widths))
    for (name, shape, stride, _), pool in zip(config.layers(), pools):
        padding = config.padding if name.startswith("conv") else "VALID"
        out.append((name, tuple(shape), stride, padding, side))
        side = -(-side // stride) if padding == "SAME" else (side - shape[0]) // stride + 1
        side = side // 2 if pool != "none" else side
    return out


def layer_candidates(kernel_shape, stride, padding, side, batch, seed, with_conv_grad):
    """{name: thunk} for one layer, its forward MFLOP, and the max relative difference of every
    JAX output from torch's."""
    import jax
    import jax.numpy as jnp
    import torch

    from rand_ensemble.model import nn

    kh, kw, cin, cout = kernel_shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, side, side, cin)).astype(np.float32)
    w = (rng.standard_normal(kernel_shape) / np.sqrt(kh * kw * cin)).astype(np.float32)
    params = {"kernel": jnp.asarray(w)}
    xj = jnp.asarray(x)

    def fwd(conv):
        return jax.jit(lambda p, v: conv(p, v, stride=stride, padding=padding))

    def fwd_bwd(conv):
        def loss(p, v, g):
            return jnp.vdot(conv(p, v, stride=stride, padding=padding), g)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    f_im2col, f_conv = fwd(nn.conv_im2col), fwd(nn.conv)
    out = f_im2col(params, xj)
    g = jnp.asarray(rng.standard_normal(out.shape).astype(np.float32))
    b_im2col, b_s1 = fwd_bwd(nn.conv_im2col), fwd_bwd(stride1_vjp_conv())
    patches = jax.jit(lambda v: nn.im2col(v, kh, stride, padding))(xj)
    rows = patches.reshape(-1, patches.shape[-1])
    gemm = jax.jit(lambda a, b: a @ b)
    wk = params["kernel"].reshape(-1, cout)

    pad = 0 if padding == "VALID" else "same"
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    gt = torch.from_numpy(np.array(g).transpose(0, 3, 1, 2).copy())
    if padding == "SAME" and stride > 1:
        raise SystemExit("bench_layers: SAME with stride > 1 is not in any family")

    def torch_fwd():
        with torch.no_grad():
            return torch.nn.functional.conv2d(xt, wt, stride=stride, padding=pad)

    def torch_fwd_bwd():
        xr, wr = xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)
        y = torch.nn.functional.conv2d(xr, wr, stride=stride, padding=pad)
        y.backward(gt)
        return y, xr.grad, wr.grad

    # Correctness: every JAX output against torch's (forward, input and kernel gradients).
    y_t, gx_t, gw_t = (t.detach().numpy() for t in torch_fwd_bwd())
    checks = [(np.asarray(out), y_t.transpose(0, 2, 3, 1)),
              (np.asarray(f_conv(params, xj)), y_t.transpose(0, 2, 3, 1))]
    for grads in (b_im2col, b_s1):
        _, (gp, gx) = grads(params, xj, g)
        checks += [(np.asarray(gx), gx_t.transpose(0, 2, 3, 1)),
                   (np.asarray(gp["kernel"]), gw_t.transpose(2, 3, 1, 0))]
    error = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12)) for a, b in checks)

    cands = {
        "jax im2col fwd": lambda: f_im2col(params, xj).block_until_ready(),
        "jax lax.conv fwd": lambda: f_conv(params, xj).block_until_ready(),
        "jax GEMM alone": lambda: gemm(rows, wk).block_until_ready(),
        "torch fwd": torch_fwd,
        "jax im2col fwd+bwd": lambda: jax.block_until_ready(b_im2col(params, xj, g)),
        "jax s1-vjp fwd+bwd": lambda: jax.block_until_ready(b_s1(params, xj, g)),
        "torch fwd+bwd": torch_fwd_bwd,
    }
    if with_conv_grad:
        b_conv = fwd_bwd(nn.conv)
        cands["jax lax.conv fwd+bwd"] = lambda: jax.block_until_ready(b_conv(params, xj, g))
    for fn in cands.values():                                    # compile and warm
        fn()
    side_out = out.shape[1]
    mflop = 2 * batch * side_out * side_out * kh * kw * cin * cout / 1e6
    return cands, mflop, error


def matmul_roof(size):
    """GFLOP/s of a jitted size^2 float32 matmul (best of 5)."""
    import time

    import jax
    import jax.numpy as jnp
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="blog", choices=sorted(FAMILY_INPUTS))
    p.add_argument("--in-channels", type=int, default=None, help="default: the family's")
    p.add_argument("--batch", type=int, default=128, help="images per call (a training step "
                   "of B pairs sees 2B)")
    p.add_argument("--repeats", type=int, default=20, help="alternating rounds")
    p.add_argument("--with-conv-grad", action="store_true",
                   help="also time the gradient through lax.conv (slow on XLA:CPU)")
    p.add_argument("--json", default=None, help="write the results here (atomic)")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 8, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 8, 2
    flags = {"family": args.family, **FAMILY_INPUTS[args.family]}    # vgg: 28 x 28 x 1
    if args.in_channels:
        flags["in_channels"] = args.in_channels
    config = from_flags(flags)
    roof = matmul_roof(512 if args.quick else 2048)
    print(f"{args.family}, batch {args.batch}, roof {roof:.0f} GFLOP/s", flush=True)
    layers, totals = [], {}
    for i, (name, shape, stride, padding, side) in enumerate(conv_layers(config)):
        cands, mflop, error = layer_candidates(shape, stride, padding, side, args.batch, i,
                                               args.with_conv_grad)
        times = time_alternating(cands, args.repeats)
        row = {"layer": name, "kernel": list(shape), "stride": stride, "padding": padding,
               "input_side": side, "mflop": mflop, "max_rel_error_vs_torch": error,
               "candidates": {}}
        for cand, secs in times.items():
            flop = mflop * (3 if "bwd" in cand else 1)
            s = summary(secs)
            row["candidates"][cand] = {**s, "gflops": flop / 1e3 / s["min_s"],
                                       "of_roof": flop / 1e3 / s["min_s"] / roof}
            totals[cand] = totals.get(cand, 0.0) + s["min_s"]
        c = row["candidates"]
        row["torch_over_jax_fwd"] = c["torch fwd"]["min_s"] / c["jax im2col fwd"]["min_s"]
        row["torch_over_jax_fwd_bwd"] = (c["torch fwd+bwd"]["min_s"]
                                         / c["jax im2col fwd+bwd"]["min_s"])
        layers.append(row)
        print(f"{name} {shape} s{stride} {padding} side {side}: {mflop:.1f} MFLOP, err "
              f"{error:.1e}; " + "; ".join(f"{k} {v['min_s'] * 1e6:.0f} us "
                                            f"({v['of_roof']:.0%})" for k, v in c.items()),
              flush=True)
        if error > 1e-4:
            raise SystemExit(f"bench_layers: {name}: JAX differs from torch by {error:.1e}")
    total_ratio = {"fwd": totals["torch fwd"] / totals["jax im2col fwd"],
                   "fwd_bwd": totals["torch fwd+bwd"] / totals["jax im2col fwd+bwd"],
                   "fwd_bwd_s1_vjp": totals["torch fwd+bwd"] / totals["jax s1-vjp fwd+bwd"]}
    print("sum over layers (min us): " + "; ".join(f"{k} {v * 1e6:.0f}" for k, v in
                                                   totals.items())
          + f"; torch / jax: fwd {total_ratio['fwd']:.2f}x, fwd+bwd "
            f"{total_ratio['fwd_bwd']:.2f}x (im2col, the training lowering), "
            f"{total_ratio['fwd_bwd_s1_vjp']:.2f}x (s1-vjp)", flush=True)
    result = {"machine": machine(), "family": args.family, "config": config.to_dict(),
              "batch": args.batch, "repeats": args.repeats, "roof_gflops": roof,
              "layers": layers, "sum_min_s": totals, "torch_over_jax": total_ratio}
    if args.json:
        fileio.save_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
