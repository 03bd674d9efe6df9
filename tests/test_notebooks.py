"""The Colab notebooks run top to bottom against the installed library."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

# What each notebook must show: a text in its outputs and a file it writes under its workdir.
EXPECTED = {
  "quickstart": ("transfer %", "quickstart/results.json"),
  "preference": ("held-out reward accuracy", "preference/metrics.jsonl"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_executes(name, tmp_path, monkeypatch):
  monkeypatch.setenv("W2S_NOTEBOOK_WORKDIR", str(tmp_path))
  monkeypatch.setenv("W2S_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(ROOT / "colab" / f"{name}.ipynb", as_version=4)
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  rendered = " ".join(str(o.get("data", {})) for o in outputs)
  text, output = EXPECTED[name]
  assert text in rendered and "image/png" in rendered
  assert (tmp_path / output).exists()


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
