"""The schedules' argument checks, in Keras's wording for its schedules.

Keras's ``LearningRateSchedule`` classes say "Argument `decay_steps` must be
> 0. Received: decay_steps=0"; the schedules here say the same.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import jax
import numpy as np

from optax_suite import _checks


def to_python_scalar(name: str, value: Any) -> Any:
  """A concrete NumPy/JAX scalar as a Python scalar; tracers, None and
  Python values unchanged. Python scalars keep configs JSON-serialisable and
  frozen dataclasses hashable (arrays are not)."""
  if not _checks.is_concrete(value) or value is None:
    return value
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    if np.ndim(value) != 0:
      raise ValueError(
          f"Argument `{name}` must be a scalar. Received: {name}={value!r} "
          f"with shape {np.shape(value)}."
      )
    return np.asarray(value).item()
  return value


def check_real(
    name: str,
    value: Any,
    *,
    low: Optional[float] = None,
    low_inclusive: bool = True,
    high: Optional[float] = None,
    allow_none: bool = False,
) -> Any:
  """A finite real scalar within bounds, returned as a Python number.

  Keras's wording for its schedules' arguments ("Argument `decay_steps` must
  be > 0. Received: decay_steps=0"). A traced value is returned unchecked.
  """
  value = to_python_scalar(name, value)
  if not _checks.is_concrete(value) or (value is None and allow_none):
    return value
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(
        f"Argument `{name}` must be a real number. Received: {name}={value!r}"
    )
  if not math.isfinite(value):
    raise ValueError(
        f"Argument `{name}` must be finite. Received: {name}={value!r}"
    )
  _checks.check_float32(name, value)
  v = float(value)
  if low is not None and (v < low or (v == low and not low_inclusive)):
    relation = ">=" if low_inclusive else ">"
    raise ValueError(
        f"Argument `{name}` must be {relation} {low}. Received: "
        f"{name}={value!r}"
    )
  if high is not None and v > high:
    raise ValueError(
        f"Argument `{name}` must be <= {high}. Received: {name}={value!r}"
    )
  return value


def check_bool(name: str, value: Any) -> bool:
  """A Python bool (a NumPy/JAX scalar bool is accepted), returned as bool."""
  value = to_python_scalar(name, value)
  if not isinstance(value, bool):
    raise ValueError(
        f"Argument `{name}` must be a Python bool. Received: {name}={value!r}"
    )
  return value



def check_optional_str(name: str, value: Any) -> Optional[str]:
  """A string or None, returned unchanged."""
  if value is not None and not isinstance(value, str):
    raise ValueError(
        f"Argument `{name}` must be a string or None. Received: "
        f"{name}={value!r}"
    )
  return value
