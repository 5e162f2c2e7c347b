"""Every public name is documented with a runnable example, and listed.

The examples themselves run as doctests (pytest's --doctest-modules, set in
pyproject.toml, collects the optax_suite package). This module checks that
none is missing: each name in `optax_suite.__all__` has a docstring with a
`>>>` example that pytest will collect, and the README's API table lists
exactly the public names.
"""

import doctest
import inspect
import pathlib
import re
import subprocess
import sys

import pytest

import optax_suite as ox

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("name", sorted(ox.__all__))
def test_public_name_has_a_docstring_with_an_example(name):
  obj = getattr(ox, name)
  # Its own docstring: `inspect.getdoc` would fall back to a base class's.
  doc = vars(obj).get("__doc__") if isinstance(obj, type) else obj.__doc__
  assert doc, f"{name} has no docstring of its own"
  examples = doctest.DocTestParser().get_examples(doc)
  assert examples, f"{name}'s docstring has no >>> example"
  # --doctest-modules collects exactly what DocTestFinder finds in the
  # defining module: this docstring must be among those tests, so that its
  # example is run.
  module = obj if inspect.ismodule(obj) else sys.modules[obj.__module__]
  assert module.__name__.startswith("optax_suite")
  found = doctest.DocTestFinder().find(module)
  assert any(t.docstring == doc and t.examples for t in found), (
      f"{name}'s example is not collected from {module.__name__}")


def test_readme_api_table_lists_every_public_name():
  text = README.read_text()
  assert "\n## API\n" in text
  table = text.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
  listed = re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", table, re.M)
  assert sorted(listed) == sorted(ox.__all__)


@pytest.mark.slow
def test_imports_with_docstrings_stripped():
  """`python -OO` strips docstrings; the factories' docstrings are filled in
  at import time, which must not fail without them (issue 9 item 3)."""
  root = pathlib.Path(__file__).resolve().parent.parent
  out = subprocess.run(
      [sys.executable, "-OO", "-c",
       "import optax_suite as ox; assert ox.adam.__doc__ is None; "
       "print(len(ox.__all__))"],
      cwd=root, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr
  assert int(out.stdout) == len(ox.__all__)


def test_all_is_sorted_and_names_each_export_once():
  """``__all__`` is sorted (a reader finds a name by bisection) and holds
  no name twice; every name in it is an attribute of the package."""
  assert list(ox.__all__) == sorted(ox.__all__)
  assert len(set(ox.__all__)) == len(ox.__all__)
  assert all(hasattr(ox, name) for name in ox.__all__)
