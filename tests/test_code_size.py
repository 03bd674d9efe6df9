"""Issue 17's size limits, read from the package's source with `ast`: no module over 500 lines, no function
(or method) over 80 lines, counted from its `def` line to its last line, decorators and docstring included."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "w2s_jax"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _sources() -> list[tuple[Path, str]]:
  return [(p, p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))]


def test_every_module_is_at_most_500_lines():
  lines = {str(p.relative_to(PACKAGE)): len(src.splitlines()) for p, src in _sources()}
  long = {name: n for name, n in lines.items() if n > MAX_MODULE_LINES}
  assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_every_function_is_at_most_80_lines():
  long = {}
  for path, src in _sources():
    for node in ast.walk(ast.parse(src)):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        n = node.end_lineno - node.lineno + 1
        if n > MAX_FUNCTION_LINES:
          long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = n
  assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_limits_catch_a_long_function():
  """The counting itself: a 81-line function is over the limit, an 80-line one is not."""
  for body, over in ((79, False), (80, True)):
    src = "def f():\n" + "  x = 1\n" * body
    node = ast.parse(src).body[0]
    assert (node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES) is over
