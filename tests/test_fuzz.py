"""Fuzz every entry point with generated bad input (tests/fuzz_inputs.py) and check the promise:
exit 2, one `rand-ensemble: error:` line, no traceback, nothing written, nothing lost.

In-process (`cli.main` with capsys) for speed; tests/test_fuzz_subprocess.py repeats a few as
real processes (exit codes, no traceback, no hang, SIGINT).
"""
import errno
import json
import os
import signal
import stat

import jax
import numpy as np
import pytest

from rand_ensemble import fileio
from rand_ensemble.errors import RandEnsembleError
from rand_ensemble.data import test_sets
from rand_ensemble.model import checkpoint, ensemble
from rand_ensemble.questions import text

from fuzz_inputs import (HUGE, assert_promise, assert_refused, good_images, huge_weight_params,
                         output_targets, params_files, run, special_files, bad_test_sets,
                         write_cases, write_image_files, write_render_folder)


SEEDS_OUT_OF_RANGE = [str(2 ** 63), str(2 ** 64 + 5), str(2 ** 32), "-1", "1.5", "0x10", "",
                      "٣" * 30]
COUNTS_OUT_OF_RANGE = ["0", "-3", "abc", "1e3", "", "nan", str(HUGE * HUGE)]


@pytest.fixture(autouse=True)
def no_hang():
    """A command that blocks (say, opening a FIFO) fails the test instead of hanging it."""
    def hung(signum, frame):
        raise AssertionError("a command hung for 120 s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Good inputs to mutate: a 32x32 test set and tiny params that fit it."""
    import jax

    from rand_ensemble.model import checkpoint, ensemble
    d = tmp_path_factory.mktemp("world")
    np.save(d / "good.npy", good_images())
    config = ensemble.EmbedderConfig(widths=(4, 4), dense=4, embedding_dim=4, input_hw=32,
                                     pool="mean")
    params = ensemble.init_ensemble(jax.random.PRNGKey(0), 2, config)
    checkpoint.save_params(d / "good.npz", jax.device_get(params), config)
    return d


def _check_all(cases, argv_for, capsys, root, minimum):
    """assert_refused for every case -> the error lines; the generator must make >= minimum."""
    assert len(cases) >= minimum
    return {name: assert_refused(argv_for(path), capsys, root, name)
            for name, path in cases.items()}


def test_eval_refuses_every_bad_test_set(tmp_path, capsys):
    cases = bad_test_sets(tmp_path)
    errors = _check_all(cases, lambda p: ["eval", "--test-set", p, "--json", tmp_path / "r.json"],
                        capsys, tmp_path, minimum=45)
    assert "declares" in errors["header declares 10^12 examples"]
    assert "memory" in errors["gz: huge header, no data"]
    assert "regular file" in errors["special: fifo"]
    assert "at least one pixel" in errors["zero height float"]


def test_eval_refuses_every_bad_params_file(world, tmp_path, capsys):
    cases = params_files(tmp_path, (world / "good.npz").read_bytes())
    errors = _check_all(cases, lambda p: ["eval", "--test-set", world / "good.npy", "--params",
                                          p, "--save-embeddings", tmp_path / "e.npy"],
                        capsys, tmp_path, minimum=30)
    assert "64x64" in errors["metadata 64x64 input on 32x32 images"]
    assert "NaN" in errors["member with NaN weights"]
    assert "NaN" in errors["metadata NaN input_hw"]


@pytest.mark.parametrize("flag, values", [
    ("--models", COUNTS_OUT_OF_RANGE + [str(10 ** 7)]),
    ("--bootstrap", COUNTS_OUT_OF_RANGE + [str(HUGE)]),
    ("--batch-size", COUNTS_OUT_OF_RANGE[:-1]),     # a huge batch is clamped to the set
    ("--seed", SEEDS_OUT_OF_RANGE),
])
def test_eval_refuses_out_of_range_options(world, tmp_path, capsys, flag, values):
    for value in values:
        err = assert_refused(["eval", "--test-set", world / "good.npy", flag, value, "--json",
                              tmp_path / "r.json"], capsys, tmp_path, (flag, value))
        assert flag in err or "memory" in err, err


@pytest.mark.parametrize("flag", ["--json", "--timings", "--save-params", "--save-embeddings",
                                  "--plots"])
def test_eval_refuses_unusable_outputs_before_any_work(world, tmp_path, capsys, flag):
    targets = output_targets(tmp_path)
    if flag == "--plots":                 # a folder is right for --plots; a file is not
        targets = {k: v for k, v in targets.items() if k != "a folder"}
        targets["a file"] = tmp_path / "a_file"
    for name, target in targets.items():
        others = ["--json", tmp_path / "r.json", "--save-params", tmp_path / "p.npz",
                  "--plots", tmp_path / "plots"]
        assert_refused(["eval", "--test-set", world / "good.npy", "--models", "1", *others,
                        flag, target], capsys, tmp_path, (flag, name))


def test_eval_refuses_outputs_that_collide(world, tmp_path, capsys):
    good = tmp_path / "good.npy"
    good.write_bytes((world / "good.npy").read_bytes())
    same = tmp_path / "same.out"
    for argv in (["--json", same, "--save-params", same],
                 ["--timings", same, "--save-embeddings", same],
                 ["--save-embeddings", good],
                 ["--json", tmp_path / "plots" / "collage.png", "--plots", tmp_path / "plots"]):
        err = assert_refused(["eval", "--test-set", good, *argv], capsys, tmp_path, argv)
        assert "same file" in err or "overwrite the input" in err


def test_eval_writes_all_outputs_or_none(world, tmp_path, capsys, monkeypatch):
    from rand_ensemble.evaluate import plots
    outputs = ["--json", tmp_path / "o" / "r.json", "--save-params", tmp_path / "o" / "p.npz",
               "--save-embeddings", tmp_path / "e.npy", "--plots", tmp_path / "o" / "plots",
               "--timings", tmp_path / "t.json"]
    argv = ["eval", "--test-set", world / "good.npy", "--params", world / "good.npz",
            "--bootstrap", "20"]

    def failing(exc):
        def collage(*args, **kwargs):
            raise exc
        return collage
    for failure in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        monkeypatch.setattr(plots, "collage", failing(failure))
        code, out, err = run(argv + outputs, capsys)
        if isinstance(failure, KeyboardInterrupt):
            assert code == 130 and err.strip() == "rand-ensemble: interrupted"
        else:
            assert_promise(code, out, err, repr(failure))
            assert "No space left" in err
        assert os.listdir(tmp_path) == [], os.listdir(tmp_path)    # no outputs, temps, folders
    monkeypatch.undo()
    code, out, err = run(argv + outputs, capsys)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "o" / "plots")) == ["accuracy_vs_size.png",
                                                             "collage.png"]


def test_eval_same_seed_same_bytes_timings_apart_umask_modes(world, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        for name in ("a", "b"):
            code, _, err = run(["eval", "--test-set", world / "good.npy", "--models", "2",
                                "--seed", "5", "--bootstrap", "50", "--json",
                                tmp_path / f"{name}.json", "--timings", tmp_path / f"{name}.t",
                                "--batch-size", str(HUGE)], capsys)
            assert code == 0, err
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert "seconds" not in (tmp_path / "a.json").read_text()
    assert set(json.loads((tmp_path / "a.t").read_text())) == {"embed_seconds"}
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o640


def test_render_test_set_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "set.npy"
    bad = [["--examples", v, "--out", out] for v in COUNTS_OUT_OF_RANGE + [str(HUGE)]]
    bad += [["--examples", "1", "--hw", v, "--out", out] for v in ["0", "-1", "99999", "x"]]
    bad += [["--examples", "1", "--seed", v, "--out", out] for v in SEEDS_OUT_OF_RANGE]
    bad += [["--examples", "1", "--colour", "blue", "--out", out],
            ["--examples", "1", "--out", tmp_path / "set.png"]]
    bad += [["--examples", "1", "--out", t] for t in output_targets(tmp_path).values()]
    (tmp_path / "x.ids.npy").mkdir()
    bad += [["--examples", "1", "--out", tmp_path / "x.npy"]]
    for argv in bad:
        assert_refused(["render-test-set", *argv], capsys, tmp_path, argv)


def test_render_test_set_leaves_no_ids_when_the_images_fail(tmp_path, capsys, monkeypatch):
    from rand_ensemble.data import render
    images, ids = good_images()[:1], np.zeros((1, 11), np.int32)
    monkeypatch.setattr(render, "render_test_set", lambda *a, **k: (images, ids))
    real_save = np.save

    def save(f, array, **kw):
        if np.asarray(array).ndim == 5:
            raise OSError(errno.EIO, "Input/output error")
        real_save(f, array, **kw)
    monkeypatch.setattr(np, "save", save)
    code, out, err = run(["render-test-set", "--examples", "1", "--out", tmp_path / "s.npy"],
                         capsys)
    assert_promise(code, out, err, "image write fails")
    assert os.listdir(tmp_path) == []


@pytest.fixture()
def demo_cache(tmp_path):
    from rand_ensemble.data.test_sets import cache_path
    from rand_ensemble.data.test_sets import object_ids_path

    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache_path(2, 0, cache_dir=str(cache))
    np.save(path, good_images())
    np.save(object_ids_path(path), np.zeros((2, 11), np.int32))
    return cache


def test_demo_refuses_bad_arguments_and_reports_same_bytes(tmp_path, capsys, demo_cache):
    base = ["demo", "--examples", "2", "--cache-dir", demo_cache]
    bad = [["--models", v] for v in COUNTS_OUT_OF_RANGE + [str(10 ** 8)]]
    bad += [["--examples", str(HUGE)], ["--seed", str(2 ** 63)], ["--seed", "-2"]]
    bad += [["--out", t] for k, t in output_targets(tmp_path).items() if k != "a folder"]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "report.json").mkdir()
    bad += [["--out", tmp_path / "taken"], ["--cache-dir", tmp_path / "a_file"]]
    for argv in bad:
        assert_refused(base + ["--models", "1", "--out", tmp_path / "demo", *argv], capsys,
                       tmp_path, argv)
    reports = []
    for _ in range(2):
        code, out, err = run(base + ["--models", "1", "--out", tmp_path / "d1"], capsys)
        assert code == 0, err
        reports.append((tmp_path / "d1" / "report.json").read_bytes())
    assert reports[0] == reports[1]
    assert "total_seconds" in json.loads((tmp_path / "d1" / "timings.json").read_text())


@pytest.fixture(scope="module")
def question_world(tmp_path_factory, question_pairs):
    """A Quora-format file and an (untrained) tiny checkpoint made from it."""
    import jax

    from rand_ensemble.questions import TowerConfig, tower
    d = tmp_path_factory.mktemp("qworld")
    data_file = question_pairs.write_pairs(str(d / "pairs.tsv"), 60, seed=0)
    pairs = text.load_quora(data_file)
    vocab = text.Vocab.build(pairs.q1 + pairs.q2)
    cfg = TowerConfig(len(vocab), d_model=4, max_len=16)
    tower.save(str(d / "ck"), tower.init_params(jax.random.key(0), cfg), vocab, cfg)
    return d, data_file


def bad_question_files(d):
    """Bad --data files: encodings, headers, fields, labels, sizes, non-files."""
    header = "id,qid1,qid2,question1,question2,is_duplicate\n"
    blobs = {
        "empty": b"", "header only": header.encode(), "binary": bytes(range(256)) * 4,
        "latin-1 line": (header + "1,1,2,caf\xe9?,tea?,0\n").encode("latin-1"),
        "label 2": (header + "1,1,2,a b?,c d?,2\n").encode(),
        "label NaN": (header + "1,1,2,a b?,c d?,nan\n").encode(),
        "missing column": b"question1,question2\na,b\n",
        "too many fields": (header + "1,1,2,a,b,0,extra\n").encode(),
        "field over csv's limit": (header + '1,1,2,"' + "a" * 200000 + '",b,0\n').encode(),
        "unclosed quote": (header + '1,1,2,"a,b,0\n').encode(),
        "only empty questions": (header + "1,1,2,,   ,0\n2,3,4, , ,1\n").encode(),
        "header is a quote": b'"\n',
        "truncated UTF-8": (header + "1,1,2,caf\u00e9,b,0\n").encode()[:-6],
    }
    files = write_cases(d, blobs, "q", ".csv")
    files.update({f"special: {k}": v for k, v in special_files(d, "data").items()})
    return files


def test_questions_refuse_bad_data_files(question_world, tmp_path, capsys):
    qd, _ = question_world
    cases = bad_question_files(tmp_path)
    for command in (["questions", "eval", "--checkpoint", qd / "ck"],
                    ["questions", "eval", "--models", "2", "--d-model", "4"],
                    ["questions", "train", "--out", tmp_path / "ck", "--steps", "1"]):
        _check_all(cases, lambda p: command + ["--data", p, *(
            ["--json", tmp_path / "r.json"] if "eval" in command else [])],
                   capsys, tmp_path, minimum=19)


def checkpoint_mutations(src, d):
    """Copies of a good checkpoint folder, each broken in one way."""
    import shutil
    params = (src / "params.npz").read_bytes()
    config = json.loads((src / "config.json").read_text())
    vocab = (src / "vocab.txt").read_text()
    changes = {
        "no params.npz": ("params.npz", None), "no vocab.txt": ("vocab.txt", None),
        "no config.json": ("config.json", None),
        "params truncated": ("params.npz", params[:len(params) // 2]),
        "params not a zip": ("params.npz", b"garbage"),
        "vocab latin-1": ("vocab.txt", (vocab + "caf\xe9\n").encode("latin-1")),
        "vocab one token short": ("vocab.txt", vocab.rsplit("\n", 2)[0].encode() + b"\n"),
        "vocab repeated token": ("vocab.txt", (vocab + vocab.split("\n")[2] + "\n").encode()),
        "vocab without <pad>": ("vocab.txt", vocab.split("\n", 1)[1].encode()),
        "vocab blank line": ("vocab.txt", vocab.replace("\n", "\n\n", 3).encode()),
        "config garbage": ("config.json", b"{not json"),
        "config a list": ("config.json", b"[1, 2]"),
        "config not UTF-8": ("config.json", b'{"d_model": "\xff"}'),
    }
    for key, value in [("d_model", float("nan")), ("d_model", -4), ("d_model", "4"),
                       ("d_model", 2 ** 40), ("vocab_size", 1), ("max_len", 0),
                       ("margin", float("inf")), ("margin", None), ("d_model", True),
                       ("d_model", 8)]:
        changes[f"config {key}={value}"] = ("config.json", json.dumps(
            {**config, key: value}).encode())
    cases = {}
    for i, (name, (member, blob)) in enumerate(changes.items()):
        target = d / f"ck{i}"
        shutil.copytree(src, target)
        os.unlink(target / member)
        if blob is not None:
            (target / member).write_bytes(blob)
        cases[name] = target
    for member in ("vocab.txt", "config.json", "params.npz"):
        target = d / f"fifo_{member}"
        shutil.copytree(src, target)
        os.unlink(target / member)
        os.mkfifo(target / member)
        cases[f"{member} is a FIFO"] = target
    flat = fileio.read_tree(src / "params.npz")[0]
    name = sorted(flat)[0]
    flat[name] = flat[name].copy()
    flat[name].flat[0] = np.nan
    shutil.copytree(src, d / "ck_nan")
    os.unlink(d / "ck_nan" / "params.npz")
    fileio.save_npz(d / "ck_nan" / "params.npz", flat)
    cases["NaN weight"] = d / "ck_nan"
    cases["checkpoint is a file"] = src / "config.json"
    return cases


def test_questions_refuse_bad_checkpoints(question_world, tmp_path, capsys):
    qd, data_file = question_world
    cases = checkpoint_mutations(qd / "ck", tmp_path)
    _check_all(cases, lambda p: ["questions", "predict", "--checkpoint", p, "how are you?",
                                 "who are you?"], capsys, tmp_path, minimum=28)
    _check_all(cases, lambda p: ["questions", "eval", "--checkpoint", p, "--data", data_file,
                                 "--json", tmp_path / "r.json"], capsys, tmp_path, minimum=28)


def test_questions_refuse_bad_options_and_outputs(question_world, tmp_path, capsys):
    qd, data_file = question_world
    train = ["questions", "train", "--data", data_file, "--quiet"]
    bad = [train + ["--out", tmp_path / "ck", flag, v]      # huge steps are valid, just slow
           for flag in ("--steps", "--batch-size", "--d-model", "--max-len", "--eval-every")
           for v in COUNTS_OUT_OF_RANGE[:-1]]
    bad += [train + ["--out", tmp_path / "ck", "--seed", v] for v in SEEDS_OUT_OF_RANGE]
    for flag, values in (("--lr", ("nan", "inf", "-1", "0", "1e9", "x")),
                         ("--margin", ("nan", "inf", "-1", "0", "3", "x")),
                         ("--valid-fraction", ("nan", "inf", "-0.1", "0.95", "x"))):
        bad += [train + ["--out", tmp_path / "ck", flag, v] for v in values]
    bad += [train + ["--out", tmp_path / "ck", "--d-model", str(10 ** 7)]]
    bad += [train + ["--out", t] for k, t in output_targets(tmp_path).items()
            if k != "a folder"]
    (tmp_path / "has_dir" / "params.npz").mkdir(parents=True)
    bad += [train + ["--out", tmp_path / "has_dir"]]
    evaluate = ["questions", "eval", "--data", data_file]
    bad += [evaluate + ["--models", v] for v in COUNTS_OUT_OF_RANGE + [str(10 ** 9)]]
    bad += [evaluate + ["--models", "1", "--seed", v] for v in SEEDS_OUT_OF_RANGE]
    bad += [evaluate + ["--models", "1", "--threshold", v] for v in ("nan", "2", "-inf")]
    bad += [evaluate + ["--checkpoint", qd / "ck", "--json", t]
            for t in list(output_targets(tmp_path).values()) + [data_file]]
    bad += [["questions", "predict", "--checkpoint", qd / "ck", q1, q2]
            for q1, q2 in (("", "a?"), ("\t", "b"), ("a", "   "))]
    bad += [["questions"], ["questions", "fly"]]
    assert len(bad) >= 90
    for argv in bad:
        assert_refused(argv, capsys, tmp_path, argv)


def test_beam_commands_refuse_bad_arguments_before_beam(tmp_path, capsys):
    (tmp_path / "renders").mkdir()
    (tmp_path / "renders" / "renders-00000-of-00001.parquet").write_bytes(b"")
    render = ["render", "--views", "1", "--out", tmp_path / "r"]
    bad = [render + ["--objects", v] for v in ("0:0", "5:3", "-1:2", "a:b", "1", "0:1:2",
                                               f"0:{HUGE}")]
    bad += [render + ["--objects", "0:2", "--seed", v] for v in SEEDS_OUT_OF_RANGE]
    bad += [render + ["--objects", "0:2", "--render-timeout", v]
            for v in ("inf", "nan", "0", "-5", "1e300", "soon")]
    bad += [render + ["--objects", "0:2", "--hw", v] for v in ("0", "100000", "3.5")]
    bad += [["render", "--objects", "0:2", "--views", v, "--out", tmp_path / "r"]
            for v in COUNTS_OUT_OF_RANGE + [str(HUGE)]]
    bad += [["render", "--manifest", p, "--views", "1", "--out", tmp_path / "r"]
            for p in special_files(tmp_path, "manifest").values()]
    bad += [["render", "--objects", "0:2", "--views", "1", "--out", t]
            for k, t in output_targets(tmp_path).items() if k != "a folder"]
    labels = ["weak-labels", "--renders", tmp_path / "renders", "--out", tmp_path / "w"]
    bad += [labels + ["--models", v] for v in COUNTS_OUT_OF_RANGE + [str(10 ** 8)]]
    bad += [labels + ["--models", "2", "--seed", v] for v in SEEDS_OUT_OF_RANGE]
    bad += [labels + ["--models", "2", "--batch-size", v] for v in ("0", str(HUGE))]
    bad += [labels + ["--models", "2", "--min-score", v] for v in ("nan", "inf", "1.5", "-2")]
    bad += [labels + ["--models", "2", "--top-k", "0"], labels + ["--models", "2", "stray"]]
    bad += [["weak-labels", "--renders", tmp_path / "renders", "--models", "2", "--out", t]
            for k, t in output_targets(tmp_path).items() if k != "a folder"]
    assert len(bad) >= 76
    for argv in bad:
        assert_refused(argv, capsys, tmp_path, argv)


def test_loaders_survive_random_corruption(world, question_world, tmp_path):
    """Seeded byte flips, insertions and cuts of good files: every load either succeeds with
    a valid result or raises RandEnsembleError; nothing else escapes."""
    rng = np.random.default_rng(11)
    qd, data_file = question_world
    goods = {"set.npy": (world / "good.npy").read_bytes(),
             "params.npz": (world / "good.npz").read_bytes(),
             "pairs.csv": open(data_file, "rb").read(),
             "vocab.txt": (qd / "ck" / "vocab.txt").read_bytes()}
    loaders = {"set.npy": test_sets.load_test_set, "params.npz": checkpoint.load_params,
               "pairs.csv": text.load_quora, "vocab.txt": text.Vocab.load}
    tried = 0
    for name, raw in goods.items():
        head = min(len(raw), 400)                       # headers are where parsing happens
        for trial in range(60):
            blob = bytearray(raw)
            for _ in range(rng.integers(1, 4)):
                at = int(rng.integers(0, head))
                kind = rng.integers(0, 3)
                if kind == 0:
                    blob[at] = int(rng.integers(0, 256))
                elif kind == 1:
                    blob[at:at] = bytes(rng.integers(0, 256, rng.integers(1, 8)).tolist())
                else:
                    del blob[at:at + int(rng.integers(1, 50))]
            path = tmp_path / f"{trial}_{name}"
            path.write_bytes(bytes(blob))
            try:
                loaders[name](str(path))
            except RandEnsembleError:
                pass
            tried += 1
    assert tried == 240


@pytest.fixture(scope="module")
def render_world(tmp_path_factory):
    """A tiny render folder (6 objects x 2 views of coloured squares) and a corrupt one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rand_ensemble.pipelines import schema

    d = tmp_path_factory.mktemp("renders_world")
    rng = np.random.default_rng(0)
    rows = []
    for o in range(6):
        for v in range(2):
            img = np.full((32, 32, 3), 20, np.uint8)
            img[8:24, 8:24] = rng.integers(40, 255, 3)
            rows.append({"image_id": schema.image_id(o, v, 0), "object_id": o, "view": v,
                         "seed": 0, "height": 32, "width": 32, "image": img.tobytes()})
    cols = pa.schema([schema.RENDERS.field(n) for n in schema.RENDER_INPUT_COLUMNS])
    (d / "good").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=cols), d / "good" / "renders-0.parquet")
    (d / "corrupt").mkdir()
    (d / "corrupt" / "renders-0.parquet").write_bytes(b"PAR1 not really")
    (d / "empty").mkdir()
    return d


def test_train_and_retrieval_refuse_bad_input(world, render_world, tmp_path, capsys):
    """The trainer and the retrieval evaluation keep the promise too (issue 9's entry points)."""
    good = render_world / "good"
    sources = {"missing": tmp_path / "none", "a file": world / "good.npy",
               "no shards": render_world / "empty", "a corrupt shard": render_world / "corrupt",
               **{f"special: {k}": v for k, v in special_files(tmp_path, "renders").items()}}
    train = ["train", "--steps", "2", "--batch-size", "4", "--quiet"]
    bad = [train + ["--renders", s, "--out", tmp_path / "t.npz"] for s in sources.values()]
    base = train + ["--renders", good, "--out", tmp_path / "t.npz"]
    bad += [base + ["--steps", v] for v in COUNTS_OUT_OF_RANGE]
    bad += [base + ["--members", v] for v in COUNTS_OUT_OF_RANGE + [str(10 ** 8)]]
    bad += [base + ["--seed", v] for v in SEEDS_OUT_OF_RANGE]
    bad += [base + ["--batch-size", v] for v in ("0", "1", str(HUGE))]
    bad += [base + ["--lr", v] for v in ("0", "-1", "nan", "inf")]
    bad += [base + ["--temperature", v] for v in ("0", "-0.1", "nan")]
    bad += [base + ["--signal", v] for v in ("bogus", "weak", "weak+augment")]
    bad += [base + ["--signal", "weak", "--pairs", p] for p in (tmp_path / "none", good)]
    bad += [train + ["--renders", good, "--out", t]
            for k, t in output_targets(tmp_path).items()]
    retrieval = ["retrieval", "--renders", good]
    bad += [["retrieval", "--renders", s, "--models", "2"] for s in sources.values()]
    bad += [retrieval + ["--models", v] for v in COUNTS_OUT_OF_RANGE + [str(10 ** 8)]]
    bad += [retrieval + ["--models", "2", "--seed", v] for v in SEEDS_OUT_OF_RANGE]
    bad += [retrieval + ["--checkpoint", p] for k, p in               # retrieval fits images to
            params_files(tmp_path, (world / "good.npz").read_bytes()).items()   # any input side
            if k != "metadata 64x64 input on 32x32 images"]
    for flag in ("--json", "--save-embeddings", "--plot"):
        bad += [retrieval + ["--models", "2", flag, t]
                for k, t in output_targets(tmp_path).items()]
    assert len(bad) >= 100
    for argv in bad:
        assert_refused(argv, capsys, tmp_path, argv)


def test_outputs_never_overwrite_or_lie_inside_inputs(world, tmp_path, capsys):
    """Issue 17, inputs destroyed: no command writes onto, or inside, one of its inputs (files,
    folders, the matches of an --images glob); every input is byte-identical afterwards."""
    renders = write_render_folder(tmp_path / "r")
    shard = renders / "renders-00000-of-00001.parquet"
    photos, labels = write_image_files(tmp_path, lambda k: f"label{k % 3}")
    match = tmp_path / "photos" / "set0" / "img0.png"
    train = ["train", "--renders", renders, "--steps", "2", "--batch-size", "4", "--quiet"]
    retrieval = ["retrieval", "--images", photos, "--labels", labels, "--models", "2"]
    test_set, params = world / "good.npy", world / "good.npz"
    (tmp_path / "ck").mkdir()
    cases = {
        "train --out the shard": train + ["--out", shard],
        "train --out inside the renders": train + ["--out", renders / "m.npz"],
        "train --json the shard": train + ["--out", tmp_path / "m.npz", "--json", shard],
        "train state onto the shard": train + ["--out", renders / "renders-00000-of-00001"],
        "retrieval --failures a glob match": retrieval + ["--failures", match],
        "retrieval --failures the labels": retrieval + ["--failures", labels],
        "retrieval --save-embeddings in renders": ["retrieval", "--renders", renders, "--models",
                                                   "2", "--save-embeddings", renders / "e.npy"],
        "retrieval --failures the checkpoint": ["retrieval", "--renders", tmp_path / "r",
                                                "--checkpoint", params, "--failures", params],
        "eval --json the test set": ["eval", "--test-set", test_set, "--json", test_set],
        "eval --save-params the params": ["eval", "--test-set", test_set, "--params", params,
                                          "--save-params", params],
        "weak-labels --out the renders": ["weak-labels", "--renders", renders, "--models", "2",
                                          "--out", renders],
        "weak-labels --out inside the renders": ["weak-labels", "--renders", renders,
                                                 "--models", "2", "--out", renders / "pairs"],
        "questions eval --json the checkpoint's file": [
            "questions", "eval", "--data", test_set, "--checkpoint", tmp_path / "ck",
            "--json", tmp_path / "ck"],
    }
    lines = {name: assert_refused(argv, capsys, tmp_path, name) for name, argv in cases.items()}
    assert all(("input" in line) or ("folder" in line) for line in lines.values()), lines
    assert "would overwrite the input" in lines["retrieval --failures a glob match"]


def test_degenerate_data_gets_a_one_line_error(world, tmp_path, capsys):
    """Issue 17, silently wrong: nothing to score, an oracle without second views, a net made for
    other sizes, finite but huge weights, an empty render folder, an out-of-range pixel."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rand_ensemble.pipelines import schema

    lone = write_render_folder(tmp_path / "lone", objects=6, views=1)
    photos, labels = write_image_files(tmp_path, lambda k: f"own{k}")
    empty = tmp_path / "empty"
    empty.mkdir()
    cols = pa.schema([schema.RENDERS.field(n) for n in schema.RENDER_INPUT_COLUMNS])
    pq.write_table(pa.Table.from_pylist([], schema=cols), empty / "renders-0.parquet")
    wide_net = tmp_path / "net64.npz"           # params made for 64x64 images
    config64 = ensemble.EmbedderConfig(widths=(4, 4), dense=4, embedding_dim=4, input_hw=64,
                                       pool="mean")
    checkpoint.save_params(wide_net, jax.device_get(ensemble.init_ensemble(
        jax.random.PRNGKey(0), 1, config64)), config64)
    huge = huge_weight_params(tmp_path, world / "good.npz")
    pixel = np.random.default_rng(0).random((2, 11, 32, 32, 3)).astype(np.float32) * 0.5
    pixel[1, 3, 4, 5, 2] = np.float32(1.0000001)
    np.save(tmp_path / "over.npy", pixel)
    expect = {
        "nothing to score": (["retrieval", "--renders", lone, "--models", "2"],
                             "nothing to score"),
        "every image its own class": (["retrieval", "--images", photos, "--labels", labels,
                                       "--models", "2"], "nothing to score"),
        "oracle without second views": (["train", "--renders", lone, "--signal", "oracle",
                                         "--steps", "2", "--batch-size", "2", "--quiet",
                                         "--out", tmp_path / "o.npz"], "oracle"),
        "64x64 net on 32x32 renders (weak-labels)": (
            ["weak-labels", "--renders", lone, "--checkpoint", wide_net,
             "--out", tmp_path / "wl"], "fill at least 75%"),
        "64x64 net on 32x32 renders (retrieval)": (
            ["retrieval", "--renders", lone, "--checkpoint", wide_net], "fill at least 75%"),
        "huge weights (eval)": (["eval", "--test-set", world / "good.npy", "--params", huge],
                                "NaN or infinite"),
        "huge weights (retrieval)": (["retrieval", "--renders", tmp_path / "lone", "--checkpoint",
                                      huge], None),
        "an empty render folder": (["retrieval", "--renders", empty, "--models", "2"],
                                   "the source is empty"),
        "a pixel of 1.0000001": (["eval", "--test-set", tmp_path / "over.npy"], "1.0000001]"),
    }
    for name, (argv, needle) in expect.items():
        line = assert_refused(argv, capsys, tmp_path, name)
        assert needle is None or needle in line, (name, line)


def test_work_is_bounded_before_it_starts(tmp_path, capsys):
    """Issue 17, unbounded work: renders whose estimated time is over 24 h are refused at once
    (without --allow-long); image sides are bounded."""
    cases = [["render", "--objects", "0:2", "--views", "2000000", "--out", tmp_path / "r"],
             ["render", "--objects", "0:900", "--views", "30", "--hw", "1024",
              "--out", tmp_path / "r"],
             ["render-test-set", "--examples", "2000000", "--hw", "1", "--out",
              tmp_path / "t.npy"],
             ["demo", "--examples", "250000", "--models", "1", "--out", tmp_path / "d",
              "--cache-dir", tmp_path / "c"],
             ["render-test-set", "--examples", "1", "--hw", "4097", "--out", tmp_path / "t.npy"],
             ["render", "--objects", "0:1", "--views", "1", "--hw", "100000",
              "--out", tmp_path / "r"]]
    lines = [assert_refused(argv, capsys, tmp_path, argv) for argv in cases]
    assert all("--allow-long" in line for line in lines[:4]), lines


def test_second_fuzz_cases(tmp_path, capsys):
    """The second fuzz of issue 17: a FIFO named like a shard, weak-labels --data --out inside
    the data, a folder of two Hugging Face splits, a huge --examples, a gallery sharing no label,
    non-ASCII digits and a BOM in manifests and CLI numbers, chance scores of a tiny pool."""
    import warnings

    import pyarrow as pa
    import pyarrow.parquet as pq

    from rand_ensemble.evaluate import retrieval
    from rand_ensemble.pipelines.render_job import read_manifest

    images = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "ints.npz", images=images, labels=np.arange(20) % 10)
    np.savez(tmp_path / "names.npz", images=images, labels=np.array([f"c{k % 10}"
                                                                     for k in range(20)]))
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "renders-00000-of-00001.parquet")
    hf = tmp_path / "hf" / "data"
    hf.mkdir(parents=True)
    for split in ("train", "test"):
        pq.write_table(pa.table({"image": [b"x"], "label": [0]}),
                       hf / f"{split}-00000-of-00001.parquet")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    ints, names = f"{tmp_path}/ints.npz", f"{tmp_path}/names.npz"
    cases = {
        "train on a FIFO shard": (["train", "--renders", tmp_path / "fifo", "--out",
                                   tmp_path / "m.npz", "--steps", "2", "--quiet"], "FIFO"),
        "weak-labels on a FIFO shard": (["weak-labels", "--data", tmp_path / "fifo", "--models",
                                         "2", "--out", tmp_path / "w"], "FIFO"),
        "weak-labels --out inside --data": (["weak-labels", "--data", f"{tmp_path}/hf:train",
                                             "--models", "2", "--out", hf / "pairs"], "inside"),
        "two Hugging Face splits": (["make-test-set", "--data", tmp_path / "hf", "--out",
                                     tmp_path / "t.npy", "--examples", "2"], "splits"),
        "a huge --examples": (["make-test-set", "--data", ints, "--out", tmp_path / "t.npy",
                               "--examples", str(10 ** 9)], "memory"),
        "a gallery with no shared label": (["retrieval", "--data", ints, "--gallery", names,
                                            "--models", "1"], "shares no label"),
        "an empty manifest": (["render", "--manifest", tmp_path / "empty.txt", "--views", "1",
                               "--out", tmp_path / "r"], "no object ids"),
        "Arabic-Indic --models": (["eval", "--models", "\u0663"], "--models"),
        "full-width --objects": (["render", "--objects", "\uff10:5", "--views", "1", "--out",
                                  tmp_path / "r"], "--objects"),
    }
    for name, (argv, words) in cases.items():
        assert words in assert_refused(argv, capsys, tmp_path, name), name
    manifest = tmp_path / "m.txt"
    manifest.write_bytes("\ufeff900\n#908\n\uff19\uff10\uff11\n\u0669\u0660\u0662\n9_03\n904.0\n"
                         .encode())
    ids, failures = read_manifest(str(manifest), 1, 0)
    assert ids == [900] and len(failures) == 4, (ids, failures)
    from PIL import Image
    from rand_ensemble.data import sources
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    for k in range(2):
        Image.fromarray(images[k]).save(tmp_path / "pets" / "cat" / f"{k}.png")
    os.symlink("0.png", tmp_path / "pets" / "cat" / "copy.png")
    for spec in (f"folder:{tmp_path}/pets", f"images:{tmp_path}/pets/**/*.png"):
        ds = sources.load_dataset(spec)       # a link is a failure row, not a second image
        assert len(ds) == 2 and "same file" in ds.failures[0]["error"], (spec, ds.failures)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chance = retrieval.chance_metrics(np.array([0, 0, 1]))
    assert chance["recall_at_8"] == 1.0 and chance["precision_at_1"] == 0.5


def test_integers_outside_int64_are_refused_or_failure_rows(tmp_path, capsys):
    """Issue 28: a 20-digit object id in a render manifest reached Beam's VarIntCoder and died
    with an OverflowError traceback. The one integer rule (`integers.parse_int`) now refuses
    any value outside int64, so every reader of integer text (manifests, --objects, CLI
    numbers, ?limit=) gives a failure row or a one-line error."""
    from rand_ensemble.integers import INT64, OutsideInt64, parse_int
    from rand_ensemble.pipelines.render_job import read_manifest

    big, small = str(INT64[1] + 1), str(INT64[0] - 1)
    assert parse_int(str(INT64[1])) == 2 ** 63 - 1 and parse_int(str(INT64[0])) == -2 ** 63
    for text in (big, small, "9" * 20, " +" + "1" * 40 + " "):
        with pytest.raises(OutsideInt64):
            parse_int(text)
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"12345678901234567890\n3\n{big}\n")
    ids, lines = read_manifest(str(manifest), 1, 0)
    failures = [json.loads(line) for line in lines]
    assert ids == [3] and [f["input"]["line"] for f in failures] == [1, 3], failures
    assert all("int64" in f["error"] for f in failures)
    np.savez(tmp_path / "d.npz", images=np.zeros((20, 32, 32, 3), np.uint8),
             labels=np.arange(20) % 10)
    lines = [assert_refused(argv, capsys, tmp_path, argv) for argv in (
        ["render", "--objects", f"0:{'9' * 20}", "--views", "1", "--out", tmp_path / "r"],
        ["eval", "--models", "9" * 20],
        ["render-test-set", "--examples", "1", "--seed", big, "--out", tmp_path / "t.npy"],
        ["make-test-set", "--data", f"{tmp_path}/d.npz?limit={big}", "--examples", "2",
         "--out", tmp_path / "t.npy"])]
    assert "int64" in lines[1] and "limit must be a positive integer" in lines[3], lines
    (tmp_path / "only.txt").write_text("99999999999999999999\n")
    code, out, err = run(["render", "--manifest", tmp_path / "only.txt", "--views", "1",
                          "--out", tmp_path / "job"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "renders 0, failures 1" in out
    rows = [json.loads(line) for f in sorted((tmp_path / "job").glob("failures-*.jsonl"))
            for line in f.read_text().splitlines()]
    assert [r["input"]["manifest_line"] for r in rows] == ["99999999999999999999"]


def _script(name):
    """scripts/NAME.py as a module (scripts/ is no package; the studies import each other)."""
    import importlib
    import sys
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def test_study_scripts_plan_their_outputs_before_any_work(tmp_path, labelled_npz):
    """Issue 28: the study scripts wrote fixed names under --out with no output planning, so
    --out could name the folder holding their data. Each now checks --out, its fixed files and
    its cache subfolders against everything it reads, before reading or training anything:
    a one-line RandEnsembleError, nothing written."""
    from fuzz_inputs import snapshot
    data = tmp_path / "data"
    data.mkdir()
    labelled_npz(str(data / "d.npz"), 12, 0)
    (data / "classes" / "a").mkdir(parents=True)
    (data / "classes" / "a" / "x.png").write_bytes(b"not read")
    (tmp_path / "out" / "runs").mkdir(parents=True)
    labelled_npz(str(tmp_path / "out" / "runs" / "d.npz"), 12, 1)
    np.save(tmp_path / "out" / "validation_pairs.npy", np.zeros((2, 2), np.int64))
    npz, out = f"npz:{data}/d.npz", tmp_path / "out"
    cases = {
        "dataset_study: --out is the class folder read": ("dataset_study", [
            "--data", f"folder:{data}/classes", "--heldout", npz, "--out", data / "classes"],
            "would overwrite the input"),
        "dataset_study: --out inside the data folder": ("dataset_study", [
            "--data", f"folder:{data}/classes", "--heldout", npz,
            "--out", data / "classes" / "study"], "lies inside the input folder"),
        "dataset_study: an input inside --out/runs": ("dataset_study", [
            "--data", f"npz:{out}/runs/d.npz", "--heldout", npz, "--out", out], "runs"),
        "select_recipe: --heldout is a file it writes": ("select_recipe", [
            "--data", npz, "--heldout", f"npy:{out}/validation_pairs.npy", "--out", out],
            "would overwrite the input"),
        "label_free_study: --out is --data": ("label_free_study", [
            "--out", data, "--data", data, "--quick"], "would overwrite the input"),
        "fashion_search: --out is an IDX file": ("fashion_search", [
            "--runs", "oracle-vgg-500", "--data", data, "--out", data / "train-labels-idx1-ubyte"],
            "would overwrite the input"),
        "bench_all: --out is a folder": ("bench_all", ["--out", data], "is a folder"),
    }
    (data / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0" * 12)
    (data / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + b"\0" * 4)
    (data / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0" * 12)
    (data / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + b"\0" * 4)
    for name, (script, argv, words) in cases.items():
        before = snapshot(tmp_path)
        with pytest.raises(RandEnsembleError, match=words):
            _script(script).main([str(a) for a in argv])
        assert snapshot(tmp_path) == before, name


def test_a_cached_test_set_is_reused_only_if_it_is_what_its_name_says(tmp_path, monkeypatch):
    """Issue 28's second fuzz of demo: the render cache reused any loadable file under a
    cache name, so `demo --examples 3` scored a cached set of 2 examples (an item lost), a
    float or 16x16 set was used or refused, and a broken ids sidecar went unnoticed. A cached
    set must be uint8 (N, 11, hw, hw, 3) with integer ids (N, 11); anything else is rendered
    again (`test_sets.load_cached`; `demo` and `eval --examples` read the cache through
    `cached_test_set`)."""
    from rand_ensemble.data import render
    from rand_ensemble.data.test_sets import cache_path, cached_test_set, object_ids_path
    rendered = []

    def fake_render(n, seed, hw=32, colour="object", progress=False):
        rendered.append(n)
        return good_images(n, (n, 11, hw, hw, 3)), np.arange(n * 11, dtype=np.int32).reshape(n, 11)

    monkeypatch.setattr(render, "render_test_set", fake_render)
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = {3: (good_images(shape=(2, 11, 32, 32, 3)), np.zeros((2, 11), np.int32)),
           4: (good_images(shape=(4, 11, 32, 32, 3)).astype(np.float32) / 255,
               np.zeros((4, 11), np.int32)),
           5: (good_images(shape=(5, 11, 16, 16, 3)), np.zeros((5, 11), np.int32)),
           6: (good_images(shape=(6, 11, 32, 32, 3)), np.zeros((6, 10), np.int32)),
           7: (good_images(shape=(7, 11, 32, 32, 3)), np.zeros((7, 11), np.float32)),
           8: (good_images(shape=(8, 11, 32, 32, 3)), np.empty(3, object))}
    for n, (images, ids) in bad.items():
        path = cache_path(n, 0, cache_dir=str(cache))
        np.save(path, images)
        np.save(object_ids_path(path), ids, allow_pickle=True)
        rendered.clear()
        _, got = cached_test_set(n, 0, cache_dir=str(cache))
        assert rendered == [n] and got.shape == (n, 11, 32, 32, 3) and got.dtype == np.uint8
        assert np.load(object_ids_path(path)).shape == (n, 11), n
        rendered.clear()
        assert np.array_equal(cached_test_set(n, 0, cache_dir=str(cache))[1], got)
        assert rendered == [], n                        # a good cache is reused


def test_params_of_another_number_kind_are_refused(world, question_world, tmp_path, capsys):
    """Issue 28's second fuzz of questions: integer weights in a tower's params.npz reached
    jax.nn.sigmoid and died with a TypeError traceback. The one tree loader (`fileio.
    load_tree`) now checks each leaf's number kind against the architecture's, for every
    params file (a tower, an image ensemble, a training state); float widths are cast."""
    import shutil
    qd, data_file = question_world
    flat, meta = fileio.read_tree(world / "good.npz")
    fileio.save_tree(tmp_path / "int.npz", fileio.unflatten_tree(
        {k: v.astype(np.int32) for k, v in flat.items()}), meta)
    tower_flat, _ = fileio.read_tree(qd / "ck" / "params.npz")
    for kind in (np.int32, np.uint8, np.float16):
        folder = tmp_path / f"ck_{np.dtype(kind).name}"
        shutil.copytree(qd / "ck", folder)
        os.unlink(folder / "params.npz")
        fileio.save_npz(folder / "params.npz", {k: (v * 100).astype(kind)
                                                for k, v in tower_flat.items()})
    lines = [assert_refused(argv, capsys, tmp_path, argv) for argv in (
        ["eval", "--test-set", world / "good.npy", "--params", tmp_path / "int.npz"],
        ["questions", "predict", "--checkpoint", tmp_path / "ck_int32", "a b?", "c d?"],
        ["questions", "eval", "--checkpoint", tmp_path / "ck_uint8", "--data", data_file])]
    assert all("expected floats" in line for line in lines), lines
    code, out, err = run(["questions", "predict", "--checkpoint", tmp_path / "ck_float16",
                          "a b?", "c d?"], capsys)
    assert code == 0 and "cosine similarity" in out, err
