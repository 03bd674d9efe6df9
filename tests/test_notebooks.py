"""The Colab notebooks run top to bottom against the installed library."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart"])
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
  assert "transfer %" in rendered and "image/png" in rendered
  assert (tmp_path / "quickstart" / "results.json").exists()
