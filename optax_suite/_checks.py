"""Argument checks, run at construction.

Each refuses a bad value with a ``ValueError`` in one wording: the argument
in backticks, what it must be, and ``Received: name=value``. They run on
concrete values only: under ``optax.inject_hyperparams`` a factory is called
again inside ``update`` with traced hyperparameters, which cannot (and need
not) be checked again.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value: Any) -> bool:
  """True for Python numbers and concrete arrays, False for tracers."""
  return not isinstance(value, jax.core.Tracer)


def as_float(value: Any) -> Optional[float]:
  """A concrete real number as a float; None for anything else (tracers,
  callables, None, bools, strings, arrays of more than one value)."""
  if value is None or callable(value) or isinstance(value, (bool, str, bytes)):
    return None
  if not is_concrete(value):
    return None
  try:
    return float(np.asarray(value))
  except (TypeError, ValueError):
    return None


def check_number(name: str, value: Any) -> None:
  """Refuses anything that is not a real number (or a traced scalar)."""
  if isinstance(value, bool) or (
      is_concrete(value) and as_float(value) is None
  ):
    raise ValueError(
        f"`{name}` must be a number. Received: {name}={value!r}"
    )
  check_float32(name, value)


INT32_MAX = 2**31 - 1


def check_float32(name: str, value: Any) -> None:
  """A finite number must stay finite, and a nonzero one nonzero, in float32.

  The checks run in float64, but the package stores hyperparameters as
  float32: 1e300 would become inf and 1e-50 zero. None, tracers and
  non-finite values (refused or allowed by the range checks) pass.
  """
  v = as_float(value)
  if v is None or not math.isfinite(v):
    return
  with np.errstate(over="ignore", under="ignore"):
    v32 = np.float32(v)
  if not np.isfinite(v32) or (v != 0 and v32 == 0):
    raise ValueError(
        f"`{name}` must survive its float32 cast (stay finite, and nonzero "
        f"when nonzero: magnitudes from about 1.4e-45 to 3.4e38). "
        f"Received: {name}={value!r}")


def check_non_negative(name: str, value: Any) -> None:
  """`value` must be a finite number >= 0."""
  check_number(name, value)
  v = as_float(value)
  if v is not None and (not math.isfinite(v) or v < 0):
    raise ValueError(
        f"`{name}` must be a finite number >= 0. Received: {name}={value!r}"
    )


def check_non_positive(name: str, value: Any) -> None:
  """`value` must be a finite number <= 0."""
  check_number(name, value)
  v = as_float(value)
  if v is not None and (not math.isfinite(v) or v > 0):
    raise ValueError(
        f"`{name}` must be a finite number <= 0. Received: {name}={value!r}"
    )


def check_positive(name: str, value: Any) -> None:
  """`value` must be a finite number > 0."""
  check_number(name, value)
  v = as_float(value)
  if v is not None and (not math.isfinite(v) or v <= 0):
    raise ValueError(
        f"`{name}` must be a finite number > 0. Received: {name}={value!r}"
    )


def check_unit_interval(
    name: str, value: Any, *, closed_right: bool = False
) -> None:
  """`value` must lie in [0, 1) (or [0, 1] when `closed_right`)."""
  check_number(name, value)
  v = as_float(value)
  if v is None:  # A traced value (under `optax.inject_hyperparams`).
    return
  upper_ok = (v <= 1) if closed_right else (v < 1)
  if not (math.isfinite(v) and 0 <= v and upper_ok):
    interval = "[0, 1]" if closed_right else "[0, 1)"
    raise ValueError(
        f"`{name}` must be in the range {interval}. Received: {name}={value!r}"
    )


def check_int_at_least(name: str, value: Any, minimum: int) -> None:
  """`value` must be an integer >= `minimum` (or a concrete integer array)."""
  if not is_concrete(value):
    return
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  if not ok and isinstance(value, (jax.Array, np.ndarray)):
    ok = value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.integer)
  if not ok or int(value) < minimum:
    raise ValueError(
        f"`{name}` must be an integer >= {minimum} or None. "
        f"Received: {name}={value!r}"
    )
  if int(value) > INT32_MAX:
    raise ValueError(
        f"`{name}` must be an integer < 2**31 (it is counted in int32). "
        f"Received: {name}={value!r}")


def check_flag(name: str, value: Any) -> bool:
  """An optimizer's on/off argument: True or False (a NumPy bool too).

  Anything else is refused, so that ``"False"`` or ``0`` from a config does
  not quietly turn a feature on or off. Returns the Python bool.
  """
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  raise ValueError(
      f"`{name}` must be True or False. Received: {name}={value!r}")


def check_optional_str(name: str, value: Any) -> Optional[str]:
  """A string or None, returned unchanged."""
  if value is not None and not isinstance(value, str):
    raise ValueError(
        f"`{name}` must be a string or None. Received: {name}={value!r}")
  return value


def check_learning_rate(value: Any) -> None:
  """A learning rate is a number >= 0 or a callable (schedule)."""
  if callable(value):
    return
  check_non_negative("learning_rate", value)


# ----------------------------------------------------------------------------
# Learning rates.

