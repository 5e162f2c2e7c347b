"""Session-wide test hooks: the fast tier, and the parity summary line.

The fast tier (``pytest -m "not slow"``) leaves out what is marked ``slow``:
child processes, notebooks, the 8-device runs and long hypothesis runs,
marked where they are written, and the extra cases of heavy
parametrizations. A parametrized test marked ``fast_cases(k)`` keeps ``k`` of
its cases in the fast tier, spread over its case list from an offset that
depends on the test module (so that modules pick different optimizers, and
the tests of one module, which often share a cached run, pick the same
cases); the other cases are marked ``slow``. CI runs everything.

Under pytest-xdist (``-n 2``, as ``.ci/run`` runs) each worker records its
own deviations; the workers send them to the controller when they finish,
which merges them (largest per module) before printing.
"""

import collections
import sys
import zlib

import pytest

_MERGED: dict = {}


def fast_indices(module: str, n: int, k: int) -> set:
  """The `k` of `n` cases a `fast_cases(k)` test keeps in the fast tier."""
  offset = zlib.crc32(module.encode()) % n
  return {(offset + (i * n) // k) % n for i in range(min(k, n))}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the marks
def pytest_collection_modifyitems(config, items):
  """Marks the cases of `fast_cases(k)` tests beyond their k as slow."""
  del config
  groups = collections.defaultdict(list)
  for item in items:
    marker = item.get_closest_marker("fast_cases")
    if marker is not None:
      key = (item.module.__name__, getattr(item, "originalname", item.name))
      groups[key].append((item, marker))
  for (module, _), members in groups.items():
    (k,) = members[0][1].args
    keep = fast_indices(module, len(members), k)
    for i, (item, _) in enumerate(members):
      if i not in keep:
        item.add_marker(pytest.mark.slow)


def _deviations() -> dict:
  oracle = sys.modules.get("keras_oracle")
  return getattr(oracle, "DEVIATIONS", None) or {}


def _merge(items) -> None:
  for (module, ulps), (dev, units, test) in items:
    key = (module, ulps)
    if dev >= _MERGED.get(key, (-1.0,))[0]:
      _MERGED[key] = (dev, units, test)


def pytest_sessionfinish(session):
  """A worker hands its deviations to the controller (xdist only)."""
  workeroutput = getattr(session.config, "workeroutput", None)
  if workeroutput is not None:
    workeroutput["parity"] = [
        [list(key), list(value)] for key, value in _deviations().items()]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
  """The controller merges what a finished worker recorded."""
  del error
  items = getattr(node, "workeroutput", {}).get("parity", [])
  _merge((tuple(key), tuple(value)) for key, value in items)


def pytest_terminal_summary(terminalreporter):
  """Prints the largest deviation from Keras each parity module saw."""
  _merge(_deviations().items())
  if not _MERGED:
    return
  terminalreporter.section("parity with Keras")
  for (module, ulps), (dev, units, test) in sorted(_MERGED.items()):
    terminalreporter.write_line(
        f"parity: largest deviation {dev:.1e} ({units:.2f} of {ulps} ulp "
        f"allowed) in {test}")
