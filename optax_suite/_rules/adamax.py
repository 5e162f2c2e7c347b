"""Keras's Adamax as an optax transformation (epsilon added to the norm)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees
from optax_suite._options import sparse as _sparse


class ScaleByAdamaxState(NamedTuple):
  """State of :func:`scale_by_adamax`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_adamax(beta_1=0.5)
    >>> _, state = tx.update(jnp.array([-2.0]), tx.init(jnp.zeros(1)))
    >>> state.m, state.u
    (Array([-1.], dtype=float32), Array([2.], dtype=float32))
  """
  count: chex.Array  # int32 [], update steps taken (Keras `iterations`).
  m: optax.Updates  # like params (slot dtype), first moment.
  u: optax.Updates  # like params (slot dtype), exponentially weighted inf-norm.


def scale_by_adamax(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    *,
    slot_dtype: Optional[Any] = None,
    lazy_rows: bool = False,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Adamax rule, learning rate included.

  With :math:`t` the update step (from 1) and :math:`\eta` the learning rate:

  .. math::
    m &\leftarrow m + (g - m)(1 - \beta_1) \\
    u &\leftarrow \max(\beta_2 u, |g|) \\
    \Delta &= \eta\, m / \big((1 - \beta_1^t)(u + \epsilon)\big)

  ``epsilon`` is added to the norm ``u`` inside the bias-corrected
  denominator, as Keras does (optax adds it elsewhere). The output points up
  the gradient: negate it, or keep ``learning_rate=1.0`` and chain
  ``optax.scale_by_learning_rate``. Low-precision leaves are computed in
  float32 and cast back, so a zero gradient never yields ``0 / 0``.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    beta_1: decay rate of the first moment, in [0, 1).
    beta_2: decay rate of the infinity norm, in [0, 1).
    epsilon: added to the norm, >= 0.
    lazy_rows: for a row-sparse (``BCOO``) gradient, move only its rows and
      their slots (see :func:`optax_suite.lazy_rows`); the update is then
      row-sparse.
    slot_dtype: dtype of ``m`` and ``u``; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_adamax(),
    ...                  optax.scale_by_learning_rate(0.1))
    >>> params = {'w': jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([0.5, 0.0])}, state)
    >>> optax.apply_updates(params, updates)['w']
    Array([ 0.90000004, -2.        ], dtype=float32)
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_unit_interval("beta_1", beta_1)
  _checks.check_unit_interval("beta_2", beta_2)
  _checks.check_non_negative("epsilon", epsilon)

  def init_fn(params):
    return ScaleByAdamaxState(
        jnp.zeros([], jnp.int32),
        _trees.slots(params, slot_dtype),
        _trees.slots(params, slot_dtype),
    )

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    t = (state.count + 1).astype(jnp.float32)
    one_minus_b1_power = 1 - jnp.power(jnp.asarray(beta_1, jnp.float32), t)
    one_minus_b1 = 1 - beta_1

    def leaf(m, g, u):
      if m is None:
        return _numerics.zero_update(g), None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, m32, u32 = g.astype(dt), m.astype(dt), u.astype(dt)
      m32 = m32 + (g32 - m32) * one_minus_b1
      u32 = jnp.maximum(beta_2 * u32, jnp.abs(g32))
      step = (lr.astype(dt) * m32) / (
          one_minus_b1_power.astype(dt) * (u32 + epsilon))
      return step.astype(g.dtype), m32.astype(m.dtype), u32.astype(u.dtype)

    step, m, u = _trees.tree_map_n(leaf, 3, state.m, updates, state.u)
    return step, ScaleByAdamaxState(optax.safe_increment(state.count), m, u)

  tx = optax.GradientTransformation(init_fn, update_fn)
  return _sparse.lazy_rows(tx) if lazy_rows else tx
