"""Sphinx configuration of the rand_ensemble docs (`make docs`; see design/docs.md for the choices)."""
import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))          # the package, from this checkout
sys.path.insert(0, os.path.join(DOCS, "_ext"))     # cli_reference

import rand_ensemble  # noqa: E402  (no JAX: the package imports lazily)

project = "rand_ensemble"
author = "the rand_ensemble authors"
copyright = "2026, the rand_ensemble authors"
release = version = rand_ensemble.__version__

extensions = [
    "myst_nb",                      # Markdown pages and the tutorials' executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",       # the API reference, generated module by module
    "sphinx.ext.napoleon",          # Google-style Args: / Returns:
    "sphinx.ext.viewcode",
    "cli_reference",                # the CLI reference, generated from build_parser()
    "plain_docstrings",             # plain-text docstrings rendered as written
]

# Pages are Markdown (MyST); the tutorials are the executed copies in tutorials/, never run here.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4
exclude_patterns = ["_build", "execute_notebooks.py", "make_figures.py", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# Broken cross-references fail the build (make docs runs with -W --keep-going). Nothing is
# fetched from the internet (no intersphinx), so types from other projects and builtins that
# appear in signatures are not link targets; they are the only references let through.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|jax|jnp|jaxlib|optax|apache_beam|beam|pyarrow|pa|matplotlib|PIL|faiss|scipy|sp"
               r"|collections|typing|types|pathlib|os|io|argparse|dataclasses|enum|abc|concurrent"
               r"|subprocess|threading|multiprocessing|contextlib|json|csv|gzip)(\..*)?"),
    (r"py:.*", r"(str|int|float|bool|bytes|dict|list|tuple|set|frozenset|object|type|None|"
               r"Exception|ValueError|KeyboardInterrupt|callable|Callable|Any|Iterable|Iterator|"
               r"Sequence|Mapping|Optional|Union|array|ndarray|Array|PRNGKey|optional|"
               r"array-like|array_like|default|PyTree|pytree)"),
]

default_role = "literal"            # docstrings write `name` for code, as Markdown does
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False     # argparse's own docstrings are not ours to render
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Types in Args: / Returns: are shapes in words ("(N, E) unit rows"), not classes to link.
napoleon_use_param = False
napoleon_use_rtype = False

# CLI help and flags (--data) must read as typed, not as en dashes and curly quotes.
smartquotes = False

html_theme = "furo"
html_title = f"rand_ensemble {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}


def _reexports():
    """{package: [(canonical dotted name, is data)] of its __all__} for every package.

    A package's page lists the functions and classes it re-exports as links to where each is
    defined (one description per object, so unqualified references are never ambiguous), and
    describes its re-exported data itself (autodoc skips module data without a doc comment)."""
    import importlib
    import inspect
    import pkgutil
    import re

    def canonical(package, name):
        obj = getattr(package, name)
        if getattr(obj, "__qualname__", None) == name:                 # a function or class
            return f"{obj.__module__}.{name}", False
        assigned = re.compile(rf"^{name}\s*(:[^=]*)?=", re.M)          # data: where it is set
        module = next(m for m in _modules(package)
                      if vars(m).get(name) is obj and assigned.search(inspect.getsource(m)))
        return f"{module.__name__}.{name}", True

    def _modules(package):
        return [importlib.import_module(i.name) for i in pkgutil.walk_packages(
            package.__path__, package.__name__ + ".") if not i.name.endswith("__main__")]

    found = {}
    packages = [rand_ensemble] + [importlib.import_module(i.name) for i in pkgutil.walk_packages(
        rand_ensemble.__path__, "rand_ensemble.") if i.ispkg]
    for package in packages:
        names = getattr(package, "__all__", [])
        if names:
            found[package.__name__] = [canonical(package, n) for n in names]
    return found


autosummary_context = {"reexports": _reexports()}
