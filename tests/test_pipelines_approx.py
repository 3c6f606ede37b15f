"""weak-labels --index approx: IVF lists inside the Beam job, against the exact job and the
library (`evaluate.approx`); recall in summary.json; off by default. Skipped without faiss."""
import glob
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rand_ensemble import cli

faiss = pytest.importorskip("faiss", reason="faiss is not installed (the 'approx' extra)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _workers_import_this_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """A small clustered set: 12 base images x 10 noisy copies, label = base, as one Parquet."""
    rng = np.random.default_rng(0)
    rows = []
    for obj in range(12):
        base = rng.integers(0, 256, size=(32, 32, 3))
        for copy in range(10):
            pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            rows.append({"image_id": f"o{obj:02d}_c{copy}", "image": buf.getvalue(),
                         "label": f"object-{obj}"})
    path = str(tmp_path_factory.mktemp("clustered") / "images.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def pairs(out):
    rows = [r for f in sorted(glob.glob(os.path.join(out, "pairs-*.parquet")))
            for r in pq.read_table(f).to_pylist()]
    return sorted((r["image_id_a"], r["rank"], r["image_id_b"], r["score"]) for r in rows)


def weak_labels(out, images, *flags):
    assert cli.main(["weak-labels", "--images", images, "--models", "2", "--seed", "1",
                     "--out", out, "--top-k", "3", "--block-size", "32", *flags]) in (0, None)
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_approx_job_vs_exact_and_library(clustered, tmp_path):
    from rand_ensemble.evaluate import approx, neighbours
    from rand_ensemble.model import ensemble
    import jax
    exact_out, all_out, one_out = (str(tmp_path / n) for n in ("exact", "all", "one"))
    exact = weak_labels(exact_out, clustered)
    assert "index" not in exact and "recall" not in exact             # off by default
    # 120 rows -> 3 lists; probing all of them is the exact search, pair for pair
    every = weak_labels(all_out, clustered, "--index", "approx", "--nprobe", "3",
                        "--recall-sample", "40")
    assert pairs(all_out) == pairs(exact_out)
    assert every["recall"] == {"sample": 40, "index": "approx", "recall@1": 1.0, "recall@10": 1.0}
    assert every["index"] == "approx" and every["index_params"]["nlist"] == 3
    assert every["precision"] == exact["precision"] and every["per_model_precision"] is None
    # one list a query: approximate, still close to exact on clustered data
    one = weak_labels(one_out, clustered, "--index", "approx", "--nprobe", "1",
                      "--recall-sample", "60")
    assert one["recall"]["sample"] == 60
    assert one["recall"]["recall@1"] >= 0.9 and one["recall"]["recall@10"] >= 0.8
    assert one["num_pairs"] == 360 and one["num_images"] == 120
    # ... and equal to the library's ivf on the id-sorted rows with the job's centroids
    table = pq.read_table(clustered).to_pylist()
    ids = np.array(sorted(r["image_id"] for r in table))
    imgs = {r["image_id"]: np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB"))
            for r in table}
    emb = ensemble.embed(ensemble.init_ensemble(jax.random.PRNGKey(1), 2),
                         np.stack([imgs[i] for i in ids]))
    rows = neighbours.concat_members(emb)
    index = approx.build_index(rows, "ivf", {"nprobe": 1}, seed=1)
    idx, scores = approx.search(index, rows, 3, np.arange(len(rows)))
    want = sorted((ids[i], r + 1, ids[idx[i, r]]) for i in range(len(ids)) for r in range(3)
                  if np.isfinite(scores[i, r]))
    got = [p[:3] for p in pairs(one_out)]
    assert np.mean([w in set(got) for w in want]) >= 0.97       # same lists up to k-means sample


def test_approx_flags_are_checked(tmp_path, capsys):
    from rand_ensemble.errors import RandEnsembleError
    from rand_ensemble.pipelines.approx_search import approx_settings
    assert cli.main(["weak-labels", "--images", str(tmp_path / "x.parquet"), "--models", "2",
                     "--out", str(tmp_path / "o"), "--recall-sample", "-1"]) == 2
    assert "--recall-sample" in capsys.readouterr().err
    assert approx_settings("exact", 100, None, 0) is None
    for args in (("exact", 100, 4, 0), ("exact", 100, None, 10), ("fast", 100, None, 0)):
        with pytest.raises(RandEnsembleError):
            approx_settings(*args)
    assert approx_settings("approx", 10 ** 6, 8, 0) == {"nlist": 1000, "nprobe": 8,
                                                        "train_size": 64000}


def job_outputs(out):
    with open(os.path.join(out, "summary.json")) as f:
        return pairs(out), json.load(f)


@pytest.mark.slow
def test_approx_job_equal_on_every_runner(clustered, tmp_path):
    from rand_ensemble.pipelines import local_services
    flags = ["--index", "approx", "--nprobe", "1", "--recall-sample", "20"]
    weak_labels(str(tmp_path / "direct"), clustered, *flags)
    want = job_outputs(str(tmp_path / "direct"))
    (tmp_path / "p").mkdir()
    (tmp_path / "d").mkdir()
    multi = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    weak_labels(str(tmp_path / "multi"), clustered, *flags, *multi)
    assert job_outputs(str(tmp_path / "multi")) == want
    with local_services.portable_services(str(tmp_path / "p")) as beam_args:
        weak_labels(str(tmp_path / "portable"), clustered, *flags, *beam_args)
    assert job_outputs(str(tmp_path / "portable")) == want
    with local_services.dask_cluster(str(tmp_path / "d"), workers=2) as beam_args:
        weak_labels(str(tmp_path / "dask"), clustered, *flags, *beam_args)
    assert job_outputs(str(tmp_path / "dask")) == want
