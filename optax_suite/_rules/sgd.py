"""Keras's SGD as an optax transformation (lr inside the velocity)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import numpy as np
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


class ScaleBySgdState(NamedTuple):
  """State of :func:`scale_by_sgd`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_sgd(learning_rate=0.5, momentum=0.9)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> state.momentum
    Array([-1.], dtype=float32)
  """
  count: chex.Array  # int32 [], update steps taken (for schedules).
  momentum: optax.Updates  # like params (slot dtype), Keras's velocity `v`
  # (it points down the gradient); a tree of Nones when momentum is 0.


def _keeps_velocity(momentum: Any) -> bool:
  """No velocity only for a Python/NumPy number 0 (Keras builds none).

  An array momentum (what ``optax.inject_hyperparams`` passes, concrete when
  ``init`` runs eagerly, traced under ``jax.jit``) always keeps the slot, so
  the state has one structure however ``init`` runs and an injected momentum
  always acts.
  """
  if isinstance(momentum, (int, float, np.number)):
    return float(momentum) != 0
  return True


def scale_by_sgd(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    momentum: float = 0.0,
    nesterov: bool = False,
    *,
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's SGD rule, learning rate included.

  With :math:`\eta` the learning rate and :math:`\gamma` the momentum, Keras
  keeps a velocity :math:`v` with the learning rate inside it and moves the
  weight by :math:`\Delta`:

  .. math::
    v &\leftarrow \gamma v - \eta g \\
    \Delta &= v \quad\text{or, with nesterov,}\quad
      \Delta = \gamma v - \eta g \\
    \Delta &= -\eta g \quad \text{(no velocity when } \gamma = 0)

  The output is :math:`-\Delta` (it points up the gradient, like the other
  rules). Because :math:`\eta` enters the velocity, a changing learning rate
  affects only new increments, unlike ``optax.sgd``'s trace. The velocity
  exists unless ``momentum`` is a plain number 0 (Keras builds none); an
  array ``momentum`` (as ``optax.inject_hyperparams`` passes) always keeps
  it, so an injected momentum always acts. Low-precision leaves are computed
  in float32 and cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    momentum: momentum, in [0, 1].
    nesterov: use Nesterov momentum.
    slot_dtype: dtype of the velocity; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_sgd(0.1, momentum=0.5), optax.scale(-1.0))
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(jnp.array([1.0]), state)
    ...   params = optax.apply_updates(params, updates)
    >>> params  # 1 - 0.1 - (0.5 * 0.1 + 0.1)
    Array([0.75], dtype=float32)
  """
  _checks.check_flag("nesterov", nesterov)
  _checks.check_learning_rate(learning_rate)
  _checks.check_unit_interval("momentum", momentum, closed_right=True)

  def init_fn(params):
    # Without velocity a tree of Nones (no memory) keeps the params'
    # structure, so mismatched grads fail even when `params` is not passed.
    return ScaleBySgdState(
        jnp.zeros([], jnp.int32),
        _trees.slots(params, slot_dtype) if _keeps_velocity(momentum)
        else _trees.nones_like(params))

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)

    def leaf(v, g):
      if not _trees.is_trainable(g):
        return _numerics.zero_update(g), None
      dt = _numerics.compute_dtype(g.dtype)
      if v is None:  # No velocity (momentum 0): w -= lr * g.
        return (g.astype(dt) * lr.astype(dt)).astype(g.dtype), None
      g_lr = g.astype(dt) * lr.astype(dt)
      gamma = jnp.asarray(momentum, dt)
      v32 = v.astype(dt) * gamma - g_lr
      delta = v32 * gamma - g_lr if nesterov else v32
      return (-delta).astype(g.dtype), v32.astype(v.dtype)

    step, velocity = _trees.tree_map_n(leaf, 2, state.momentum, updates)
    return step, ScaleBySgdState(optax.safe_increment(state.count), velocity)

  return optax.GradientTransformation(init_fn, update_fn)
