"""Keras's RMSprop as an optax transformation (lr inside the momentum)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees
from optax_suite._options import sparse as _sparse


class ScaleByRmspropState(NamedTuple):
  """State of :func:`scale_by_rmsprop`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_rmsprop(rho=0.75, momentum=0.5)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> state.velocity, state.momentum is not None
    (Array([1.], dtype=float32), True)
  """
  count: chex.Array  # int32 [], update steps taken (for schedules).
  velocity: optax.Updates  # like params (slot dtype), E[g^2].
  momentum: Optional[optax.Updates]  # like params; None: momentum is number 0.
  # like params; None unless centered.
  average_gradient: Optional[optax.Updates]


def _uses_momentum(momentum: Any) -> bool:
  """Keeps a momentum slot unless momentum is a Python or NumPy zero.

  A zero number has no slot, as in Keras. A JAX array always has one, zero
  or not: an injected momentum is a concrete array when ``init`` runs eagerly
  and a tracer under ``jax.jit``, so deciding on its value would give two
  state structures, and a momentum injected as 0 could never act later.
  """
  if isinstance(momentum, jax.Array):
    return True
  return float(np.asarray(momentum)) > 0


def scale_by_rmsprop(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    centered: bool = False,
    *,
    slot_dtype: Optional[Any] = None,
    lazy_rows: bool = False,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's RMSprop rule, learning rate included.

  .. math::
    v &\leftarrow \rho v + (1 - \rho) g^2 \\
    a &\leftarrow \rho a + (1 - \rho) g \quad \text{(centered only)} \\
    i &= \eta\, g / \sqrt{v - a^2 + \epsilon}
      \quad (a = 0 \text{ unless centered}) \\
    \mu &\leftarrow \gamma \mu + i, \quad \Delta = \mu \quad
      (\Delta = i \text{ when } \gamma = 0)

  ``epsilon`` sits inside the square root and the learning rate inside the
  momentum buffer, as in Keras, so a changing learning rate affects only new
  increments. The momentum buffer exists only when ``momentum > 0`` at
  construction (Keras's slots); under ``optax.inject_hyperparams`` a momentum
  that starts at 0 therefore stays 0. The output points up the gradient.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    rho: decay rate of the running averages, in [0, 1).
    momentum: heavy-ball momentum, in [0, 1).
    epsilon: added under the square root, >= 0.
    centered: subtract the squared running mean of the gradient.
    lazy_rows: for a row-sparse (``BCOO``) gradient, move only its rows and
      their slots (see :func:`optax_suite.lazy_rows`); the update is then
      row-sparse.
    slot_dtype: dtype of the slots; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_rmsprop(learning_rate=0.1),
    ...                  optax.scale(-1.0))
    >>> state = tx.init({'w': jnp.array(10.0)})
    >>> updates, state = tx.update({'w': jnp.array(10.0)}, state)
    >>> 10.0 + updates['w']
    Array(9.683772, dtype=float32)
  """
  _checks.check_flag("centered", centered)
  _checks.check_learning_rate(learning_rate)
  _checks.check_unit_interval("rho", rho)
  _checks.check_unit_interval("momentum", momentum)
  _checks.check_non_negative("epsilon", epsilon)

  def init_fn(params):
    return ScaleByRmspropState(
        jnp.zeros([], jnp.int32),
        _trees.slots(params, slot_dtype),
        (_trees.slots(params, slot_dtype) if _uses_momentum(momentum)
         else None),
        _trees.slots(params, slot_dtype) if centered else None,
    )

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    one_minus_rho = 1 - rho
    has_momentum = state.momentum is not None
    nones = _trees.nones_like(state.velocity)
    mom_in = state.momentum if has_momentum else nones
    avg_in = state.average_gradient if centered else nones

    def leaf(v, g, mom, avg):
      if v is None:
        return _numerics.zero_update(g), None, None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, v32 = g.astype(dt), v.astype(dt)
      v32 = rho * v32 + one_minus_rho * jnp.square(g32)
      if avg is not None:
        a32 = rho * avg.astype(dt) + one_minus_rho * g32
        denom = v32 - jnp.square(a32) + epsilon
        avg = a32.astype(avg.dtype)
      else:
        denom = v32 + epsilon
      step = (lr.astype(dt) * g32) / jnp.sqrt(denom)
      if mom is not None:
        step = momentum * mom.astype(dt) + step
        mom = step.astype(mom.dtype)
      return step.astype(g.dtype), v32.astype(v.dtype), mom, avg

    step, velocity, mom, avg = _trees.tree_map_n(
        leaf, 4, state.velocity, updates, mom_in, avg_in)
    return step, ScaleByRmspropState(
        optax.safe_increment(state.count),
        velocity,
        mom if has_momentum else None,
        avg if centered else None,
    )

  tx = optax.GradientTransformation(init_fn, update_fn)
  return _sparse.lazy_rows(tx) if lazy_rows else tx
