"""End to end: render N images, then weak-label them, on the DirectRunner (multi_processing)
and on a local Dask cluster (scheduler + workers on 127.0.0.1): wall time and throughput of
each job, and whether both runners wrote the same pairs.

    python scripts/bench_pipeline.py --quick
    python scripts/bench_pipeline.py --objects 100 --views 4 --workers 2 --json bp.json
"""
import argparse
import glob
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from rand_ensemble.pipelines import local_services, render_job, weak_label_job  # noqa: E402


def pairs_of(folder):
    import pyarrow.parquet as pq
    return sorted((r["image_id_a"], r["image_id_b"], r["rank"])
                  for f in sorted(glob.glob(os.path.join(folder, "pairs-*.parquet")))
                  for r in pq.read_table(f).to_pylist())


def run_both_jobs(tmp, name, beam_args, args):
    """Render then weak-label with `beam_args` -> timing record (+ the pairs)."""
    renders, labels = os.path.join(tmp, name, "renders"), os.path.join(tmp, name, "labels")
    start = time.perf_counter()
    r = render_job.run(renders, args.views, 0, objects=f"0:{args.objects}", beam_args=beam_args)
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    s = weak_label_job.run(renders, labels, args.models, 0, beam_args=beam_args,
                           block_size=args.block_size)
    weak_s = time.perf_counter() - start
    record = {"runner": name, "images": r["renders"], "render_failures": r["failures"],
              "render_s": round(render_s, 1), "render_images_per_s": round(r["renders"] / render_s, 1),
              "weak_label_s": round(weak_s, 1),
              "weak_label_images_per_s": round(s["num_images"] / weak_s, 1),
              "precision": s["precision"], "pairs": s["num_pairs"]}
    return record, pairs_of(labels)


def main(argv=None):
    """Time both jobs on both runners; print one line each, optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=100)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--block-size", type=int, default=128, help="blocks of the neighbour search")
    p.add_argument("--quick", action="store_true", help="10 objects x 2 views, M = 2")
    p.add_argument("--json", help="write the records here")
    args = p.parse_args(argv)
    if args.quick:
        args.objects, args.views, args.models, args.block_size = 10, 2, 2, 8
    records, pairs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        direct = ["--direct_num_workers", str(args.workers),
                  "--direct_running_mode", "multi_processing"]
        record, got = run_both_jobs(tmp, "direct-multi_processing", direct, args)
        records.append(record)
        pairs.append(got)
        print(json.dumps(record), flush=True)
        with local_services.dask_cluster(tmp, workers=args.workers) as dask_args:
            record, got = run_both_jobs(tmp, "dask", dask_args, args)
        records.append(record)
        pairs.append(got)
        print(json.dumps(record), flush=True)
    print(f"pairs equal across runners: {pairs[0] == pairs[1]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": records, "pairs_equal": pairs[0] == pairs[1],
                       "settings": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
