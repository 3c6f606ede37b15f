"""The package's import structure, read from the source with `ast` (nothing is imported): no
circle of imports between the project's modules, no private name (`_x`) used outside the
module that defines it, and imports at the top unless a comment says why one waits."""
import ast
import os
import subprocess
import sys

import pytest

import rand_ensemble

PACKAGE = os.path.dirname(rand_ensemble.__file__)


def _modules():
    """{dotted module name: path} of every .py file in the package."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
                found[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = path
    return found


MODULES = _modules()


def _imports(path):
    """-> [(imported project module, lineno, inside a function?, the import line's comment)].

    `from pkg import name` names the submodule pkg.name when there is one, else pkg itself."""
    with open(path) as f:
        source = f.read()
    lines = source.splitlines()
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                line = lines[child.lineno - 1]
                comment = line.split("#", 1)[1].strip() if "#" in line else ""
                for target in _targets(child):
                    found.append((target, child.lineno, in_function, comment))
            visit(child, nested)

    visit(ast.parse(source), False)
    return found


def _targets(node):
    """The project modules one import statement loads."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level == 0 and node.module:
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                 else node.module for a in node.names]
    else:
        raise AssertionError(f"relative import at line {node.lineno}: use absolute imports")
    return [n for n in names if n.split(".")[0] == "rand_ensemble"]


def _cycle(graph):
    """One cycle of `graph` ({node: set of nodes}) as a list of nodes, or None."""
    state, stack = {}, []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = walk(node)
            if found:
                return found
    return None


def import_graph():
    """{module: modules it imports}, counting imports inside functions too: a lazy import
    only hides a circle until the function runs."""
    return {name: {target for target, *_ in _imports(path) if target != name}
            for name, path in MODULES.items()}


def test_the_cycle_finder_finds_cycles():
    """The checker itself: a hand-made graph with and without a circle."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": {"d"}, "d": {"b"}}) == ["b", "c", "d", "b"]


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "rand_ensemble.data.render" in graph and len(graph) > 50
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("source, expected", [
    ("from rand_ensemble.data import render\n", [("rand_ensemble.data.render", 1, False, "")]),
    ("def f():\n    from rand_ensemble.data import scene  # pybullet: only when rendering\n",
     [("rand_ensemble.data.scene", 2, True, "pybullet: only when rendering")]),
    ("import numpy as np\nfrom rand_ensemble.errors import RandEnsembleError\n",
     [("rand_ensemble.errors", 2, False, "")]),
    ("from rand_ensemble.data.test_sets import EXAMPLE_SIZE\n",
     [("rand_ensemble.data.test_sets", 1, False, "")]),
])
def test_imports_are_read_as_written(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports(str(path)) == expected


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def private_names_crossing(path):
    """-> ["line: name"] for each private name of another project module this file uses:
    `from rand_ensemble.m import _x`, or `m._x` / `C._x` where m is a project module and C a
    name imported from one."""
    with open(path) as f:
        tree = ast.parse(f.read())
    imported, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rand_ensemble"):
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{node.lineno}: {node.module}.{alias.name}")
                imported.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            imported.update(a.asname or a.name.split(".")[0] for a in node.names
                            if a.name.startswith("rand_ensemble"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):      # rand_ensemble.data.render._x
                base = base.value
            if isinstance(base, ast.Name) and base.id in imported:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(found)


def findings(scan):
    """{module: scan(its path)} for every module where the scan finds something."""
    return {name: found for name, path in MODULES.items() if (found := scan(path))}


def scanned(tmp_path, scan, source):
    """scan() of a module holding `source`: the scanners' own check."""
    path = tmp_path / "m.py"
    path.write_text(source)
    return scan(str(path))


def test_no_private_name_crosses_modules():
    assert findings(private_names_crossing) == {}


def test_the_private_name_scan_sees_each_form(tmp_path):
    assert scanned(tmp_path, private_names_crossing,
                   "import numpy as np\n"
                   "import rand_ensemble.data.render\n"
                   "from rand_ensemble.evaluate import neighbours as engine\n"
                   "from rand_ensemble.evaluate.exact_scores import _norms, pair_scores\n"
                   "from rand_ensemble.data.render import Renderer\n"
                   "engine._rows(np._private, engine.top_k)\n"
                   "rand_ensemble.data.render._cross(Renderer._place, self._own)\n"
                   "def _mine():\n    return _mine.__name__\n") == [
        "4: rand_ensemble.evaluate.exact_scores._norms", "6: engine._rows",
        "7: Renderer._place", "7: rand_ensemble.data.render._cross"]


def unexplained_lazy_imports(path):
    """-> ["line: import ..."] for each import inside a function whose line carries no comment
    (a block of consecutive imports may state its reason once)."""
    with open(path) as f:
        source = f.read()
    lines, found = source.splitlines(), []

    def visit(node, in_function):
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = [n for n in getattr(node, field, []) if isinstance(n, ast.AST)]
            if in_function:
                _check_groups(block)
            for child in block:
                visit(child, in_function or isinstance(child, (ast.FunctionDef,
                                                                ast.AsyncFunctionDef)))

    def _check_groups(block):
        group = []
        for stmt in block + [None]:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                group.append(stmt)
                continue
            if group and not any("#" in lines[n.lineno - 1] for n in group):
                found.extend(f"{n.lineno}: {lines[n.lineno - 1].strip()}" for n in group)
            group = []

    visit(ast.parse(source), False)
    return found


def test_imports_inside_functions_state_why():
    assert findings(unexplained_lazy_imports) == {}


def test_the_lazy_import_scan_sees_each_form(tmp_path):
    assert scanned(tmp_path, unexplained_lazy_imports,
                   "import json\n"
                   "def f():\n"
                   "    import jax\n"
                   "    if True:\n"
                   "        from rand_ensemble.data import render  # pybullet: only here\n"
                   "    try:\n"
                   "        import faiss  # optional\n"
                   "        import faiss.contrib\n"
                   "    except ImportError:\n"
                   "        from rand_ensemble import fileio\n"
                   "class C:\n"
                   "    def setup(self):\n"
                   "        x = 1\n"
                   "        import pyarrow\n") == [
        "3: import jax", "10: from rand_ensemble import fileio", "14: import pyarrow"]


def test_the_command_line_starts_without_jax_beam_or_pybullet():
    """Building every parser (what each `rand-ensemble` call does first) loads none of them;
    the packages' public names still resolve, each importing its module on first use."""
    code = ("import sys, rand_ensemble.cli as cli; cli.build_parser(); "
            "heavy = [m for m in ('jax', 'apache_beam', 'pybullet', 'matplotlib') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "from rand_ensemble import questions, embed; "
            "assert 'jax' in sys.modules and questions.train_tower.__module__ == "
            "'rand_ensemble.questions.trainer' and 'train_tower' in dir(questions); "
            "assert questions.tower.__name__ == 'rand_ensemble.questions.tower'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import rand_ensemble.questions
        rand_ensemble.questions.nothing
