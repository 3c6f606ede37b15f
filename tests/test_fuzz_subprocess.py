"""The promise as real processes see it: exit codes, no traceback, no hang, Ctrl-C -> 130.

A few representatives of tests/test_fuzz.py's families, run through `python -m rand_ensemble.cli`
(the console script's code path: main() with argv=None).
"""
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fuzz_inputs import HUGE, header_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           JAX_PLATFORMS="cpu")


def cli(*argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "rand_ensemble.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def test_bad_inputs_exit_2_with_one_line_and_no_hang(tmp_path):
    huge = tmp_path / "huge.npy.gz"
    huge.write_bytes(gzip.compress(header_bytes((HUGE, 11, 32, 32, 3))))
    os.mkfifo(tmp_path / "fifo.npy")
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_bytes(b'{"vocab_size": 4, "d_model": NaN}')
    cases = [
        ["eval", "--test-set", huge],
        ["eval", "--test-set", tmp_path / "fifo.npy"],                   # used to hang forever
        ["questions", "eval", "--data", tmp_path / "fifo.npy", "--models", "1"],
        ["eval", "--test-set", huge, "--seed", str(2 ** 63)],
        ["questions", "predict", "--checkpoint", tmp_path / "ck", "a", "b"],
        ["render", "--objects", "0:2", "--views", "1", "--out", tmp_path / "r",
         "--render-timeout", "inf"],
    ]
    for argv in cases:
        proc = cli(*argv)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (argv, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("rand-ensemble: error:"), (argv, lines)
        assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["ck", "fifo.npy", "huge.npy.gz"]


@pytest.mark.slow
def test_ctrl_c_while_embedding_exits_130_and_leaves_nothing(tmp_path):
    """SIGINT at several moments of an eval (import, load, embedding): exit 130, one line, no
    traceback, no segfault, no output or temp file."""
    images = np.random.default_rng(0).integers(0, 256, (600, 11, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "big.npy", images)
    for delay in (1.0, 4.0, 8.0):
        proc = subprocess.Popen(
            [sys.executable, "-m", "rand_ensemble.cli", "eval", "--test-set",
             tmp_path / "big.npy", "--models", "4", "--json", tmp_path / "out" / "r.json",
             "--plots", tmp_path / "out"], env=ENV, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:                      # finished before the signal: no claim,
            shutil.rmtree(tmp_path / "out")           # and its outputs go before the next try
            continue
        assert proc.returncode == 130, (delay, proc.returncode, err)
        assert err.strip() == "rand-ensemble: interrupted", err
        assert sorted(os.listdir(tmp_path)) == ["big.npy"], os.listdir(tmp_path)
