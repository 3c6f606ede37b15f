"""Renders/s/core of the fast renderer and the previous (legacy) one, side by side in ONE process.

    python scripts/bench_render.py --pairs 40 --rounds 5 --collage bench_render.png \
        --json bench_render.json
    python scripts/bench_render.py --quick

Each round renders the same (object, view) pairs with every candidate in turn, so load noise hits
all alike; rates use process CPU time (one pybullet client is one thread: renders per CPU second
is renders/s/core) and wall time is reported beside it. The fast path's shapes are made once per
object and client, so a cold pass (first sight of every object) is timed apart from warm rounds.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import cpu_model  # noqa: E402

from rand_ensemble import fileio  # noqa: E402
from rand_ensemble.data import render  # noqa: E402

CANDIDATES = {                      # name -> Renderer keyword arguments
    "legacy": dict(fast=False),     # loadURDF + resetSimulation per render, 4x oversampling
    "fast_os4": dict(fast=True, oversample=render.LEGACY_OVERSAMPLE),  # cached shapes only
    "fast": dict(fast=True),        # the default: cached shapes + FAST_OVERSAMPLE
}

# (candidate, baseline): the total, then physics alone (same 4x oversampling; the fast path sorts
# contact pairs, so chaotic scenes settle differently), then oversampling alone (same physics).
COMPARISONS = [("fast", "legacy"), ("fast_os4", "legacy"), ("fast", "fast_os4")]


def pick_pairs(num_pairs, seed):
    """num_pairs (object, view) pairs: objects from 0-599 (never broken), views 0-99."""
    rng = np.random.default_rng(seed)
    ids = [i for i in range(600) if i not in render.broken_object_ids()]
    objects = rng.choice(ids, num_pairs, replace=False)
    return [(int(o), int(v)) for o, v in zip(objects, rng.integers(0, 100, num_pairs))]


def render_all(renderer, pairs, seed):
    """-> (uint8 (P, hw, hw, 3), cpu seconds, wall seconds) for one pass over the pairs."""
    cpu, wall = time.process_time(), time.perf_counter()
    images = np.stack([renderer.render_view(o, v, seed)[0] for o, v in pairs])
    return images, time.process_time() - cpu, time.perf_counter() - wall


def time_rounds(renderers, pairs, seed, rounds):
    """{name: {"cold": (cpu, wall), "cpu": [...], "wall": [...]}}, images {name: (P, hw, hw, 3)}."""
    times, images = {}, {}
    for name, r in renderers.items():                       # cold: shapes made on first sight
        images[name], cpu, wall = render_all(r, pairs, seed)
        times[name] = {"cold": (cpu, wall), "cpu": [], "wall": []}
    for _ in range(rounds):
        for name, r in renderers.items():
            again, cpu, wall = render_all(r, pairs, seed)
            if again.tobytes() != images[name].tobytes():
                raise SystemExit(f"{name}: a second pass gave different pixels")
            times[name]["cpu"].append(cpu)
            times[name]["wall"].append(wall)
    return times, images


def rates(seconds, num):
    """renders/s from the min and the median of a list of pass times."""
    return {"best": num / min(seconds), "median": num / statistics.median(seconds)}


def differences(new, old):
    """Pixel differences of uint8 (P, H, W, 3) images: mean |diff| (0-255) and differing shares."""
    d = np.abs(new.astype(np.int16) - old.astype(np.int16))
    per_pixel = d.max(-1)                                                # (P, H, W)
    per_image = d.mean(axis=(1, 2, 3))                                   # (P,)
    return {"mean_abs_diff": float(d.mean()), "median_image_mean_abs_diff":
            float(np.median(per_image)), "images_over_10": int((per_image > 10).sum()),
            "frac_pixels_differing": float((per_pixel > 0).mean()),
            "frac_pixels_over_8": float((per_pixel > 8).mean()),
            "images_identical": int((per_image == 0).sum())}


def collage(old, new, rows, scale=4):
    """uint8 image: one row per view, columns old | new | |diff| x4, each upscaled `scale`x."""
    diff = np.minimum(np.abs(new.astype(int) - old.astype(int)) * 4, 255).astype(np.uint8)
    gap = np.full((old.shape[1], 2, 3), 255, np.uint8)
    lines = [np.concatenate([old[i], gap, new[i], gap, diff[i]], 1) for i in range(rows)]
    grid = np.concatenate([np.pad(x, ((0, 2), (0, 0), (0, 0)), constant_values=255)
                           for x in lines], 0)
    return grid.repeat(scale, 0).repeat(scale, 1)


def save_png(path, image):
    """Write a uint8 (H, W, 3) image as PNG, atomically."""
    from PIL import Image
    with fileio.atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def report(times, images, oversample, num):
    """Print and return {"rates": per candidate, "<a>_vs_<b>": ratio and pixel differences}."""
    result = {"rates": {}}
    for name, t in times.items():
        r = result["rates"][name] = {"cpu": rates(t["cpu"], num), "wall": rates(t["wall"], num),
                                     "cold_cpu": num / t["cold"][0]}
        print(f"{name:9s} renders/s/core: best {r['cpu']['best']:6.1f}  median "
              f"{r['cpu']['median']:6.1f}  (wall best {r['wall']['best']:6.1f}; cold pass "
              f"{r['cold_cpu']:6.1f})  oversample {oversample[name]}")
    for name, base in COMPARISONS:
        ratio = {k: result["rates"][name]["cpu"][k] / result["rates"][base]["cpu"][k]
                 for k in ("best", "median")}
        diff = differences(images[name], images[base])
        result[f"{name}_vs_{base}"] = dict(ratio, **diff)
        print(f"{name} / {base}: {ratio['best']:.2f}x (best), {ratio['median']:.2f}x (median); "
              f"mean |diff| {diff['mean_abs_diff']:.2f} of 255 (median image "
              f"{diff['median_image_mean_abs_diff']:.2f}, images over 10: "
              f"{diff['images_over_10']}/{num}), pixels differing "
              f"{diff['frac_pixels_differing']:.1%} (> 8: {diff['frac_pixels_over_8']:.1%}), "
              f"identical images {diff['images_identical']}/{num}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=40, help="(object, view) pairs per pass")
    p.add_argument("--rounds", type=int, default=5, help="alternating warm rounds (min and median)")
    p.add_argument("--hw", type=int, default=32, help="output image side")
    p.add_argument("--seed", type=int, default=0, help="render seed; also picks the pairs")
    p.add_argument("--collage", default="bench_render.png", help="old | new | diff PNG ('' skips)")
    p.add_argument("--json", default=None, help="write the results here (atomic)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 pairs, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.rounds = 8, 1
    pairs = pick_pairs(args.pairs, args.seed)
    renderers = {name: render.Renderer(hw=args.hw, **kw) for name, kw in CANDIDATES.items()}
    try:
        times, images = time_rounds(renderers, pairs, args.seed, args.rounds)
    finally:
        for r in renderers.values():
            r.close()
    result = {"cpu": cpu_model(), "pairs": len(pairs), "rounds": args.rounds, "hw": args.hw,
              "oversample": {n: renderers[n].oversample for n in renderers}}
    result.update(report(times, images, result["oversample"], len(pairs)))
    if args.collage:
        save_png(args.collage, collage(images["legacy"], images["fast"], min(8, len(pairs))))
        print(f"collage (legacy | fast | |diff| x4, one row per view): {args.collage}")
    if args.json:
        fileio.save_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
