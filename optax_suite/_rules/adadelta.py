"""Keras's Adadelta as an optax transformation."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees
from optax_suite._options import sparse as _sparse


class ScaleByAdadeltaState(NamedTuple):
  """State of :func:`scale_by_adadelta`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_adadelta(rho=0.5)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> state.accumulated_grad  # rho * 0 + (1 - rho) * g**2
    Array([2.], dtype=float32)
  """
  count: chex.Array  # int32 [], update steps taken (for schedules).
  accumulated_grad: optax.Updates  # like params (slot dtype), E[g^2].
  accumulated_delta_var: optax.Updates  # like params (slot dtype), E[dx^2].


def scale_by_adadelta(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    rho: float = 0.95,
    epsilon: float = 1e-7,
    *,
    slot_dtype: Optional[Any] = None,
    lazy_rows: bool = False,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Adadelta rule, learning rate included.

  Both running averages decay with ``rho``; the learning rate multiplies the
  Adadelta step:

  .. math::
    E[g^2] &\leftarrow \rho E[g^2] + (1 - \rho) g^2 \\
    \delta &= g \sqrt{E[\Delta x^2] + \epsilon} / \sqrt{E[g^2] + \epsilon} \\
    E[\Delta x^2] &\leftarrow \rho E[\Delta x^2] + (1 - \rho) \delta^2 \\
    \Delta &= \eta\, \delta

  The output points up the gradient: negate it, or keep ``learning_rate=1.0``
  and chain ``optax.scale_by_learning_rate``.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    rho: decay rate of both running averages, in [0, 1).
    epsilon: added under both square roots, >= 0.
    lazy_rows: for a row-sparse (``BCOO``) gradient, move only its rows and
      their slots (see :func:`optax_suite.lazy_rows`); the update is then
      row-sparse.
    slot_dtype: dtype of the running averages; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_adadelta(), optax.scale(-1.0))
    >>> state = tx.init({'w': jnp.zeros(2)})
    >>> updates, state = tx.update({'w': jnp.array([1.0, -1.0])}, state)
    >>> updates['w']
    Array([-0.00141421,  0.00141421], dtype=float32)
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_unit_interval("rho", rho)
  _checks.check_non_negative("epsilon", epsilon)

  def init_fn(params):
    return ScaleByAdadeltaState(
        jnp.zeros([], jnp.int32),
        _trees.slots(params, slot_dtype),
        _trees.slots(params, slot_dtype),
    )

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    one_minus_rho = 1 - rho

    def leaf(acc_g, g, acc_dx):
      if acc_g is None:
        return _numerics.zero_update(g), None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, ag, ad = g.astype(dt), acc_g.astype(dt), acc_dx.astype(dt)
      ag = rho * ag + one_minus_rho * jnp.square(g32)
      delta = (jnp.sqrt(ad + epsilon) * g32) / jnp.sqrt(ag + epsilon)
      ad = rho * ad + one_minus_rho * jnp.square(delta)
      step = lr.astype(dt) * delta
      return (step.astype(g.dtype), ag.astype(acc_g.dtype),
              ad.astype(acc_dx.dtype))

    step, acc_g, acc_dx = _trees.tree_map_n(
        leaf, 3, state.accumulated_grad, updates, state.accumulated_delta_var)
    return step, ScaleByAdadeltaState(
        optax.safe_increment(state.count), acc_g, acc_dx)

  tx = optax.GradientTransformation(init_fn, update_fn)
  return _sparse.lazy_rows(tx) if lazy_rows else tx
