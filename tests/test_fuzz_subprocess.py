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

from fuzz_inputs import HUGE, header_bytes, write_render_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No empty PYTHONPATH entry: Python reads one as the working folder, and fails to start in a
# deleted one (the case test_environment_errors_are_one_line makes) before our code runs.
ENV = dict(os.environ, JAX_PLATFORMS="cpu",
           PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))


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


def _start(*argv):
    return subprocess.Popen([sys.executable, "-m", "rand_ensemble.cli", *map(str, argv)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=240):
    """Poll until `path` exists (True) or the process ends first (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear in {timeout} s")


@pytest.mark.slow
def test_sigterm_ends_eval_like_ctrl_c_with_143(tmp_path):
    """SIGTERM during an eval: exit 143, one line, no output or temp file left."""
    images = np.random.default_rng(0).integers(0, 256, (600, 11, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "big.npy", images)
    for delay in (1.0, 5.0):
        proc = _start("eval", "--test-set", tmp_path / "big.npy", "--models", "4",
                      "--json", tmp_path / "out" / "r.json", "--plots", tmp_path / "out")
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            shutil.rmtree(tmp_path / "out")
            continue
        assert proc.returncode == 143, (delay, proc.returncode, err)
        assert err.strip() == "rand-ensemble: terminated", err
        assert sorted(os.listdir(tmp_path)) == ["big.npy"], os.listdir(tmp_path)


TRAIN = ["train", "--steps", "60", "--batch-size", "4", "--members", "2", "--log-every", "7",
         "--checkpoint-every", "5", "--warmup", "2", "--quiet"]


@pytest.mark.slow
def test_sigterm_during_train_keeps_the_state_and_leaves_no_temps(tmp_path):
    """SIGTERM after the first checkpoint: exit 143, the state file loads, no temp file, no
    params; --resume then finishes."""
    renders = write_render_folder(tmp_path / "r")
    out = tmp_path / "m" / "t.npz"
    proc = _start(*TRAIN, "--renders", renders, "--out", out)
    assert _wait_for(tmp_path / "m" / "t.state.npz", proc), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("training finished before the signal")
    assert proc.returncode == 143, err
    assert err.strip() == "rand-ensemble: terminated", err
    assert sorted(os.listdir(tmp_path / "m")) == ["t.state.npz"]
    done = cli(*TRAIN, "--renders", renders, "--out", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "m")) == ["t.npz", "t.state.npz"]


@pytest.mark.slow
def test_train_killed_after_a_checkpoint_then_resumed_writes_the_same_bytes(tmp_path):
    """SIGKILL after the first checkpoint (inside a log window: checkpoints every 5 steps,
    log rows every 7), then --resume: the params file and the report equal an uninterrupted
    run's, byte for byte."""
    renders = write_render_folder(tmp_path / "r")
    whole = cli(*TRAIN, "--renders", renders, "--out", tmp_path / "a.npz",
                "--json", tmp_path / "a.json", timeout=300)
    assert whole.returncode == 0, whole.stderr
    proc = _start(*TRAIN, "--renders", renders, "--out", tmp_path / "b.npz",
                  "--json", tmp_path / "b.json")
    assert _wait_for(tmp_path / "b.state.npz", proc), proc.communicate()
    proc.kill()
    proc.communicate(timeout=60)
    assert not os.path.exists(tmp_path / "b.npz")
    resumed = cli(*TRAIN, "--renders", renders, "--out", tmp_path / "b.npz",
                  "--json", tmp_path / "b.json", "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_environment_errors_are_one_line(tmp_path):
    """Issue 17: a JAX backend that is not there, an unknown XLA flag, a deleted working folder
    and an error after pybullet has loaded (its banner) are each one line, exit 2."""
    np.save(tmp_path / "t.npy", np.zeros((2, 11, 32, 32, 3), np.uint8))
    gone = tmp_path / "gone"
    gone.mkdir()
    argv = [sys.executable, "-m", "rand_ensemble.cli"]
    script = ("import os, subprocess, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
              "sys.exit(subprocess.run(sys.argv[2:]).returncode)")
    cases = {
        "JAX_PLATFORMS": (dict(ENV, JAX_PLATFORMS="nosuch"),
                          argv + ["eval", "--test-set", tmp_path / "t.npy", "--models", "1"]),
        "XLA_FLAGS": (dict(ENV, XLA_FLAGS="--xla_nosuch_flag=1"),
                      argv + ["eval", "--test-set", tmp_path / "t.npy", "--models", "1"]),
        "deleted cwd": (ENV, [sys.executable, "-c", script, gone] + argv
                        + ["eval", "--test-set", tmp_path / "t.npy", "--models", "1"]),
        "after pybullet": (ENV, argv + ["render-test-set", "--examples", "1",
                                        "--out", tmp_path / "t.txt"]),
    }
    for name, (env, cmd) in cases.items():
        proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env,
                              timeout=120)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("rand-ensemble: error:"), (name, lines)
    assert sorted(os.listdir(tmp_path)) == ["t.npy"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_command_finished_keeps_its_status(signum):
    """Ctrl-C or SIGTERM while the interpreter shuts down after a finished command (the window
    CI hit: a loaded machine spends seconds in JAX's teardown) leaves the command's status,
    instead of the default action's -2/-15 with no message."""
    code = ("import os, signal, sys, time\n"
            "from rand_ensemble.cli.main import main\n"
            "sys.argv = ['rand-ensemble', 'make-test-set', '--help']\n"
            "try:\n    status = main()\nexcept SystemExit as e:\n    status = e.code\n"
            f"os.kill(os.getpid(), {int(signum)})\n"
            "time.sleep(0.5)\n"
            "print('after', status)\n"
            "sys.exit(status)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=ENV)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert proc.stdout.strip().endswith("after 0")
