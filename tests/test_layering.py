"""The package's layers, read from its source with `ast` (nothing is imported).

- `models` and `losses` import no other `w2s_jax` package (only themselves and `w2s_jax.sharding`);
- `data` does not import `sampling`; `train` imports neither `w2s` nor `recipes`;
- every import inside a function is of an optional heavy third-party package (`OPTIONAL`); the
  package's own modules and everything else are imported at module top.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "w2s_jax"
# Optional or heavy third-party packages a function may import on use (an extra, or only one path needs it).
OPTIONAL = ("gguf", "jinja2", "matplotlib", "pyarrow", "reasoning_gym", "safetensors", "sentencepiece",
            "tensorboardX", "tokenizers")
# Layer -> the w2s_jax modules (prefixes) it must not import.
FORBIDDEN = {
  "models": None,  # None: every w2s_jax module outside its own package and `w2s_jax.sharding`
  "losses": None,
  "data": ("w2s_jax.sampling",),
  "train": ("w2s_jax.w2s", "w2s_jax.recipes"),
}
BASE = ("w2s_jax.sharding",)


def _modules() -> list[Path]:
  return sorted(PACKAGE.rglob("*.py"))


def _imported(node: ast.AST, path: Path) -> list[str]:
  """The modules an Import/ImportFrom statement names (`from a import b` gives `a` and `a.b`)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if node.level:  # relative import: resolve against the module's package
    base = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-node.level])
    module = f"{base}.{node.module}" if node.module else base
  else:
    module = node.module or ""
  return [module] + [f"{module}.{a.name}" for a in node.names]


def _within(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + ".")


def _layer_violations(layer: str) -> list[str]:
  own, bad = f"w2s_jax.{layer}", []
  for path in sorted((PACKAGE / layer).rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if not isinstance(node, (ast.Import, ast.ImportFrom)):
        continue
      names = [n for n in _imported(node, path) if _within(n, "w2s_jax")]
      if FORBIDDEN[layer] is None:  # `from w2s_jax import x` names w2s_jax itself: judge it by x
        hits = [n for n in names if n != "w2s_jax" and not any(_within(n, p) for p in (own, *BASE))]
      else:
        hits = [n for n in names if any(_within(n, p) for p in FORBIDDEN[layer])]
      if hits:
        bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {hits[0]}")
  return bad


@pytest.mark.parametrize("layer", ["models", "losses", "data", "train"])
def test_layer_imports_nothing_above_it(layer):
  assert _layer_violations(layer) == []


def test_imports_inside_functions_are_only_optional_heavy_packages():
  bad = []
  for path in _modules():
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
      if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
          name = _imported(node, path)[0]
          if not any(_within(name, m) for m in OPTIONAL):
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {name} inside {fn.name}")
  assert bad == []


def test_the_rules_catch_what_they_forbid(tmp_path, monkeypatch):
  # The checks on a made-up package: each rule must fire (a checker that finds nothing proves nothing).
  pkg = tmp_path / "w2s_jax"
  for layer, text in {
    "models": "from w2s_jax.data.tokenizers import HFTokenizer\nfrom w2s_jax import sharding\n",
    "losses": "from w2s_jax.losses.aggregation import aggregate\nfrom w2s_jax import train\n",
    "data": "from w2s_jax.sampling.texts import sample_completions\nfrom w2s_jax.models import presets\n",
    "train": "def f():\n  import gguf\n\nfrom w2s_jax.w2s.ladder import Rung\n",
  }.items():
    (pkg / layer).mkdir(parents=True)
    (pkg / layer / "m.py").write_text(text)
  (pkg / "main.py").write_text("def f():\n  from w2s_jax.train import loop\n  import matplotlib\n")
  monkeypatch.setitem(globals(), "PACKAGE", pkg)
  assert _layer_violations("models") == ["w2s_jax/models/m.py:1 imports w2s_jax.data.tokenizers"]
  assert _layer_violations("losses") == ["w2s_jax/losses/m.py:2 imports w2s_jax.train"]
  assert _layer_violations("data") == ["w2s_jax/data/m.py:1 imports w2s_jax.sampling.texts"]
  assert _layer_violations("train") == ["w2s_jax/train/m.py:4 imports w2s_jax.w2s.ladder"]
  with pytest.raises(AssertionError, match=r"main.py:2 imports w2s_jax.train inside f"):
    test_imports_inside_functions_are_only_optional_heavy_packages()
