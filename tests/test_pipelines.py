"""Beam render and weak-label jobs on the DirectRunner (in-memory and multi_processing)."""
import glob
import json
import os

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rand_ensemble import cli, fileio
from rand_ensemble.model import checkpoint, ensemble
from rand_ensemble.evaluate import weak_labels
from rand_ensemble.data.render import Renderer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _workers_import_this_checkout(monkeypatch):
    # multi_processing workers are subprocesses: they must import this checkout's package.
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def read_table(folder, prefix):
    files = sorted(glob.glob(os.path.join(folder, f"{prefix}-*.parquet")))
    assert files, f"no {prefix}-*.parquet in {folder}"
    return pq.read_table(files).to_pylist() if len(files) == 1 else \
        [row for f in files for row in pq.read_table(f).to_pylist()]


def read_failures(folder):
    lines = []
    for path in sorted(glob.glob(os.path.join(folder, "failures-*"))):
        lines += [json.loads(line) for line in open(path) if line.strip()]
    return lines


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """8 objects x 3 views rendered by the job (in-memory DirectRunner) through the CLI."""
    from rand_ensemble.pipelines import render_job
    out = str(tmp_path_factory.mktemp("pool"))
    result = render_job.run(out, views=3, seed=0, objects="0:8", hw=32)
    assert result == {"renders": 24, "failures": 0, "out": out}
    return out


@pytest.mark.slow
def test_render_cli_accounts_for_every_input(tmp_path, capsys):
    manifest = tmp_path / "ids.txt"
    # one undecodable line and one repeated id: each is one failure, the rest still renders
    manifest.write_bytes(b"998\n# a comment\n999\n1000\nnot-an-id\n\xff\xfe9\n999\n1001\n\n")
    out = tmp_path / "r"
    status = cli.main(["render", "--manifest", str(manifest), "--views", "2", "--seed", "3",
                       "--out", str(out), "--hw", "16", "--runner", "DirectRunner"])
    assert status == 0
    assert "renders 4, failures 7" in capsys.readouterr().out
    rows, failures = read_table(out, "renders"), read_failures(out)
    assert sorted((r["object_id"], r["view"]) for r in rows) == \
        [(998, 0), (998, 1), (999, 0), (999, 1)]
    render_failures = sorted((f["input"]["object_id"], f["input"]["view"])
                             for f in failures if f["stage"] == "render")
    assert render_failures == [(1000, 0), (1000, 1), (1001, 0), (1001, 1)]
    assert all("no URDF for object id" in f["error"] for f in failures if f["stage"] == "render")
    bad_lines = sorted((f["input"]["line"], f["error"].split(":")[0])
                       for f in failures if f["stage"] == "manifest")
    assert bad_lines == [(5, "ValueError"), (6, "UnicodeDecodeError"), (7, "RandEnsembleError")]
    assert "duplicate object id 999" in failures[-1]["error"] or any(
        "line 3" in f["error"] for f in failures if f["stage"] == "manifest")
    # 4 ids x 2 views + 3 bad lines = renders + failures: nothing dropped
    assert len(rows) + len(failures) == 4 * 2 + 3


@pytest.mark.slow
def test_render_that_overruns_its_time_limit_is_a_failure(tmp_path):
    # Stands in for pybullet spinning forever in getCameraImage: the job must still finish.
    from rand_ensemble.pipelines import render_job
    out = str(tmp_path / "r")
    result = render_job.run(out, views=2, seed=0, objects="0:1", hw=16, timeout_s=0.001)
    assert (result["renders"], result["failures"]) == (0, 2)
    assert all("RenderTimeout" in f["error"] for f in read_failures(out))


@pytest.mark.slow
def test_render_parquet_schema_and_pixels(pool):
    from rand_ensemble.pipelines import schema
    path = sorted(glob.glob(os.path.join(pool, "renders-*.parquet")))[0]
    file_schema = pq.read_schema(path)
    assert [(f.name, f.type) for f in file_schema] == [(f.name, f.type) for f in schema.RENDERS]
    rows = read_table(pool, "renders")
    assert len({r["image_id"] for r in rows}) == 24
    row = min(rows, key=lambda r: r["image_id"])
    assert (row["object_id"], row["view"], row["seed"], row["height"], row["width"]) == \
        (0, 0, 0, 32, 32)
    assert row["image_id"] == schema.image_id(0, 0, 0) and len(row["image"]) == 32 * 32 * 3
    with Renderer(32) as renderer:
        image, camera = renderer.render_view(0, 0, 0)
    assert row["image"] == image.tobytes()
    assert json.loads(row["camera_json"]) == camera and row["yaw"] == camera["yaw"]


@pytest.mark.slow
def test_renders_byte_identical_with_one_and_two_workers(tmp_path):
    from rand_ensemble.pipelines import render_job
    runs = {}
    for name, args in [("one", ["--direct_num_workers", "1"]),
                       ("two", ["--direct_num_workers", "2",
                                "--direct_running_mode", "multi_processing"])]:
        out = str(tmp_path / name)
        result = render_job.run(out, views=2, seed=5, objects="997:1001", hw=16, beam_args=args)
        assert (result["renders"], result["failures"]) == (6, 2)
        runs[name] = sorted((r["image_id"], r["image"])
                            for r in read_table(out, "renders"))
        assert sorted(f["input"]["object_id"] for f in read_failures(out)) == [1000, 1000]
    assert runs["one"] == runs["two"]


@pytest.mark.slow
def test_weak_label_job_matches_library(pool, tmp_path):
    from rand_ensemble.pipelines import schema, weak_label_job
    # One row whose bytes make no image joins the pool: it must come out as a failure, not
    # vanish (a render of another size would be fitted by the size rule, data/decode.py).
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    paths = sorted(glob.glob(os.path.join(pool, "renders-*.parquet")))
    for i, path in enumerate(paths):
        os.symlink(path, mixed / f"renders-{i:05d}.parquet")
    bad = dict(read_table(pool, "renders")[0], image_id="o00003_v0099_s0", image=b"\0" * 100)
    pq.write_table(pa.Table.from_pylist([bad], schema=schema.RENDERS),
                   mixed / f"renders-{len(paths):05d}.parquet")
    out = str(tmp_path / "labels")
    # block_size 5: 25 rows hashed into 5 blocks, 15 tiles, partial lists merged per block
    summary = weak_label_job.run(str(mixed), out, num_models=3, seed=1, top_k=2, batch_size=8,
                                 beam_args=["--direct_num_workers", "1"], block_size=5)
    [failure] = read_failures(out)
    assert failure["stage"] == "decode" and "do not make an image" in failure["error"]
    assert summary["num_failures"] == 1 and summary["num_images"] == 24

    renders = sorted(read_table(pool, "renders"), key=lambda r: r["image_id"])
    ids = np.array([r["image_id"] for r in renders])
    objects = {r["image_id"]: r["object_id"] for r in renders}
    images = np.stack([np.frombuffer(r["image"], np.uint8).reshape(32, 32, 3) for r in renders])
    emb = ensemble.embed(ensemble.init_ensemble(jax.random.PRNGKey(1), 3), images)   # (3, 24, E)
    want = weak_labels.weak_label_pairs(emb, ids, top_k=2)

    pairs = sorted(read_table(out, "pairs"), key=lambda r: (r["image_id_a"], r["rank"]))
    assert [(p["image_id_a"], p["image_id_b"], p["rank"]) for p in pairs] == \
        list(zip(want["image_id_a"], want["image_id_b"], want["rank"].tolist()))
    np.testing.assert_allclose([p["score"] for p in pairs], want["score"], rtol=1e-4, atol=1e-5)
    assert summary["num_pairs"] == len(pairs) == 48

    rank1 = [p for p in pairs if p["rank"] == 1]
    precision = np.mean([objects[p["image_id_a"]] == objects[p["image_id_b"]] for p in rank1])
    assert summary["precision"] == pytest.approx(precision)
    object_ids = np.array([objects[i] for i in ids])
    assert summary["per_model_precision"] == pytest.approx(
        weak_labels.per_model_precision(emb, object_ids))
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == summary
    library = weak_labels.summarize(emb, object_ids, top_k=2)
    assert {k: summary[k] for k in library} == library


@pytest.mark.slow
def test_weak_label_filters_and_two_workers(pool, tmp_path):
    from rand_ensemble.pipelines import weak_label_job
    runs = []
    for args in (["--direct_num_workers", "1"],
                 ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]):
        out = str(tmp_path / f"w{len(runs)}")
        summary = weak_label_job.run(pool, out, num_models=2, seed=0, top_k=1, mutual=True,
                                     min_score=0.0, batch_size=8, beam_args=args)
        runs.append((summary, sorted((p["image_id_a"], p["image_id_b"])
                                     for p in read_table(out, "pairs"))))
    (summary, pairs), (summary2, pairs2) = runs
    assert pairs == pairs2 and summary == summary2
    assert summary["num_pairs"] == len(pairs) == summary["mutual"]["num_images"]
    assert all((b, a) in set(pairs) for a, b in pairs)       # mutual: both directions kept


@pytest.mark.parametrize("argv,message", [
    (["render", "--objects", "5:3", "--views", "2", "--out", "{tmp}/r"], "START < STOP"),
    (["render", "--objects", "0:3", "--views", "-1", "--out", "{tmp}/r"], "--views"),
    (["render", "--manifest", "{tmp}/missing.txt", "--views", "1", "--out", "{tmp}/r"],
     "manifest not found"),
    (["weak-labels", "--renders", "{tmp}/missing", "--models", "2", "--out", "{tmp}/w"],
     "renders folder not found"),
    (["weak-labels", "--renders", "{tmp}/empty", "--models", "2", "--out", "{tmp}/w"],
     "no renders-*.parquet"),
    (["weak-labels", "--renders", "{tmp}", "--models", "0", "--out", "{tmp}/w"], "--models"),
    (["render", "--objects", "0:3", "--views", "1", "--out", "{tmp}/r", "--render-timeout", "0"],
     "--render-timeout must be in"),
    (["render", "--objects", "0:3", "--views", "1", "--out", "{tmp}/r", "--render-timeout",
      "nan"], "--render-timeout must be in"),
    (["weak-labels", "--renders", "{tmp}", "--models", "2", "--out", "{tmp}/w", "--min-score",
      "high"], "expected a number for --min-score"),
])
def test_cli_bad_input_is_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()                      # a folder with no shards
    status = cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith("rand-ensemble: error:") and message in err[0]


@pytest.mark.parametrize("command", [
    ["render", "--objects", "0:2", "--views", "1"],
    ["weak-labels", "--images", "{tmp}/*.png", "--models", "2"],
])
@pytest.mark.parametrize("out,message", [
    ("{tmp}/a_file", "exists and is not a folder"),
    ("nosuchscheme://bucket/x", "--out nosuchscheme://bucket/x"),
])
def test_bad_output_is_one_line_before_beam_runs(command, out, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "x.png").write_bytes(b"")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command + ["--out", out]]
    status = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert (tmp_path / "a_file").read_text() == "keep me"


@pytest.mark.slow
def test_ctrl_c_exits_130_without_traceback_or_temp_files(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "rand_ensemble.cli", "render", "--objects",
                             "0:400", "--views", "4", "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline:       # the job has planned its output
        time.sleep(0.2)
    time.sleep(8)                                             # ... and is rendering
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "rand-ensemble: interrupted"
    assert not [p for p in os.listdir(out) if p.startswith((".", "beam-temp"))]


@pytest.mark.slow
@pytest.mark.parametrize("mirror", [False, True])
def test_weak_labels_with_a_trained_checkpoint(pool, tmp_path, capsys, mirror):
    """--checkpoint mines with saved (here: biased, 2-member) params, equal to the library;
    a mirror-averaged model's rows are each member's re-normalised sum of its rows for the
    image and for its mirror image (computed here by hand), and the summary says so."""
    from rand_ensemble.model.embedder import EmbedderConfig

    config = EmbedderConfig(bias=True)
    params = ensemble.init_ensemble(jax.random.PRNGKey(5), 2, config)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(                       # non-zero biases, so they matter
        lambda a: a + rng.normal(0, 0.05, a.shape).astype(np.float32), params)
    ckpt = str(tmp_path / "trained.npz")
    fileio.write_outputs({ckpt: checkpoint.params_writer(params, config, {"signal": "test"},
                                                         mirror=mirror)})
    out = str(tmp_path / "labels")
    assert cli.main(["weak-labels", "--renders", pool, "--checkpoint", ckpt, "--out", out,
                     "--top-k", "1", "--direct_num_workers", "1"]) == 0
    renders = sorted(read_table(pool, "renders"), key=lambda r: r["image_id"])
    ids = np.array([r["image_id"] for r in renders])
    images = np.stack([np.frombuffer(r["image"], np.uint8).reshape(32, 32, 3) for r in renders])
    rows = ensemble.embed(params, images, config)                       # (M, N, E)
    if mirror:
        rows = rows + ensemble.embed(params, images[:, :, ::-1], config)
        rows = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    want = weak_labels.weak_label_pairs(rows, ids, top_k=1)
    pairs = sorted(read_table(out, "pairs"), key=lambda r: r["image_id_a"])
    assert [(p["image_id_a"], p["image_id_b"]) for p in pairs] == \
        list(zip(want["image_id_a"], want["image_id_b"]))
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["num_models"] == 2 and summary["checkpoint"] == ckpt
    assert summary["seed"] is None and summary.get("mirror", False) is mirror


@pytest.mark.slow
def test_weak_labels_random_members_of_any_family(tmp_path):
    """--models 2 --family vgg --in-channels 1 (tiny widths) on a greyscale npz: the workers
    build the members from the config and embed the images' own grey pixels at 28x28, so the
    pairs equal the library's on `load_dataset(..., channels=1)`."""
    from rand_ensemble.data import sources
    from rand_ensemble.model.embedder import EmbedderConfig
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), 3)
    images = np.clip(labels[:, None, None] * 50 + rng.normal(0, 40, (15, 28, 28)), 0, 255)
    np.savez(tmp_path / "grey.npz", images=images.astype(np.uint8), labels=labels)
    spec, out = f"npz:{tmp_path / 'grey.npz'}", str(tmp_path / "labels")
    assert cli.main(["weak-labels", "--data", spec, "--models", "2", "--seed", "4",
                     "--family", "vgg", "--input-hw", "28", "--in-channels", "1",
                     "--widths", "8,8,8,16", "--embedding-dim", "6", "--out", out,
                     "--top-k", "2", "--direct_num_workers", "1"]) == 0
    config = EmbedderConfig.preset("vgg", input_hw=28, in_channels=1, widths=(8, 8, 8, 16),
                                   embedding_dim=6)
    ds = sources.load_dataset(spec, hw=28, channels=1)
    params = ensemble.init_ensemble(jax.random.PRNGKey(4), 2, config)
    want = weak_labels.weak_label_pairs(ensemble.embed(params, ds.images, config),
                                        np.asarray(ds.ids), top_k=2)
    pairs = read_table(out, "pairs")
    assert sorted((p["image_id_a"], p["image_id_b"]) for p in pairs) == \
        sorted(zip(want["image_id_a"], want["image_id_b"]))
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["embedder"] == config.to_dict()


def _pca_rows_numpy(images, dims, power=0.5):
    """Independent half-whitened PCA by SVD: (N, H, W, C) uint8 -> (N, dims) unit rows."""
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:dims].T * (s[:dims] ** 2 / (len(x) - 1)) ** (-power / 2)
    return proj / np.linalg.norm(proj, axis=1, keepdims=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["raw", "pca"])
def test_weak_labels_from_pixel_baselines_match_numpy(tmp_path, kind):
    """--pixels raw|pca: each image's rank-1 neighbour under cosine of the flattened pixels, or
    of the half-whitened PCA fitted on the pool (here by numpy SVD), padded to the blog net's
    32 x 32 and kept grey by --in-channels 1; one pair per image, scores the cosines."""
    from rand_ensemble.data import sources
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(6), 4)
    images = np.clip(labels[:, None, None] * 40 + rng.normal(0, 50, (24, 28, 28)), 0, 255)
    np.savez(tmp_path / "grey.npz", images=images.astype(np.uint8), labels=labels)
    spec, out = f"npz:{tmp_path / 'grey.npz'}", str(tmp_path / "pairs")
    assert cli.main(["weak-labels", "--data", spec, "--pixels", kind, "--in-channels", "1",
                     "--out", out, "--direct_num_workers", "1"]) == 0
    ds = sources.load_dataset(spec, hw=32, channels=1)             # padded, as documented
    assert ds.images.shape == (24, 32, 32, 1)
    if kind == "pca":
        rows = _pca_rows_numpy(ds.images, dims=23)                 # min(200, N - 1, D)
    else:
        rows = ds.images.reshape(24, -1).astype(np.float64)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ids = np.asarray(ds.ids)
    want = {}
    for i in range(24):
        sims = [(rows[i] @ rows[j], -j) for j in range(24) if j != i]
        score, j = max(sims)
        want[(ids[i], ids[-j])] = score
    got = {(p["image_id_a"], p["image_id_b"]): p["score"] for p in read_table(out, "pairs")}
    assert set(got) == set(want)
    assert np.allclose([got[k] for k in want], list(want.values()), atol=1e-5)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["pixels"] == kind and summary["num_models"] == 1 and summary["seed"] is None
    same = np.mean([labels[list(ids).index(a)] == labels[list(ids).index(b)] for a, b in want])
    assert summary["precision"] == pytest.approx(same)


def test_weak_labels_pca_pixels_need_the_pool_as_data(tmp_path, capsys):
    """--pixels pca with --images: a one-line error before the job starts (the PCA is fitted
    on the whole pool by the launcher), and nothing is written."""
    os.makedirs(tmp_path / "imgs")
    for i in range(3):
        from PIL import Image
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    out = tmp_path / "pairs"
    assert cli.main(["weak-labels", "--images", str(tmp_path / "imgs" / "*.png"),
                     "--pixels", "pca", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rand-ensemble: error: --pixels pca")
    assert not out.exists() or not os.listdir(out)


@pytest.mark.slow
def test_weak_labels_raw_pixels_read_an_image_glob(tmp_path):
    """--pixels raw needs no fit, so it takes --images GLOB and no architecture flags: each
    image's rank-1 neighbour under the cosine of its pixels (padding to 32 x 32 adds zeros,
    which leave cosines unchanged), by a loop over the PNGs as written."""
    from PIL import Image
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)
    (tmp_path / "imgs").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "imgs" / f"{i}.png")
    out = str(tmp_path / "pairs")
    assert cli.main(["weak-labels", "--images", str(tmp_path / "imgs" / "*.png"), "--pixels",
                     "raw", "--out", out, "--direct_num_workers", "1"]) == 0
    rows = images.reshape(6, -1).astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    want = set()
    for i in range(6):
        j = max((j for j in range(6) if j != i), key=lambda j: (rows[i] @ rows[j], -j))
        want.add((f"{i}.png", f"{j}.png"))
    got = {(p["image_id_a"], p["image_id_b"]) for p in read_table(out, "pairs")}
    assert got == want and not read_failures(out)


def test_member_rows_of_a_mirror_averaged_model():
    """The weak-label job's rows of a mirror-averaged model with a signal member: members and
    signal each normalise(f(x) + f(x mirrored)), then weighted as `model_rows` documents;
    recomputed here from the plain rows."""
    from rand_ensemble.evaluate import baselines
    from rand_ensemble.pipelines.neighbours import member_rows

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    params = jax.device_get(ensemble.init_ensemble(jax.random.PRNGKey(1), 2))
    signal = {"kind": "raw", "weight": 0.5}
    got = member_rows(checkpoint.Model(params, ensemble.DEFAULT_CONFIG, signal, True), 4, images)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    emb = unit(ensemble.embed(params, images).astype(np.float64)
               + ensemble.embed(params, images[:, :, ::-1]).astype(np.float64))   # (2, 6, E)
    pix = unit(images.reshape(6, -1).astype(np.float64)
               + images[:, :, ::-1].reshape(6, -1).astype(np.float64))          # raw, by hand
    w = 0.5
    want = np.concatenate([emb.transpose(1, 0, 2).reshape(6, -1) / np.sqrt(2 * (1 + w)),
                           pix * np.sqrt(w / (1 + w))], axis=1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = member_rows(checkpoint.Model(params, ensemble.DEFAULT_CONFIG, signal), 4, images)
    np.testing.assert_allclose(plain[:, -pix.shape[1]:],
                               baselines.pixel_rows(images) * np.sqrt(w / (1 + w)), atol=1e-6)
