"""The fast tier (``pytest -m "not slow"``) exercises every public name.

A name counts as exercised by a test that runs in the fast tier when the
test's body names it (``ox.adam``, ``schedules.CosineDecay``, or imported by
name), when one of its parameters is that name or that object (a test
parametrized over ``tests/catalog.py``'s kinds), or when it is the doctest
of that name's docstring, or a doctest whose example names it. The check
reads the session's collected items, so it runs when the session collected
the whole suite (the fast tier, and CI's full run); a run of a few modules
skips it.
"""

from __future__ import annotations

import ast
import functools
import inspect
import pathlib
import textwrap

import pytest

import optax_suite
from optax_suite import schedules

TESTS = pathlib.Path(__file__).resolve().parent
PUBLIC = {name: getattr(optax_suite, name) for name in optax_suite.__all__}
PUBLIC.update({name: getattr(schedules, name) for name in schedules.__all__})


def _names_in_source(source: str) -> set:
  tree = ast.parse(textwrap.dedent(source))
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and node.attr in PUBLIC:
      found.add(node.attr)
    elif isinstance(node, ast.Name) and node.id in PUBLIC:
      found.add(node.id)
  return found


def _names_in_params(value) -> set:
  if isinstance(value, str):
    return {value} & set(PUBLIC)
  if isinstance(value, (tuple, list)):
    return set().union(*map(_names_in_params, value)) if value else set()
  if isinstance(value, dict):
    return _names_in_params(list(value.keys()) + list(value.values()))
  return {name for name, obj in PUBLIC.items() if obj is value}


@functools.lru_cache(maxsize=None)
def _function_names(function) -> frozenset:
  return frozenset(_names_in_source(inspect.getsource(function)))


def exercised(items) -> set:
  """The public names the given items exercise (see the module docstring)."""
  found: set = set()
  for item in items:
    if item.get_closest_marker("slow") is not None:
      continue
    dtest = getattr(item, "dtest", None)
    if dtest is not None:  # a doctest
      found |= {dtest.name.rsplit(".", 1)[-1]} & set(PUBLIC)
      for example in dtest.examples:
        try:
          found |= _names_in_source(example.source)
        except SyntaxError:  # a continuation line of a longer example
          pass
      continue
    function = getattr(item, "function", None)
    if function is None:
      continue
    found |= _function_names(function)
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
      found |= _names_in_params(list(callspec.params.values()))
  return found


def test_fast_tier_exercises_every_public_name(request):
  """Every name of `optax_suite.__all__` and `schedules.__all__` is
  exercised by a test outside the `slow` mark."""
  items = request.session.items
  roots = {pathlib.Path(a.split("::")[0]).resolve()
           for a in request.config.args}
  whole = roots <= {TESTS, TESTS.parent, TESTS.parent / "optax_suite"}
  if not whole or request.config.option.keyword:
    pytest.skip("reads the whole suite's items: run it with the suite")
  missing = sorted(set(PUBLIC) - exercised(items))
  assert not missing, (
      f"public names the fast tier does not exercise: {missing}; give one "
      "of their tests a fast case or drop its slow mark")


def test_the_check_sees_a_name_only_slow_tests_use(request):
  """The check can fail: without the doctests and the tests that name
  `state_to_keras`, it is missing from what the fast tier exercises."""
  items = [item for item in request.session.items
           if "state_to_keras" not in _source_of(item)]
  assert "state_to_keras" not in exercised(items)


def _source_of(item) -> str:
  dtest = getattr(item, "dtest", None)
  if dtest is not None:
    return dtest.name + "".join(e.source for e in dtest.examples)
  function = getattr(item, "function", None)
  text = inspect.getsource(function) if function is not None else ""
  callspec = getattr(item, "callspec", None)
  return text + (repr(callspec.params) if callspec is not None else "")
