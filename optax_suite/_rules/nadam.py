"""Keras's Nadam as an optax transformation (Dozat's momentum schedule)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


class ScaleByNadamState(NamedTuple):
  """State of :func:`scale_by_nadam`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_nadam(beta_1=0.5, beta_2=0.75)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> state.u_product, state.mu
    (Array(0.26, dtype=float32), Array([1.], dtype=float32))
  """
  count: chex.Array  # int32 [], update steps taken (Keras `iterations`).
  u_product: chex.Array  # float32 [], product of the momentum schedule.
  mu: optax.Updates  # like params (slot dtype), first moment.
  nu: optax.Updates  # like params (slot dtype), second moment.


def scale_by_nadam(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    *,
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Nadam rule, learning rate included.

  Dozat's Nadam with its momentum schedule. With :math:`t` the update step
  (from 1), :math:`\mu_t = \beta_1 (1 - \tfrac12 0.96^t)` and
  :math:`\Pi_t = \prod_{s \le t} \mu_s` (``u_product``, kept in the state as
  Keras keeps it):

  .. math::
    m &\leftarrow m + (g - m)(1 - \beta_1) \\
    v &\leftarrow v + (g^2 - v)(1 - \beta_2) \\
    \hat m &= \frac{\mu_{t+1}\, m}{1 - \Pi_t \mu_{t+1}}
      + \frac{(1 - \mu_t)\, g}{1 - \Pi_t} \\
    u &= \eta\, \hat m / \left(\sqrt{v / (1 - \beta_2^t)} + \epsilon\right)

  ``epsilon`` is added after the square root. optax's ``nadam`` is another
  algorithm (Adam with a Nesterov first moment, no momentum schedule). The
  output points up the gradient: negate it (``optax.scale(-1.0)``).
  Low-precision leaves are computed in float32 and cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    beta_1: decay rate of the first moment, in [0, 1).
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: added to the root of the second moment, >= 0.
    slot_dtype: dtype of the moments; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_nadam(0.1), optax.scale(-1.0))
    >>> params = {'w': jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([0.5, -0.5])}, state)
    >>> optax.apply_updates(params, updates)['w']  # the momentum schedule
    Array([ 0.8937212, -1.8937212], dtype=float32)
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_unit_interval("beta_1", beta_1)
  _checks.check_unit_interval("beta_2", beta_2)
  _checks.check_non_negative("epsilon", epsilon)

  def init_fn(params):
    return ScaleByNadamState(
        jnp.zeros([], jnp.int32),
        jnp.ones([], jnp.float32),
        _trees.slots(params, slot_dtype),
        _trees.slots(params, slot_dtype),
    )

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    # Keras's scalars, in its order of operations (float32 throughout).
    b1 = jnp.asarray(beta_1, jnp.float32)
    b2 = jnp.asarray(beta_2, jnp.float32)
    t = (state.count + 1).astype(jnp.float32)
    decay = jnp.asarray(0.96, jnp.float32)
    u_product = state.u_product * b1 * (1.0 - 0.5 * jnp.power(decay, t))
    u_t = b1 * (1.0 - 0.5 * jnp.power(decay, t))
    u_t_1 = b1 * (1.0 - 0.5 * jnp.power(decay, t + 1))
    u_product_t_1 = u_product * u_t_1
    b2_power = jnp.power(b2, t)
    one_minus_b1, one_minus_b2 = 1 - b1, 1 - b2

    def leaf(m, g, v):
      if m is None:
        return _numerics.zero_update(g), None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, m32, v32 = g.astype(dt), m.astype(dt), v.astype(dt)
      m32 = m32 + (g32 - m32) * one_minus_b1.astype(dt)
      v32 = v32 + (jnp.square(g32) - v32) * one_minus_b2.astype(dt)
      m_hat = (u_t_1.astype(dt) * m32) / (1 - u_product_t_1).astype(dt) + (
          (1 - u_t).astype(dt) * g32) / (1 - u_product).astype(dt)
      v_hat = v32 / (1 - b2_power).astype(dt)
      u = (m_hat * lr.astype(dt)) / (jnp.sqrt(v_hat) + epsilon)
      return u.astype(g.dtype), m32.astype(m.dtype), v32.astype(v.dtype)

    u, mu, nu = _trees.tree_map_n(leaf, 3, state.mu, updates, state.nu)
    return u, ScaleByNadamState(
        optax.safe_increment(state.count), u_product, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)
