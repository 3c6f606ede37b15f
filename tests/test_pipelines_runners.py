"""Both Beam jobs on a portable job service and on a 2-worker Dask cluster: outputs equal
the DirectRunner's, and renders + failures = inputs (the DaskRunner fails silently otherwise).

Inputs are tiny (objects 997..1000 x 2 views, ids >= 1000 have no URDF; a weak-label pool of
6 renders plus a corrupt shard and a copied shard, 3 blocks of 2) to keep each run short.
"""
import glob
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from rand_ensemble import cli
from rand_ensemble.pipelines import local_services

pytestmark = pytest.mark.slow
RENDER = ["--objects", "997:1001", "--views", "2", "--seed", "4", "--hw", "32"]
WEAK = ["--models", "2", "--seed", "1", "--top-k", "2", "--block-size", "2", "--batch-size", "4"]


@pytest.fixture(autouse=True)
def _workers_import_this_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", local_services.ROOT + os.pathsep
                       + os.environ.get("PYTHONPATH", ""))


def outputs(folder):
    """Everything a job wrote, in a runner-independent form (rows sorted, camera floats out)."""
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*")))
    rows = {}
    for prefix in ("renders", "pairs"):
        files = sorted(glob.glob(os.path.join(folder, f"{prefix}-*.parquet")))
        table = [r for f in files for r in pq.read_table(f).to_pylist()]
        rows[prefix] = sorted(tuple((k, v) for k, v in r.items()
                                    if k in ("image_id", "object_id", "view", "seed", "image",
                                             "image_id_a", "image_id_b", "score", "rank"))
                              for r in table)
    failures = sorted(line for p in glob.glob(os.path.join(folder, "failures-*"))
                      for line in open(p) if line.strip())
    summary = os.path.join(folder, "summary.json")
    return {"files": names, "rows": rows, "failures": failures,
            "summary": json.load(open(summary)) if os.path.exists(summary) else None}


def run_jobs(tmp, beam_args, pool):
    """Render and weak-label through the CLI -> (render outputs, weak-label outputs)."""
    renders, labels = os.path.join(tmp, "renders"), os.path.join(tmp, "labels")
    assert cli.main(["render", *RENDER, "--out", renders, *beam_args]) == 0
    assert cli.main(["weak-labels", "--renders", pool, *WEAK, "--out", labels, *beam_args]) == 0
    return outputs(renders), outputs(labels)


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("direct"))
    renders = os.path.join(tmp, "first")
    assert cli.main(["render", *RENDER, "--out", renders]) == 0
    pool = os.path.join(tmp, "pool")
    os.makedirs(pool)
    [shard] = glob.glob(os.path.join(renders, "renders-*.parquet"))
    shutil.copy(shard, os.path.join(pool, "renders-a.parquet"))
    shutil.copy(shard, os.path.join(pool, "renders-b-copy.parquet"))     # every id twice
    with open(os.path.join(pool, "renders-c-corrupt.parquet"), "wb") as f:
        f.write(b"PAR1 this is not parquet")
    render, weak = run_jobs(os.path.join(tmp, "run"), [], pool)
    check_counts(render, weak)
    return pool, render, weak


def check_counts(render, weak):
    # 4 ids x 2 views: 6 renders + 2 failures (id 1000 has no URDF)
    assert len(render["rows"]["renders"]) == 6 and len(render["failures"]) == 2
    # 6 rows in each of two shards + one unreadable file: 6 images, 6 duplicates, 1 read failure
    stages = sorted(json.loads(line)["stage"] for line in weak["failures"])
    assert stages == ["duplicate"] * 6 + ["read"]
    assert weak["summary"]["num_images"] == 6 and weak["summary"]["num_failures"] == 7
    assert len(weak["rows"]["pairs"]) == 6 * 2 == weak["summary"]["num_pairs"]
    kept = {json.loads(line)["input"]["file"] for line in weak["failures"]}
    assert all(f.endswith(("renders-b-copy.parquet", "renders-c-corrupt.parquet")) for f in kept)


def test_portable_runner_equals_direct_runner(direct, tmp_path):
    pool, render, weak = direct
    with local_services.portable_services(str(tmp_path)) as beam_args:
        got = run_jobs(str(tmp_path), beam_args, pool)
    assert got == (render, weak)


def test_dask_runner_equals_direct_runner(direct, tmp_path):
    pool, render, weak = direct
    with local_services.dask_cluster(str(tmp_path), workers=2) as beam_args:
        got = run_jobs(str(tmp_path), beam_args, pool)
    check_counts(*got)
    assert got == (render, weak)
