"""Keras's Adam as an optax transformation (epsilon hat, optional AMSGrad)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees
from optax_suite._options import sparse as _sparse


class ScaleByAdamState(NamedTuple):
  """State of :func:`scale_by_adam`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_adam(beta_1=0.5, beta_2=0.75)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> state.mu, state.nu, state.nu_hat
    (Array([1.], dtype=float32), Array([1.], dtype=float32), None)
  """
  count: chex.Array  # int32 [], update steps taken (Keras `iterations`).
  mu: optax.Updates  # like params (slot dtype), first moment.
  nu: optax.Updates  # like params (slot dtype), second moment.
  nu_hat: Optional[optax.Updates]  # like params, max of `nu`; None w/o amsgrad.


def scale_by_adam(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
    *,
    slot_dtype: Optional[Any] = None,
    lazy_rows: bool = False,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Adam rule, learning rate included.

  With :math:`t` the update step (from 1) and :math:`\eta` the learning rate:

  .. math::
    m &\leftarrow m + (g - m)(1 - \beta_1) \\
    v &\leftarrow v + (g^2 - v)(1 - \beta_2) \\
    \alpha &= \eta \sqrt{1 - \beta_2^t} / (1 - \beta_1^t) \\
    u &= \alpha\, m / (\sqrt{v} + \hat\epsilon)

  ``epsilon`` is Keras's "epsilon hat", added after the bias correction, not
  optax's. With ``amsgrad`` the running maximum of :math:`v` replaces it. The
  output points up the gradient: negate it (``optax.scale(-1.0)``) or leave
  ``learning_rate=1.0`` and chain ``optax.scale_by_learning_rate``.
  Low-precision leaves are computed in float32 and cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    beta_1: decay rate of the first moment, in [0, 1).
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: epsilon hat, >= 0.
    amsgrad: keep the maximum of the second moment (AMSGrad).
    lazy_rows: for a row-sparse (``BCOO``) gradient, move only its rows and
      their slots (see :func:`optax_suite.lazy_rows`); the update is then
      row-sparse.
    slot_dtype: dtype of the moments; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_adam(), optax.scale_by_learning_rate(0.1))
    >>> params = {'w': jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([0.5, -0.5])}, state)
    >>> optax.apply_updates(params, updates)['w']
    Array([ 0.9000013, -1.9000013], dtype=float32)
  """
  _checks.check_flag("amsgrad", amsgrad)
  _checks.check_learning_rate(learning_rate)
  _checks.check_unit_interval("beta_1", beta_1)
  _checks.check_unit_interval("beta_2", beta_2)
  _checks.check_non_negative("epsilon", epsilon)

  def init_fn(params):
    return ScaleByAdamState(
        jnp.zeros([], jnp.int32),
        _trees.slots(params, slot_dtype),
        _trees.slots(params, slot_dtype),
        _trees.slots(params, slot_dtype) if amsgrad else None,
    )

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    t = (state.count + 1).astype(jnp.float32)
    b1_power = jnp.power(jnp.asarray(beta_1, jnp.float32), t)
    b2_power = jnp.power(jnp.asarray(beta_2, jnp.float32), t)
    alpha = lr * jnp.sqrt(1 - b2_power) / (1 - b1_power)
    one_minus_b1, one_minus_b2 = 1 - beta_1, 1 - beta_2

    def leaf(m, g, v, v_hat):
      if m is None:
        return _numerics.zero_update(g), None, None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, m32, v32 = g.astype(dt), m.astype(dt), v.astype(dt)
      m32 = m32 + (g32 - m32) * one_minus_b1
      v32 = v32 + (jnp.square(g32) - v32) * one_minus_b2
      denom_v = v32
      if v_hat is not None:
        v_hat = jnp.maximum(v_hat.astype(dt), v32)
        denom_v = v_hat
        v_hat = v_hat.astype(m.dtype)
      u = (m32 * alpha.astype(dt)) / (jnp.sqrt(denom_v) + epsilon)
      return u.astype(g.dtype), m32.astype(m.dtype), v32.astype(v.dtype), v_hat

    nu_hat = state.nu_hat if amsgrad else _trees.nones_like(state.mu)
    u, mu, nu, nu_hat = _trees.tree_map_n(
        leaf, 4, state.mu, updates, state.nu, nu_hat)
    return u, ScaleByAdamState(
        optax.safe_increment(state.count), mu, nu, nu_hat if amsgrad else None
    )

  tx = optax.GradientTransformation(init_fn, update_fn)
  return _sparse.lazy_rows(tx) if lazy_rows else tx
