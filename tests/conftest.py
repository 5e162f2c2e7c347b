"""Session-wide test hooks: the parity summary line per module."""

import sys


def pytest_terminal_summary(terminalreporter):
  """Prints the largest deviation from Keras each parity module saw."""
  oracle = sys.modules.get("keras_oracle")
  deviations = getattr(oracle, "DEVIATIONS", None)
  if not deviations:
    return
  terminalreporter.section("parity with Keras")
  for (module, ulps), (dev, units, test) in sorted(deviations.items()):
    terminalreporter.write_line(
        f"parity: largest deviation {dev:.1e} ({units:.2f} of {ulps} ulp "
        f"allowed) in {test}")
