"""Keras's Lamb as an optax transformation (a trust ratio per variable)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees
from optax_suite._options import weight_decay as _weight_decay


class ScaleByLambState(NamedTuple):
  """State of :func:`scale_by_lamb`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_lamb(beta_1=0.5, beta_2=0.75)
    >>> params = jnp.ones(1)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(params), params)
    >>> state.mu, state.nu
    (Array([1.], dtype=float32), Array([1.], dtype=float32))
  """
  count: chex.Array  # int32 [], update steps taken (Keras `iterations`).
  mu: optax.Updates  # like params (slot dtype), first moment.
  nu: optax.Updates  # like params (slot dtype), second moment.


def scale_by_lamb(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    *,
    weight_decay: Optional[float] = None,
    weight_decay_mask: Any = None,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Lamb rule, learning rate included.

  With :math:`t` the update step (from 1), :math:`\eta` the learning rate and
  :math:`w` the variable (after Keras's decoupled weight decay, see below):

  .. math::
    m &\leftarrow m + (g - m)(1 - \beta_1) \\
    v &\leftarrow v + (g^2 - v)(1 - \beta_2) \\
    r &= \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon} \\
    u &= \eta\, \frac{\lVert w \rVert}{\lVert r \rVert}\, r

  The norms are taken over each leaf as a whole (one trust ratio per
  variable, as Keras), and the ratio is 1 where either norm is 0. Keras's
  weight decay is its base decoupled decay, applied to the variable before
  the step and outside the trust ratio; the trust ratio reads the decayed
  variable. ``weight_decay`` and its masks here do not decay anything: they
  tell the rule what the decay before it did (the package's optimizers apply
  it after the rule, as an update: :func:`optax_suite.keras_optimizer`). So
  ``update`` needs ``params``. The output points up the gradient: negate it
  (``optax.scale(-1.0)``). Low-precision leaves are computed in float32 and
  cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    beta_1: decay rate of the first moment, in [0, 1).
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: added to the root of the second moment, >= 0.
    weight_decay: the decoupled decay applied to the variables before this
      rule, or None.
    weight_decay_mask: its mask (tree of booleans or callable).
    exclude_from_weight_decay: its name patterns.
    slot_dtype: dtype of the moments; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_lamb(0.1), optax.scale(-1.0))
    >>> params = {'w': jnp.array([3.0, -4.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([0.5, -0.5])}, state,
    ...                            params)
    >>> optax.apply_updates(params, updates)['w']  # |w| = 5: steps of 0.1 * 5
    Array([ 2.6464467, -3.6464467], dtype=float32)
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_unit_interval("beta_1", beta_1)
  _checks.check_unit_interval("beta_2", beta_2)
  _checks.check_non_negative("epsilon", epsilon)
  if weight_decay is not None:
    _checks.check_non_negative("weight_decay", weight_decay)

  def init_fn(params):
    return ScaleByLambState(
        jnp.zeros([], jnp.int32),
        _trees.slots(params, slot_dtype),
        _trees.slots(params, slot_dtype),
    )

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "Lamb's trust ratio (the weights' norm)")
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    t = (state.count + 1).astype(jnp.float32)
    b1_power = jnp.power(jnp.asarray(beta_1, jnp.float32), t)
    b2_power = jnp.power(jnp.asarray(beta_2, jnp.float32), t)
    one_minus_b1, one_minus_b2 = 1 - beta_1, 1 - beta_2
    decays = _weight_decay.decay_flags(
        params, weight_decay, weight_decay_mask, exclude_from_weight_decay)

    def leaf(m, g, v, w, flag):
      if m is None:
        return _numerics.zero_update(g), None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, m32, v32, w32 = (x.astype(dt) for x in (g, m, v, w))
      if flag is not False:  # The variable Keras's update step reads.
        # Keras decays first and reads the decayed weight. The barrier keeps
        # XLA from merging this with the descent's own decayed weight: merged,
        # it gets two consumers and is written to a parameter-sized
        # temporary (`benchmarks/option_split.py`: 1.5x Keras at 32M).
        w32 = _weight_decay.decayed_weight(
            jax.lax.optimization_barrier(w).astype(dt), flag, weight_decay,
            lr.astype(dt))
      m32 = m32 + (g32 - m32) * one_minus_b1
      v32 = v32 + (jnp.square(g32) - v32) * one_minus_b2
      r = (m32 / (1.0 - b1_power).astype(dt)) / (
          jnp.sqrt(v32 / (1.0 - b2_power).astype(dt)) + epsilon)
      w_norm = jnp.sqrt(jnp.sum(jnp.square(w32)))
      r_norm = jnp.sqrt(jnp.sum(jnp.square(r)))
      ratio = jnp.where(w_norm > 0,
                        jnp.where(r_norm > 0, w_norm / r_norm, 1.0), 1.0)
      u = (ratio * lr.astype(dt)) * r
      return u.astype(g.dtype), m32.astype(m.dtype), v32.astype(v.dtype)

    u, mu, nu = _trees.tree_map_n(
        leaf, 3, state.mu, updates, state.nu, params, decays)
    return u, ScaleByLambState(optax.safe_increment(state.count), mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)
