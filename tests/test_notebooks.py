"""The Colab notebooks run top to bottom against the installed library."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT


def run_notebook(name: str, folder: Path) -> list[dict]:
  """Executes colab/NAME.ipynb top to bottom in a fresh kernel (workdirs under `folder`); its outputs.

  The kernel inherits this process's environment (`W2S_NOTEBOOK_WORKDIR`, `W2S_JAX_CACHE`: set them first).
  """
  nb = nbformat.read(ROOT / "colab" / f"{name}.ipynb", as_version=4)
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(folder)}})
  client.execute()
  return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def check_outputs(outputs: list[dict], text: str) -> None:
  """No error output; `text` and a PNG image among the displayed outputs."""
  assert not [o for o in outputs if o.output_type == "error"]
  rendered = " ".join(str(o.get("data", {})) for o in outputs)
  assert text in rendered and "image/png" in rendered


# The preference notebook runs in tests/preference/test_preference_tasks.py, on the DPO smoke run it shows.
@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("W2S_NOTEBOOK_WORKDIR", str(tmp_path))
  monkeypatch.setenv("W2S_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  check_outputs(run_notebook("quickstart", tmp_path), "transfer %")
  assert (tmp_path / "quickstart/results.json").exists()


def test_install_cell_names_what_to_set_when_nothing_is_installed(tmp_path):
  # The install cell, run by an interpreter that cannot import w2s_jax (-S: no site-packages) in a folder
  # with no checkout above it, stops with a message naming SOURCE instead of a pip traceback.
  import subprocess
  import sys
  nb = nbformat.read(ROOT / "colab" / "quickstart.ipynb", as_version=4)
  cell = nb.cells[1].source
  others = [nbformat.read(ROOT / "colab" / f"{n}.ipynb", as_version=4).cells[1].source
            for n in ("preference", "tree_advantages")]
  assert others == [cell, cell]
  done = subprocess.run([sys.executable, "-S", "-c", cell], cwd=tmp_path, capture_output=True, text=True,
                        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
  assert done.returncode == 1
  assert "set SOURCE in this cell" in done.stderr
