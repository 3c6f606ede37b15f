"""`make bench`: every benchmark in its quick form, one JSON (default bench-out/bench.json).

Each script runs in its own process (`--quick --json`, in a temporary folder, so side files such
as plots do not land in the checkout); a failure (e.g. faiss or torch not
installed) is recorded with its last lines and the others still run. The full forms, which
make the README's tables, are in each script's docstring.

    python scripts/bench_all.py [--out bench-out/bench.json] [--only forward train]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = ("forward", "layers", "train", "neighbours", "approx", "scaling", "render", "pipeline",
           "devices")


def run_one(name, folder):
    """One `bench_NAME.py --quick --json` -> {"ok", "wall_s", "result" | "error"}."""
    out = os.path.join(folder, f"{name}.json")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(HERE, f"bench_{name}.py"), "--quick",
                           "--json", out], env=env, cwd=folder, capture_output=True, text=True)
    record = {"ok": proc.returncode == 0, "wall_s": round(time.perf_counter() - start, 1)}
    if proc.returncode == 0 and os.path.exists(out):
        with open(out) as f:
            record["result"] = json.load(f)
    else:
        record["ok"] = False
        record["error"] = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    print(f"{name:12s} {'ok' if record['ok'] else 'FAILED'} {record['wall_s']:.1f} s", flush=True)
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out/bench.json")
    p.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    a = p.parse_args(argv)
    fileio.plan_outputs([a.out], "--out")          # a bad --out fails now, not after the benches
    with tempfile.TemporaryDirectory() as folder:
        results = {name: run_one(name, folder) for name in a.only}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fileio.save_json(a.out, {"quick": True, "benches": results})     # atomic
    print(f"wrote {a.out}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RandEnsembleError as e:
        sys.exit(f"bench_all: error: {e}")
