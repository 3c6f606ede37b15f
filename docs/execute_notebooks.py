"""Execute colab/*.ipynb into docs/tutorials/ with their outputs, for the docs site.

Run by hand (never by `make docs`, which renders the stored outputs as they are):

    .venv/bin/python docs/execute_notebooks.py                 # every notebook, full sizes
    .venv/bin/python docs/execute_notebooks.py 01 03 --small   # some, with the test suite's sizes

colab/ keeps the notebooks without outputs (the test suite executes them); the copies here keep
the outputs and plots of one run. `tests/test_docs.py` checks that their code cells equal the
colab/ sources, so rerun this script after editing a notebook. Each notebook runs in a fresh
temporary folder (its renders and checkpoints are thrown away); the metadata records the sizes
and the date of the run. Notebook 05 reads Fashion-MNIST from $RAND_ENSEMBLE_FASHION_MNIST and
01 / 04 the blog file from $RAND_ENSEMBLE_BLOG_TEST_SET when set.
"""
import argparse
import datetime
import glob
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE, TARGET = os.path.join(ROOT, "colab"), os.path.join(ROOT, "docs", "tutorials")


def execute(name, small, timeout):
    """Run colab/<name> in a temporary folder; write docs/tutorials/<name> with its outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(os.path.join(SOURCE, name), as_version=4)
    env = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if small:
        env["RAND_ENSEMBLE_NOTEBOOK_SMALL"] = "1"
    saved = os.environ.copy()
    os.environ.update(env)
    start = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="rand_ensemble_nb_") as work:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": work}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    nb.metadata["rand_ensemble_docs"] = {
        "executed": datetime.date.today().isoformat(), "small": small,
        "seconds": round(time.time() - start)}
    os.makedirs(TARGET, exist_ok=True)
    nbformat.write(nb, os.path.join(TARGET, name))
    return time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--small", action="store_true",
                        help="the test suite's sizes (RAND_ENSEMBLE_NOTEBOOK_SMALL=1)")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per cell")
    args = parser.parse_args(argv)
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SOURCE, "*.ipynb")))
    chosen = [n for n in names if not args.prefixes or any(n.startswith(p) for p in args.prefixes)]
    if not chosen:
        parser.error(f"no notebook in colab/ starts with {args.prefixes}")
    for name in chosen:
        print(f"{name}: {execute(name, args.small, args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
