"""Keras's Lion as an optax transformation (sign of an interpolation)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


class ScaleByLionState(NamedTuple):
  """State of :func:`scale_by_lion`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_lion(beta_2=0.75)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> state.momentum
    Array([0.5], dtype=float32)
  """
  count: chex.Array  # int32 [], update steps taken (for schedules).
  momentum: optax.Updates  # like params (slot dtype), EMA of g with beta_2.


def _check_beta_1(beta_1: Any) -> None:
  """Keras's range for Lion's beta_1 is (0, 1]: 0 would be SignSGD."""
  _checks.check_number("beta_1", beta_1)
  v = _checks.as_float(beta_1)  # pylint: disable=protected-access
  if v is not None and not (math.isfinite(v) and 0 < v <= 1):
    raise ValueError(
        "`beta_1` must be in the range (0, 1] (0 makes Lion SignSGD). "
        f"Received: beta_1={beta_1!r}")


def scale_by_lion(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    *,
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Lion rule, learning rate included.

  .. math::
    u &= \eta\,\mathrm{sign}(\beta_1 m + (1 - \beta_1) g) \\
    m &\leftarrow \beta_2 m + (1 - \beta_2) g

  ``beta_1`` interpolates for the step and ``beta_2`` is the momentum's decay,
  the roles optax's ``scale_by_lion`` gives ``b1`` and ``b2``. The step is
  taken before the momentum is updated. A zero interpolation gives a zero
  step. The output points up the gradient; low-precision leaves are computed
  in float32 and cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    beta_1: interpolation between momentum and gradient, in (0, 1].
    beta_2: decay rate of the momentum, in [0, 1].
    slot_dtype: dtype of the momentum; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_lion(0.1), optax.scale(-1.0))
    >>> params = jnp.array([1.0, 1.0, 1.0])
    >>> updates, _ = tx.update(jnp.array([3.0, -0.5, 0.0]), tx.init(params))
    >>> optax.apply_updates(params, updates)
    Array([0.9, 1.1, 1. ], dtype=float32)
  """
  _checks.check_learning_rate(learning_rate)
  _check_beta_1(beta_1)
  _checks.check_unit_interval("beta_2", beta_2, closed_right=True)

  def init_fn(params):
    return ScaleByLionState(
        jnp.zeros([], jnp.int32), _trees.slots(params, slot_dtype))

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)

    def leaf(m, g):
      if m is None:
        return _numerics.zero_update(g), None
      dt = _numerics.compute_dtype(g.dtype)
      g32, m32 = g.astype(dt), m.astype(dt)
      b1, b2 = jnp.asarray(beta_1, dt), jnp.asarray(beta_2, dt)
      step = lr.astype(dt) * jnp.sign(m32 * b1 + g32 * (1 - b1))
      m32 = m32 * b2 + g32 * (1 - b2)
      return step.astype(g.dtype), m32.astype(m.dtype)

    step, momentum = _trees.tree_map_n(leaf, 2, state.momentum, updates)
    return step, ScaleByLionState(optax.safe_increment(state.count), momentum)

  return optax.GradientTransformation(init_fn, update_fn)
