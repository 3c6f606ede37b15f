"""The package builds as an sdist and a wheel, and the wheel runs when installed, not editable,
into a fresh virtual environment outside the checkout (no index: nothing is downloaded)."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("rand_ensemble", "setup.cfg", "setup.py", "pyproject.toml", "README.md", "LICENSE")


def run(argv, **kwargs):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    import rand_ensemble

    # Build from a copy, so the checkout gets no build/ or egg-info; sdist first, then the
    # wheel from the sdist (python -m build's default), with this environment's setuptools.
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), src / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(ROOT, name), src / name)
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"),
         str(src)])
    version = rand_ensemble.__version__
    wheel = tmp_path / "dist" / f"rand_ensemble-{version}-py3-none-any.whl"
    assert (tmp_path / "dist" / f"rand_ensemble-{version}.tar.gz").exists()
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"rand_ensemble-{version}.dist-info/METADATA").decode()
    assert any(n.endswith("dist-info/licenses/LICENSE") or n.endswith("dist-info/LICENSE")
               for n in names)
    assert not [n for n in names if n.startswith(("tests/", "docs/", "scripts/"))]
    for line in (f"Version: {version}", "Classifier: Programming Language :: Python :: 3",
                 "Project-URL: Source, https://github.com/rand-ensemble/rand_ensemble"):
        assert line in metadata
    assert "License: Apache-2.0" in metadata or "License-Expression: Apache-2.0" in metadata

    # A fresh venv; its dependencies come from this environment's site-packages through a .pth
    # (a plain path: .pth files inside it, such as the editable install's, are not processed).
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps",
         "-q", str(wheel)])

    work = tmp_path / "work"                       # outside the checkout, no PYTHONPATH
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JAX_PLATFORMS"] = "cpu"
    where = run([python, "-c", "import rand_ensemble, importlib.metadata as m; "
                 "print(rand_ensemble.__file__, rand_ensemble.__version__, "
                 "m.version('rand_ensemble'))"], cwd=work, env=env).split()
    assert where[0].startswith(site) and where[1] == where[2] == version
    script = str(venv / "bin" / "rand-ensemble")
    assert "COMMAND" in run([script, "--help"], cwd=work, env=env)
    images = np.random.default_rng(0).integers(0, 256, (4, 11, 32, 32, 3), dtype=np.uint8)
    np.save(work / "tiny.npy", images)
    run([script, "eval", "--test-set", "tiny.npy", "--models", "2", "--json", "report.json"],
        cwd=work, env=env)
    report = json.loads((work / "report.json").read_text())
    assert report["num_examples"] == 4 and report["num_models"] == 2
    assert len(report["per_model_accuracy"]) == 2
