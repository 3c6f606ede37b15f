"""model/devices.py and the multi-process CLI: the members/rows split rule, the one-writer gate,
and in subprocesses (4 simulated XLA:CPU devices; two processes on 127.0.0.1) embeddings,
retrieval metrics, 3-step training (M = 6 on 4 devices: two padded slots) and params files
equal to one device's, checked against the numpy net and single-member steps; a process that
dies ends the other with one line and no output. Every process started here is stopped here,
by its process group, with bounded waits."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rand_ensemble import fileio, paths
from rand_ensemble.data.dataset import Dataset
from rand_ensemble.learn import signals, trainer
from rand_ensemble.model import checkpoint, devices, ensemble, nn
from rand_ensemble.model.embedder import EmbedderConfig, init_embedder
from fuzz_inputs import run  # the one in-process `rand-ensemble` runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = EmbedderConfig(widths=(4, 4, 4, 4), dense=4, embedding_dim=4, bias=True)
ARCH = ["--widths", "8,8,8,8", "--dense", "8", "--embedding-dim", "8"]   # small: quick to compile
TRAIN = ["--members", "4", "--steps", "3", "--batch-size", "4", "--warmup", "1",
         "--log-every", "1", "--quiet", *ARCH]


def test_split_rule_by_hand():
    # (M, B, D) -> (member parts, row parts): least ceil(M/m) * ceil(B/b), ties to more m.
    assert devices.split(6, 128, 4) == (2, 2)      # 3 x 64 beats 2 x 128 (m = 4, padded)
    assert devices.split(4, 128, 4) == (4, 1)      # 1 x 128 ties 2 x 64 and 4 x 32
    assert devices.split(1, 128, 4) == (1, 4)      # one member: the rows are split
    assert devices.split(10, 128, 8) == (2, 4)     # 5 x 32 = 160 ties 10 x 16; m = 2 wins
    assert devices.split(6, None, 4) == (4, 1)     # training splits members only
    assert devices.padded_size(6, 4) == 8 and devices.padded_size(8, 4) == 8
    assert devices.mesh_for(6, 128) is None        # one device: the plain program
    assert devices.describe() == {"num_devices": 1, "num_processes": 1}


def test_a_process_that_does_not_write_checks_and_writes_nothing(tmp_path):
    target, folder = tmp_path / "r.json", tmp_path / "a_folder"
    folder.mkdir()
    paths.set_writer(False)
    try:
        fileio.write_outputs({target: fileio.json_writer({"a": 1})})
        with fileio.atomic_path(tmp_path / "b.txt") as tmp:
            with open(tmp, "w") as f:
                f.write("x")
        with pytest.raises(fileio.RandEnsembleError, match="folder"):
            fileio.write_outputs({folder: fileio.json_writer({})})      # still checked
    finally:
        paths.set_writer(True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder"]


def write_pool(path):
    """20 uint8 32x32x3 images of 10 labels (coloured squares, two shifted views each)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 2)
    images = np.full((20, 32, 32, 3), 20, np.uint8)
    for i, label in enumerate(labels):
        y, x = rng.integers(2, 14, 2)
        images[i, y:y + 16, x:x + 16] = np.random.default_rng(label).integers(40, 255, 3)
    np.savez(path, images=images, labels=labels.astype(np.int64))
    return images, labels


def tiny_dataset(folder):
    with np.load(os.path.join(folder, "pool.npz")) as f:
        images, labels = f["images"], f["labels"]
    return Dataset(images, np.asarray([f"img{i:02d}" for i in range(len(images))]), labels)


def run_config(**kw):
    return trainer.LearnConfig(**{**dict(members=6, steps=4, batch_size=4, warmup=1,
                                         checkpoint_every=1, log_every=1, min_spread=0.0,
                                         signal="oracle"), **kw})


# Runs in a child with 4 simulated devices: the CLI and both step lowerings, M = 6.
FOUR_DEVICES = r"""
import sys, numpy as np, jax
sys.path.insert(0, sys.argv[2])
import test_model_devices as t
from rand_ensemble import cli
from rand_ensemble.learn import signals, trainer
from rand_ensemble.model import devices, ensemble, nn
from rand_ensemble.model.embedder import init_embedder
folder = sys.argv[1]
assert devices.device_count() == 4
data = ["--data", f"npz:{folder}/pool.npz"]
assert cli.main(["retrieval", *data, "--models", "6", "--bootstrap", "20", "--save-embeddings",
                 f"{folder}/e4.npy", "--json", f"{folder}/r4.json", *t.ARCH]) == 0
assert cli.main(["train", *data, *t.TRAIN, "--out", f"{folder}/m4.npz"]) == 0
assert cli.main(["retrieval", *data, "--checkpoint", f"{folder}/m1.npz", "--bootstrap", "20",
                 "--save-embeddings", f"{folder}/c4.npy"]) == 0
pool, c = t.tiny_dataset(folder), t.run_config()
step = trainer.make_member_step(t.TINY, c, trainer.make_optimizer(c), nn.conv_im2col)
out = {}
for how in ("vmap", "map"):
    params = ensemble.init_members(init_embedder, jax.random.PRNGKey(1), 6, t.TINY)
    state = jax.vmap(trainer.make_optimizer(c).init)(params)
    together = ensemble.over_members(step, 2, how)
    batches = signals.Batches("oracle", 20, 6, 4, 0, None, 0.0, pool.labels)
    for i in range(1, 4):
        params, state, loss = together(params, state, *batches[i][1:], pool.images,
                                       pool.labels.astype(np.int32))
    out.update({f"{how}/{k}": v for k, v in t.flat(devices.to_host(params)).items()})
np.savez(f"{folder}/steps4.npz", **out)
calls = []
def stop(params):
    calls.append(1)
    if len(calls) == 3:
        raise KeyboardInterrupt                 # during step 3, after the step-2 save
    return {}
try:
    trainer.train_embedder(pool, c, checkpoint=f"{folder}/state.npz", progress=False, log=None,
                           score_fn=stop, embedder=t.TINY)
except KeyboardInterrupt:
    pass
"""


def flat(tree):
    return {f"{a}/{b}": np.asarray(v) for a, leaves in tree.items() for b, v in leaves.items()}


def max_diff(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.slow
def test_four_devices_equal_one(tmp_path, capsys, reference):
    images, labels = write_pool(tmp_path / "pool.npz")
    data = ["--data", f"npz:{tmp_path}/pool.npz"]
    assert run(["train", *data, *TRAIN, "--out", tmp_path / "m1.npz"], capsys)[0] == 0
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(tmp_path), os.path.dirname(__file__)],
                   check=True, env=env, cwd=ROOT, timeout=900)
    assert run(["retrieval", *data, "--models", "6", "--bootstrap", "20", "--save-embeddings",
                tmp_path / "e1.npy", "--json", tmp_path / "r1.json", *ARCH], capsys)[0] == 0
    assert run(["retrieval", *data, "--checkpoint", tmp_path / "m1.npz", "--bootstrap", "20",
                "--save-embeddings", tmp_path / "c1.npy"], capsys)[0] == 0

    # Embeddings of 6 members on 4 devices (2 member x 2 row parts): the numpy net, 1 device.
    e4, e1 = np.load(tmp_path / "e4.npy"), np.load(tmp_path / "e1.npy")
    config = EmbedderConfig(widths=(8, 8, 8, 8), dense=8, embedding_dim=8)
    params = ensemble.init_ensemble(jax.random.PRNGKey(0), 6, config)
    for m in range(6):
        alone = jax.tree_util.tree_map(lambda a: np.asarray(a)[m], params)
        np.testing.assert_allclose(e4[m], reference.config_embed(alone, images / 255.0, config),
                                   atol=1e-4)          # float32 against float64
    np.testing.assert_allclose(e4, e1, atol=1e-5)
    r4, r1 = (json.loads((tmp_path / f"r{k}.json").read_text()) for k in (4, 1))
    assert (r4["num_devices"], r4["num_processes"], r1["num_devices"]) == (4, 1, 1)
    for key in ("precision_at_1", "r_precision", "map_at_r", "recall_at_4"):
        np.testing.assert_allclose(r4[key], r1[key], atol=1e-5)
    for key, values in r1["per_member"].items():
        np.testing.assert_allclose(r4["per_member"][key], values, atol=1e-5)
    # A params file written on 1 device embeds the same on 4, and one written on 4 loads on 1.
    np.testing.assert_allclose(np.load(tmp_path / "c4.npy"), np.load(tmp_path / "c1.npy"),
                               atol=1e-5)
    p4, cfg4 = checkpoint.load_params(tmp_path / "m4.npz")
    p1, cfg1 = checkpoint.load_params(tmp_path / "m1.npz")
    assert cfg4 == cfg1 and max_diff(p4, p1) < 1e-4 and np.abs(p1["dense"]["bias"]).max() > 0

    # M = 6 on 4 devices, both lowerings, 3 steps: each member as its own single-member step.
    pool, c = tiny_dataset(tmp_path), run_config()
    opt = trainer.make_optimizer(c)
    single = jax.jit(trainer.make_member_step(TINY, c, opt, nn.conv_im2col))
    start = ensemble.init_members(init_embedder, jax.random.PRNGKey(1), 6, TINY)
    batches = signals.Batches("oracle", 20, 6, 4, 0, None, 0.0, pool.labels)
    steps4 = np.load(tmp_path / "steps4.npz")
    for m in range(6):
        p = jax.tree_util.tree_map(lambda a: np.asarray(a)[m], start)
        s = opt.init(p)
        for i in range(1, 4):
            _, keys, anchors, positives = batches[i]
            p, s, _ = single(p, s, keys[m], anchors[m], positives[m], pool.images,
                             pool.labels.astype(np.int32))
        for how in ("vmap", "map"):
            for name, value in flat(p).items():
                np.testing.assert_allclose(steps4[f"{how}/{name}"][m], value, atol=1e-4)

    # A run interrupted on 4 devices (saved at step 2) resumes on 1 like an unbroken run.
    kw = dict(progress=False, log=None, embedder=TINY)
    whole, _, _ = trainer.train_embedder(pool, c, **kw)
    resumed, _, report = trainer.train_embedder(pool, c, checkpoint=str(tmp_path / "state.npz"),
                                                resume=True, **kw)
    assert [r["step"] for r in report["history"]] == [1, 2, 3, 4]
    assert max_diff(whole, resumed) < 1e-4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, process_id, port, log):
    """One process of a two-process run (its own process group, so it is stopped whole)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    return subprocess.Popen([sys.executable, "-m", "rand_ensemble.cli", *map(str, argv),
                             "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                             "--process-id", str(process_id), "--peer-timeout", "10"],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stop(procs):
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_two_processes_train_like_one_and_one_writes(tmp_path, capsys):
    write_pool(tmp_path / "pool.npz")
    data = ["train", "--data", f"npz:{tmp_path}/pool.npz", *TRAIN]
    assert run([*data, "--out", tmp_path / "one.npz"], capsys)[0] == 0
    port, procs = free_port(), []
    try:
        with open(tmp_path / "log0.txt", "w") as log0, open(tmp_path / "log1.txt", "w") as log1:
            # process 1 is told another --out: a file there would prove it wrote
            procs = [start([*data, "--out", tmp_path / "out" / "two.npz", "--json",
                            tmp_path / "out" / "two.json"], 0, port, log0),
                     start([*data, "--out", tmp_path / "other" / "two.npz"], 1, port, log1)]
            errs = [proc.communicate(timeout=600)[1] for proc in procs]
    finally:
        stop(procs)
    assert [proc.returncode for proc in procs] == [0, 0], errs
    assert "Gloo" not in "".join(errs) + (tmp_path / "log1.txt").read_text()
    assert not (tmp_path / "other").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "two.json", "two.npz", "two.state.npz"]              # no temp left beside them
    p2, _ = checkpoint.load_params(tmp_path / "out" / "two.npz")
    p1, _ = checkpoint.load_params(tmp_path / "one.npz")
    assert max_diff(p2, p1) < 1e-4
    report = json.loads((tmp_path / "out" / "two.json").read_text())
    assert (report["num_devices"], report["num_processes"]) == (2, 2)


@pytest.mark.slow
def test_a_dead_process_ends_the_other_in_one_line(tmp_path):
    write_pool(tmp_path / "pool.npz")
    argv = ["train", "--data", f"npz:{tmp_path}/pool.npz", "--members", "2", "--steps", "5000",
            "--batch-size", "4", "--warmup", "1", "--log-every", "1", "--checkpoint-every",
            "5000", "--out", tmp_path / "out" / "m.npz"]
    port, procs = free_port(), []
    try:
        with open(tmp_path / "log0.txt", "w") as log0, open(tmp_path / "log1.txt", "w") as log1:
            procs = [start(argv, 0, port, log0), start(argv, 1, port, log1)]
            deadline = time.monotonic() + 600
            while "step=2 " not in (tmp_path / "log0.txt").read_text():
                assert time.monotonic() < deadline and procs[0].poll() is None
                time.sleep(0.5)
            os.killpg(procs[1].pid, signal.SIGKILL)          # process 1 dies mid-run
            procs[1].wait(timeout=30)
            killed = time.monotonic()
            _, err = procs[0].communicate(timeout=120)       # bounded: no hang
    finally:
        stop(procs)
    lines = err.strip().splitlines()
    assert procs[0].returncode == 2 and len(lines) == 1, err
    assert lines[0].startswith("rand-ensemble: error:") and "process" in lines[0]
    assert time.monotonic() - killed < 120
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_bench_devices_quick(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_devices.py"),
                           "--quick", "--devices", "1", "--processes", "2", "--json", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert "share this machine's" in result["note"] and "share this machine's" in proc.stdout
    rows = result["rows"]
    assert [(r["num_devices"], r["num_processes"]) for r in rows] == [(1, 1), (2, 2)]
    for row in rows:
        assert row["forward_images_members_per_s"] > 0 and row["train_images_members_per_s"] > 0
        assert row["peak_bytes_per_device"] > 0
    assert rows[0]["forward_vs_1_device"] == 1.0
