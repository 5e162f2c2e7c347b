"""The demo (`python -m optax_suite`) trains, and agrees with Keras."""

import os
import re
import subprocess
import sys

import pytest

from catalog import KINDS


@pytest.mark.slow
def test_demo_trains_every_optimizer_and_matches_keras():
  env = dict(os.environ, KERAS_BACKEND="jax")
  out = subprocess.run([sys.executable, "-m", "optax_suite"], env=env,
                       capture_output=True, text=True, timeout=600, check=True)
  rows = re.findall(r"^([a-z_]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)",
                    out.stdout, flags=re.M)
  # Every optimizer the package ships is in the demo.
  assert sorted(r[0] for r in rows) == sorted(KINDS), out.stdout
  for name, start, end, deviation in rows:
    assert float(end) < 0.5 * float(start), (name, start, end)
    assert float(deviation) < 1e-6, (name, deviation)
  worst = re.search(r"largest deviation from Keras 3 over all runs: (\S+)",
                    out.stdout)
  assert worst and float(worst.group(1)) < 1e-6
