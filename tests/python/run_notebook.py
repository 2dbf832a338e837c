"""Executes python/examples/quickstart.ipynb with nbclient (a real Jupyter
kernel); the executed copy is written beside the test's output
(NOTEBOOK_OUT, else a temporary file). Env as for pkg_check.py."""

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

here = Path(__file__).resolve().parents[2]
nb = nbformat.read(here / "python/examples/quickstart.ipynb", as_version=4)
os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
with tempfile.TemporaryDirectory() as cwd:
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
out = Path(os.environ.get("NOTEBOOK_OUT") or tempfile.mkstemp(suffix=".ipynb")[1])
nbformat.write(nb, out)
print(f"notebook: executed ({out})")
