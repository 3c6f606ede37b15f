"""Training throughput, side by side in ONE warm process: M members in one jitted step
(`model.ensemble.over_members`, lowered as vmap and as lax.map) against M separate
single-member jitted steps, and against a PyTorch equivalent (M nets stepped in a loop) when
torch is importable; `train`'s step is also timed with `--precision bf16` (bfloat16 conv
operands), and its ratio to the PyTorch loop is printed with and without it.

Throughput counts images x members per second: each step embeds 2 augmented views of B images
per member, so one step is 2 * B * M. Rounds alternate candidates, so load noise hits all alike.

    python scripts/bench_train.py --members 4 --batch-size 128 --repeats 5 --json bench_train.json
    python scripts/bench_train.py --family vgg      # the real-data family at 28 x 28 x 1
    python scripts/bench_train.py --quick
"""
import argparse
import dataclasses
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's idle threads must not spin under JAX

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (device_peak_gflops, forward_flops, machine,  # noqa: E402
                          on_accelerator, stride1_vjp_applies, stride1_vjp_conv, summary,
                          time_alternating, torch_net)

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.model import ensemble
from rand_ensemble.model.config import FAMILY_INPUTS, from_flags  # noqa: E402
from rand_ensemble.model.embedder import init_embedder  # noqa: E402
from rand_ensemble.learn import trainer
from rand_ensemble.learn import signals  # noqa: E402


def measured_roof_gflops(size=2048, repeats=7):
    """The jitted float32 matmul's GFLOP/s (min time of a few runs)."""
    import time
    import jax.numpy as jnp
    x = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    mm = jax.jit(lambda u: u @ u)
    mm(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9


def family_config(family):
    """The benchmarked architecture: the family at its input, with biases (as trained)."""
    return from_flags({"family": family, **FAMILY_INPUTS[family]}, bias=True)


# The bf16 step (`LearnConfig.precision`, bfloat16 conv operands, float32 sums) in the
# backend's step lowering, the one `train --precision bf16` runs.
BF16_ROW = {"map": "jax_lax_map_bf16", "vmap": "jax_vmapped_bf16"}
F32_ROW = {"map": "jax_lax_map", "vmap": "jax_vmapped"}


def jax_candidates(m, b, steps, images, config):
    """{"jax_vmapped": one jit(vmap) step of M members, "jax_lax_map": one jit of lax.map over
    members, "jax_separate": M single-member jitted steps, and on CPU, for a family with wide
    stride-1 convs, "jax_lax_map_s1_vjp": lax.map with those convs as lax.conv with a
    hand-written gradient (`bench_common.stride1_vjp_conv`, a lowering that lost)},
    each running `steps` steps with the backend's training conv (`ensemble.member_conv`);
    compiled and warmed before timing."""
    cfg = trainer.LearnConfig(members=m, batch_size=b)
    conv = ensemble.member_conv()
    opt = trainer.make_optimizer(cfg)
    member_step = trainer.make_member_step(config, cfg, opt, conv)
    vmapped, single = ensemble.over_members(member_step, 2, "vmap"), jax.jit(member_step)
    mapped = ensemble.over_members(member_step, 2, "map")
    how = ensemble.lowering("step")                                   # what `train` runs
    bf16 = ensemble.over_members(trainer.make_member_step(
        config, dataclasses.replace(cfg, precision="bf16"), opt, ensemble.member_conv("bf16")),
        2, how)
    with_s1 = not on_accelerator() and any(stride1_vjp_applies(shape, stride)
                                           for _, shape, stride, _ in config.layers())
    if with_s1:
        mapped_s1 = ensemble.over_members(
            trainer.make_member_step(config, cfg, opt, stride1_vjp_conv()), 2, "map")
    batches = signals.Batches("augment", len(images), m, b, 0)
    images = jax.device_put(images)
    groups = jax.device_put(np.arange(len(images), dtype=np.int32))
    params = ensemble.init_members(init_embedder, jax.random.PRNGKey(0), m, config)
    state = {"v": (params, jax.vmap(opt.init)(params)), "m": (params, jax.vmap(opt.init)(params)),
             "s1": (params, jax.vmap(opt.init)(params)), "b": (params, jax.vmap(opt.init)(params)),
             "s": [(p, opt.init(p)) for p in (jax.tree.map(lambda a, i=i: a[i], params)
                                                for i in range(m))]}

    def together(step, name):
        def run():
            p, s = state[name]
            for i in range(1, steps + 1):
                _, keys, anc, pos = batches[i]
                p, s, loss = step(p, s, keys, anc, pos, images, groups)
            jax.block_until_ready(p)
            state[name] = (p, s)
        return run

    def run_separate():
        out = []
        for k, (p, s) in enumerate(state["s"]):
            for i in range(1, steps + 1):
                _, keys, anc, pos = batches[i]
                p, s, loss = single(p, s, keys[k], anc[k], pos[k], images, groups)
            out.append((p, s))
        jax.block_until_ready([p for p, _ in out])
        state["s"] = out

    runs = {"jax_vmapped": together(vmapped, "v"), "jax_lax_map": together(mapped, "m"),
            "jax_separate": run_separate, BF16_ROW[how]: together(bf16, "b")}
    if with_s1:
        runs["jax_lax_map_s1_vjp"] = together(mapped_s1, "s1")
    for run in runs.values():                                         # compile + warm
        run()
    return runs


def torch_candidate(m, b, steps, images, config):
    """M PyTorch nets (same architecture, biases, crop + flip by affine_grid, NT-Xent, AdamW)
    stepped one after another; None when torch is not importable."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.manual_seed(0)
    nets = [torch_net(config) for _ in range(m)]
    opts = [torch.optim.AdamW(n.parameters(), lr=1e-3, weight_decay=1e-4) for n in nets]
    pool = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0

    def views(x):
        scale = torch.sqrt(torch.empty(len(x)).uniform_(0.2, 1.0))
        theta = torch.zeros(len(x), 2, 3)
        flip = torch.where(torch.rand(len(x)) < 0.5, -1.0, 1.0)
        theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
        theta[:, :, 2] = (torch.rand(len(x), 2) * 2 - 1) * (1 - scale[:, None])
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def nt_xent(z1, z2, t=0.2):
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        logits = z @ z.T / t
        logits.fill_diagonal_(-1e9)
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
        return F.cross_entropy(logits, target)

    def run():
        for n, o in zip(nets, opts):
            for _ in range(steps):
                x = pool[torch.randint(len(pool), (b,))]
                loss = nt_xent(n(views(x)), n(views(x)))
                o.zero_grad()
                loss.backward()
                o.step()

    run()                                                             # warm
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    ap.add_argument("--quick", action="store_true", help="M=2, B=32, 2 steps, 2 rounds")
    ap.add_argument("--family", choices=sorted(FAMILY_INPUTS), default="blog",
                    help="architecture (with biases, at its input: blog 32x32x3, vgg 28x28x1)")
    ap.add_argument("--json", help="write the record here")
    a = ap.parse_args(argv)
    config = family_config(a.family)
    if a.quick:
        a.members, a.batch_size, a.steps, a.repeats = 2, 32, 2, 2
    side, channels = config.input_hw, config.in_channels
    images = np.random.default_rng(0).integers(0, 256, (1024, side, side, channels), np.uint8)
    candidates = jax_candidates(a.members, a.batch_size, a.steps, images, config)
    torch_run = None if on_accelerator() else \
        torch_candidate(a.members, a.batch_size, a.steps, images, config)
    if on_accelerator():
        print("JAX runs on an accelerator: the CPU PyTorch candidate is left out")
    elif torch_run is None:
        print("torch not importable: skipping the PyTorch candidate "
              "(pip install the bench extra to include it)")
    else:
        candidates["torch_loop"] = torch_run
    times = time_alternating(candidates, a.repeats)
    work = 2 * a.batch_size * a.members * a.steps                   # images x members / round
    rows = {k: {**summary(v), "images_x_members_per_s": work / min(v)} for k, v in times.items()}
    # a training step ~ 3 forward passes (forward + backward) of each view: an estimate
    step_flops = 3 * forward_flops(config)
    peak_gflops, peak_source = device_peak_gflops(measured_roof_gflops())
    for row in rows.values():
        row["fraction_of_peak_est"] = row["images_x_members_per_s"] * step_flops / 1e9 / peak_gflops
    separate = rows["jax_separate"]["min_s"]
    for name, row in rows.items():
        row["speedup_vs_separate"] = separate / row["min_s"]
        print(f"{name:18s} {row['images_x_members_per_s']:9.0f} images x members / s   "
              f"min {row['min_s']:.3f} s   {row['speedup_vs_separate']:.2f}x M separate steps")
    print(f"peak {peak_gflops:.0f} GFLOP/s ({peak_source}); step ~ {step_flops / 1e6:.1f} MFLOP "
          f"per image x member (3 x forward, an estimate)")
    how = ensemble.lowering("step")
    ratios = {}
    if "torch_loop" in rows:
        for precision, name in (("float32", F32_ROW[how]), ("bf16", BF16_ROW[how])):
            ratios[precision] = rows["torch_loop"]["min_s"] / rows[name]["min_s"]
        print(f"train's step ({how}) against the PyTorch loop: {ratios['float32']:.2f}x in "
              f"float32, {ratios['bf16']:.2f}x with --precision bf16")
    record = {"family": a.family, "embedder": config.to_dict(),
              "peak_gflops": peak_gflops, "peak_source": peak_source, "members": a.members,
              "batch_size": a.batch_size, "steps_per_round": a.steps,
              "repeats": a.repeats, "machine": machine(), "results": rows,
              "step_lowering": how, "vs_torch": ratios}
    if a.json:
        fileio.save_json(a.json, record)                            # atomic
    return record


if __name__ == "__main__":
    main()
