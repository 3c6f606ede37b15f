"""The docs site cannot drift from the code: the reference covers every public name and command,
the tutorials are the colab/ notebooks, the getting-started page runs, the figures read their
tables. (`make docs` builds the HTML with warnings as errors; CI runs it after the tests.)"""
import argparse
import importlib
import inspect
import io
import json
import os
import pkgutil
import re
import shlex
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def notebook_code(path):
    """The sources of a notebook's code cells, in order."""
    import nbformat

    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_tutorials_are_the_colab_notebooks_with_outputs():
    colab = sorted(f for f in os.listdir(os.path.join(ROOT, "colab")) if f.endswith(".ipynb"))
    docs = sorted(f for f in os.listdir(os.path.join(DOCS, "tutorials")) if f.endswith(".ipynb"))
    assert docs == colab, "run docs/execute_notebooks.py for the missing or extra notebooks"
    index = open(os.path.join(DOCS, "tutorials", "index.md"), encoding="utf-8").read()
    import nbformat

    for name in colab:
        assert notebook_code(os.path.join(DOCS, "tutorials", name)) == notebook_code(
            os.path.join(ROOT, "colab", name)), f"{name}: rerun docs/execute_notebooks.py"
        assert name[:-len(".ipynb")] in index, f"{name} is not in the tutorials' toctree"
        nb = nbformat.read(os.path.join(DOCS, "tutorials", name), as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: no plot"
        assert not [o for o in outputs if o.output_type == "error"], f"{name}: an error output"


# --- the reference, from a build of the site (dummy builder: the environment, no HTML) ------

def modules():
    """Every module of the package but __main__ shims, imported."""
    import rand_ensemble

    found = [rand_ensemble]
    for info in pkgutil.walk_packages(rand_ensemble.__path__, "rand_ensemble."):
        if not info.name.endswith("__main__"):
            found.append(importlib.import_module(info.name))
    return found


def defining_module(module, name):
    """Where `module.name` is defined: a function's or class's own module, else (data) the
    module whose source assigns the name at top level."""
    obj = getattr(module, name)
    if getattr(obj, "__qualname__", None) == name:
        return obj.__module__
    assigned = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=", re.M)
    for m in modules():
        if vars(m).get(name) is obj and assigned.search(inspect.getsource(m)):
            return m.__name__
    raise AssertionError(f"no module assigns {module.__name__}.{name}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The docs built in process; -> (py objects, std labels, warnings text)."""
    from sphinx.application import Sphinx

    out = tmp_path_factory.mktemp("docs")
    warnings = io.StringIO()
    app = Sphinx(DOCS, DOCS, str(out / "out"), str(out / "doctrees"), "dummy",
                 status=io.StringIO(), warning=warnings, freshenv=True)
    app.build()
    return (set(app.env.get_domain("py").objects), set(app.env.get_domain("std").labels),
            warnings.getvalue())


# Sphinx 9 warns about APIs its own extensions still use; not ours to fix.
QUIET_SPHINX = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                          "ignore::PendingDeprecationWarning")


@pytest.mark.slow
@QUIET_SPHINX
def test_api_reference_has_every_public_name_and_run_function(built):
    objects, _, warnings = built
    assert "WARNING" not in warnings and "ERROR" not in warnings, warnings
    wanted = {}
    for module in modules():
        for name in getattr(module, "__all__", []):
            wanted[f"{module.__name__}.{name}"] = {
                f"{module.__name__}.{name}", f"{defining_module(module, name)}.{name}"}
        for name, obj in vars(module).items():
            if (name.startswith("run_") and inspect.isfunction(obj)
                    and obj.__module__ == module.__name__):
                wanted[f"{module.__name__}.{name}"] = {f"{module.__name__}.{name}"}
    assert len(wanted) > 50
    missing = sorted(name for name, where in wanted.items() if not where & objects)
    assert not missing, f"not in the API reference: {missing}"


def command_paths(parser, path=()):
    """Every command path of an argparse parser, walked here without the docs' extension."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,)
                yield from command_paths(sub, path + (name,))


@pytest.mark.slow
@QUIET_SPHINX
def test_cli_reference_has_every_command(built):
    from rand_ensemble.cli.main import build_parser

    _, labels, _ = built
    paths = list(command_paths(build_parser()))
    assert ("questions", "train") in paths and ("eval",) in paths
    missing = [" ".join(p) for p in paths if "cli-" + "-".join(p) not in labels]
    assert not missing, f"commands without a section in docs/reference/cli: {missing}"
    pages = {f[:-3] for f in os.listdir(os.path.join(DOCS, "reference", "cli"))}
    assert {p[0] for p in paths} <= pages, "a command without its own page"


# --- the getting-started page runs --------------------------------------------------------

def code_blocks(path, language):
    text = open(path, encoding="utf-8").read()
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def write_photos(folder, classes=10, per_class=3, seed=0):
    """Class folders of small noisy PNGs around one random image per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        base = rng.integers(0, 256, (32, 32, 3))
        os.makedirs(folder / f"class{c}")
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"class{c}" / f"{i}.png")


def one_of_ten_loop(emb):
    """Ensemble 1-of-10 accuracy by loops: summed member cosines, the positive strictly first."""
    emb = np.asarray(emb, np.float64)                                  # (M, N, 11, E)
    right = 0
    for n in range(emb.shape[1]):
        scores = [sum(float(emb[m, n, 0] @ emb[m, n, j]) for m in range(emb.shape[0]))
                  for j in range(1, 11)]
        right += all(scores[0] > s for s in scores[1:])
    return right / emb.shape[1]


@pytest.mark.slow
def test_getting_started_code_blocks_run(tmp_path, monkeypatch):
    page = os.path.join(DOCS, "getting-started.md")
    python, bash = code_blocks(page, "python"), code_blocks(page, "bash")
    assert len(python) == 1 and len(bash) == 1
    monkeypatch.chdir(tmp_path)
    blog = os.environ.get("RAND_ENSEMBLE_BLOG_TEST_SET")
    if not (blog and os.path.exists(blog)):        # a tiny test set of the same layout
        np.save(tmp_path / "tiny.npy", np.random.default_rng(0).integers(
            0, 256, (6, 11, 32, 32, 3), dtype=np.uint8))
        monkeypatch.setenv("RAND_ENSEMBLE_BLOG_TEST_SET", str(tmp_path / "tiny.npy"))
    namespace, printed = {}, io.StringIO()
    with redirect_stdout(printed):
        exec(compile(python[0], page, "exec"), namespace)
    ensemble = float(printed.getvalue().split("\n")[-2])
    assert ensemble == pytest.approx(one_of_ten_loop(namespace["emb"]))
    if blog and os.path.exists(blog):              # the page's own numbers for the blog's file
        claim = open(page, encoding="utf-8").read()
        mean, ens = re.search(r"averaging ([0-9.]+) and the ensemble's ([0-9.]+)", claim).groups()
        members = np.array(namespace["one_of_ten"].accuracy(namespace["sims"]))
        assert round(float(members.mean()), 3) == float(mean) and round(ensemble, 2) == float(ens)

    from rand_ensemble.cli.main import main

    write_photos(tmp_path / "photos")
    for line in bash[0].strip().split("\n"):
        argv = shlex.split(line)
        assert argv[0] == "rand-ensemble", f"only rand-ensemble commands here: {line}"
        assert main(argv[1:]) == 0, line
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["num_examples"] == 20 and report["num_models"] == 10
    for name in ("random.json", "trained.json", "photos.npz", "photo-pairs/summary.json"):
        assert (tmp_path / name).exists(), name


# --- figures and package metadata ---------------------------------------------------------

def test_figures_read_every_series_from_the_results_tables():
    sys.path.insert(0, DOCS)
    try:
        import make_figures
    finally:
        sys.path.remove(DOCS)
    data = make_figures.series()
    assert set(data) == {"p1_vs_members", "learning_curves", "search_cost"}
    pages = "".join(open(os.path.join(DOCS, "results", f), encoding="utf-8").read()
                    for f in os.listdir(os.path.join(DOCS, "results")))
    for figure, series in data.items():
        for name, points in series.items():
            assert points, f"{figure}: {name} is empty"
            for _, y in points:
                if figure != "search_cost":            # the cost model's hours are scaled
                    assert f"{y:.3f}" in pages, f"{figure}: {name}: {y} is in no table"
    assert [x for x, _ in data["p1_vs_members"]["Fashion-MNIST, blog net"]] == [1, 10, 32, 128]
    for name in os.listdir(os.path.join(DOCS, "images")):
        assert name[:-4] in {"p1_vs_members", "learning_curves", "search_cost"}


def test_version_has_one_source():
    import configparser
    from importlib.metadata import version

    import rand_ensemble

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    assert cfg["metadata"]["version"] == "attr: rand_ensemble.__version__"
    assert version("rand_ensemble") == rand_ensemble.__version__
