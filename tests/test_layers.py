"""The package's layering holds: modules import downward only.

``benchmarks/import_graph.py`` reads every module's imports statically and
reports an import of a higher layer or a read of another module's private
name. This test runs it and fails on any violation, and checks that the
rules (``scale_by_*``) import without the optimizer assembly.
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_no_upward_import_and_no_private_read():
  """The script exits 0 with ``--check`` only when there is no violation."""
  run = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "import_graph.py"),
       "--check", "--root", str(ROOT)], capture_output=True, text=True)
  assert run.returncode == 0, run.stdout + run.stderr
  assert "0 violation(s)" in run.stdout


@pytest.mark.slow
def test_the_rules_import_without_the_optimizer_assembly():
  """Importing every ``_rules`` module loads neither ``_optimizer`` nor a
  factory, wrapper or interop module (checked in a fresh interpreter)."""
  code = (
      "import sys, pkgutil, importlib\n"
      "import optax_suite._rules as r\n"
      "for m in pkgutil.iter_modules(r.__path__):\n"
      "  importlib.import_module('optax_suite._rules.' + m.name)\n"
      "bad = [n for n in sys.modules if n.startswith(("
      "'optax_suite._optimizer', 'optax_suite._factories', "
      "'optax_suite._wrappers', 'optax_suite._interop', "
      "'optax_suite._base_options'))]\n"
      "print(bad)\n"
      "assert not bad, bad\n")
  # `import optax_suite._rules` runs the package's __init__ first, which
  # imports everything; load the rule modules by path instead.
  code = code.replace(
      "import optax_suite._rules as r\n",
      "import types, importlib.util, pathlib\n"
      f"root = pathlib.Path({str(ROOT / 'optax_suite')!r})\n"
      "pkg = types.ModuleType('optax_suite'); pkg.__path__ = [str(root)]\n"
      "sys.modules['optax_suite'] = pkg\n"
      "import optax_suite._rules as r\n")
  run = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True)
  assert run.returncode == 0, run.stdout + run.stderr
