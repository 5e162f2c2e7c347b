"""Session-wide test hooks: the parity summary line per module.

Under pytest-xdist (``-n 2``, as ``.ci/run`` runs) each worker records its
own deviations; the workers send them to the controller when they finish,
which merges them (largest per module) before printing.
"""

import sys

import pytest

_MERGED: dict = {}


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
