"""The fuzz suite's hand-written bad command lines, one test per command: each must exit 2 with
one `rand-ensemble: error:` line naming the problem, never a traceback (generated and mutated
inputs: test_fuzz.py; subprocess cases: test_fuzz_subprocess.py)."""
import os
import subprocess
import sys

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rand_ensemble import cli
from rand_ensemble.model import checkpoint, ensemble
from rand_ensemble.pipelines import schema

from fuzz_inputs import one_line_error, run, write_render_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = ["--members", "2", "--steps", "3", "--batch-size", "4", "--warmup", "1",
            "--checkpoint-every", "1", "--log-every", "1", "--quiet"]
QUIET_TOWER = ["--steps", "2", "--batch-size", "8", "--d-model", "8", "--eval-every", "1",
               "--quiet"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A render folder: 5 objects x 3 views of 32x32 coloured squares."""
    return write_render_folder(tmp_path_factory.mktemp("pool") / "renders", objects=5, views=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory, question_pairs):
    """Quora-format train and test files and a tower checkpoint trained for two steps."""
    d = tmp_path_factory.mktemp("questions")
    train_file = question_pairs.write_pairs(str(d / "train.tsv"), 120, seed=0)
    test_file = question_pairs.write_pairs(str(d / "test.csv"), 40, seed=1)
    assert cli.main(["questions", "train", "--data", train_file, "--out", str(d / "ck"),
                     *QUIET_TOWER]) == 0
    return {"dir": d, "train": train_file, "test": test_file, "ck": str(d / "ck")}


def bad_inputs(tmp_path):
    np.save(tmp_path / "shape.npy", np.zeros((2, 10, 32, 32, 3), np.float32))
    nan = np.zeros((2, 11, 32, 32, 3), np.float32)
    nan[0, 0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    obj = np.empty(3, object)
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPYgarbage")
    np.save(tmp_path / "ok.npy", np.zeros((2, 11, 32, 32, 3), np.uint8))
    ok = str(tmp_path / "ok.npy")
    return [
        (["eval", "--test-set", str(tmp_path / "missing.npy")], "not found"),
        (["eval", "--test-set", str(tmp_path / "shape.npy")], "11 images"),
        (["eval", "--test-set", str(tmp_path / "nan.npy")], "NaN"),
        (["eval", "--test-set", str(tmp_path / "obj.npy")], "pickled"),
        (["eval", "--test-set", str(tmp_path / "corrupt.npy")], "cannot read"),
        (["eval", "--test-set", ok, "--models", "0"], "positive integer"),
        (["eval", "--test-set", ok, "--models", "ten"], "positive integer"),
        (["eval", "--test-set", ok, "--params", str(tmp_path / "nope.npz")], "not found"),
        (["eval"], "required"),
        (["eval", "--test-set", ok, "--bogus"], "unrecognized"),
        (["render-test-set", "--examples", "1", "--out", str(tmp_path / "x.png")], ".npy"),
        (["no-such-command"], "invalid choice"),
    ]


def test_eval_and_render_test_set_bad_command_lines(tmp_path, capsys):
    for argv, match in bad_inputs(tmp_path):
        code, out, err = run(argv, capsys)
        assert code == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rand-ensemble: error:"), (argv, err)
        assert match in lines[0], (argv, lines[0])


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rand_ensemble.cli", "eval", "--test-set",
                           str(tmp_path / "missing.npy")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("rand-ensemble: error:")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_retrieval_bad_command_lines(pool, tmp_path, capsys):
    folder = pool
    other = tmp_path / "o.npz"
    checkpoint.save_params(str(other), ensemble.init_ensemble(jax.random.PRNGKey(0), 1),
                           ensemble.DEFAULT_CONFIG)
    np.save(tmp_path / "unlabelled.npy", np.zeros((4, 32, 32, 3), np.uint8))
    cases = [
        (["--renders", str(tmp_path / "missing"), "--models", "2"], "not found"),
        (["--renders", str(tmp_path), "--models", "2"], "no renders"),
        (["--renders", str(folder)], "required"),
        (["--renders", str(folder), "--models", "2", "--checkpoint", str(other)], "not allowed"),
        (["--renders", str(folder), "--models", "0"], "positive"),
        (["--renders", str(folder), "--models", "2", "--json", "r.txt"], ".json"),
        (["--renders", str(folder), "--checkpoint", str(tmp_path / "none.npz")], "none.npz"),
        (["--data", str(tmp_path / "unlabelled.npy"), "--models", "2"], "no labels"),
        (["--data", f"renders:{folder}?limit=0", "--models", "2"], "positive integer"),
        (["--data", f"renders:{folder}", "--labels", "l.csv", "--models", "2"], "--labels"),
        (["--data", f"renders:{folder}", "--renders", str(folder), "--models", "2"],
         "not allowed"),
        (["--renders", str(folder), "--models", "2", "--failures",
          str(next(folder.glob("*.parquet")))], "overwrite the input"),
        (["--renders", str(folder), "--models", "2", "--gallery",
          str(tmp_path / "none")], "not found"),
    ]
    for argv, match in cases:
        code, out, err = run(["retrieval"] + argv, capsys)
        assert code == 2, argv
        assert err.startswith("rand-ensemble: error:") and match in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err


def test_train_bad_command_lines(pool, tmp_path, capsys):
    renders = str(pool)
    out = str(tmp_path / "m.npz")
    base = ["train", "--renders", renders, "--out", out]
    one_line_error(base + ["--steps", "0"], capsys, "--steps")
    one_line_error(base + ["--signal", "weak", "--pairs", str(tmp_path / "nope")], capsys,
                   "pairs folder not found")
    one_line_error(base + ["--signal", "weak"], capsys, "needs weak-label pairs")
    one_line_error(["train", "--renders", str(tmp_path / "none"), "--out", out], capsys,
                   "renders folder not found")
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    pq.write_table(pa.table({"image_id_a": ["o00000_v0000_s0"], "image_id_b": ["o07777_v0000_s0"],
                             "score": np.float32([0.9]), "rank": np.int32([1])},
                            schema=schema.PAIRS), pairs / "pairs-00000-of-00001.parquet")
    one_line_error(base + ["--signal", "weak", "--pairs", str(pairs)], capsys,
                   "not in the dataset")
    np.save(tmp_path / "x.npy", np.zeros((8, 32, 32, 3), np.uint8))
    one_line_error(["train", "--data", str(tmp_path / "x.npy"), "--out", out, "--signal",
                    "oracle"], capsys, "needs labels")
    one_line_error(["train", "--data", str(tmp_path / "x.npy"), "--renders", renders, "--out",
                    out], capsys, "not allowed")
    # A state checkpoint of another architecture (no biases) is refused on --resume.
    code, _, err = run(base + TINY_RUN[:-1] + ["--steps", "1", "--no-bias", "--quiet"], capsys)
    assert code == 0, err
    one_line_error(base + TINY_RUN + ["--resume"], capsys, "do not match the architecture")


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "rand_ensemble.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(stderr, fragment):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("rand-ensemble: error:") and fragment in lines[0]
    assert "Traceback" not in stderr


def test_questions_bad_file_in_a_subprocess(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,qid1,qid2,question1,question2,is_duplicate\n0,1,2,a,b,1\n1,3,4,c,d,yes\n")
    r = run_cli("questions", "train", "--data", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "line 3")
    r = run_cli("questions", "eval", "--data", str(bad), "--checkpoint", str(tmp_path / "x"),
                "--models", "2")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "not allowed with argument")


@pytest.mark.parametrize("argv, fragment", [
    (["questions", "train", "--data", "{train}", "--out", "{dir}/o", "--steps", "0"],
     "step-count integer"),
    (["questions", "train", "--data", "{dir}/missing.tsv", "--out", "{dir}/o"], "not found"),
    (["questions", "train", "--data", "{train}", "--out", "{dir}/o", "--lr", "-1"], "--lr"),
    (["questions", "eval", "--data", "{test}", "--checkpoint", "{dir}/nope"], "not found"),
    (["questions", "eval", "--data", "{test}"], "one of the arguments"),
    (["questions", "eval", "--data", "{test}", "--checkpoint", "{ck}", "--threshold", "2"],
     "--threshold"),
    (["questions", "predict", "--checkpoint", "{ck}", "  ", "How?"], "no words"),
    (["questions", "predict", "--checkpoint", "{ck}", "only one"], "required"),
    (["questions"], "needs a subcommand"),
])
def test_questions_bad_command_lines(files, capsys, argv, fragment):
    argv = [a.format(dir=files["dir"], train=files["train"], test=files["test"], ck=files["ck"])
            for a in argv]
    assert cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, fragment)
