"""Run a notebook headless with nbclient, with extra environment variables for small sizes."""
import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_notebook(name, workdir, env=None, timeout=900):
    """Execute colab/<name> in `workdir`; returns the executed notebook (raises on a failing cell)."""
    nb = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
    saved = os.environ.copy()
    os.environ.update({"RAND_ENSEMBLE_NOTEBOOK_SMALL": "1", "MPLBACKEND": "Agg",
                       "PYTHONPATH": ROOT + os.pathsep + saved.get("PYTHONPATH", "")})
    os.environ.update(env or {})
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(workdir)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def cell_outputs(nb):
    """All text printed by the notebook's cells, joined."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)
