"""Keras's Adagrad as an optax transformation (epsilon inside the root)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


class ScaleByAdagradState(NamedTuple):
  """State of :func:`scale_by_adagrad`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_adagrad(initial_accumulator_value=0.5)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> state.accumulator
    Array([4.5], dtype=float32)
  """
  count: chex.Array  # int32 [], update steps taken (for schedules).
  accumulator: optax.Updates  # like params (slot dtype), running sum of g^2.


def _filled(p: Any, value: Any, dtype: Any) -> Any:
  """A slot holding `value`, on `p`'s sharding (None for untrained leaves)."""
  zero = _trees.zeros_like(p, dtype)
  if zero is None:
    return None
  return (zero.astype(_numerics.compute_dtype(zero.dtype)) + value).astype(
      zero.dtype)


def scale_by_adagrad(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    initial_accumulator_value: float = 0.1,
    epsilon: float = 1e-7,
    *,
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Adagrad rule, learning rate included.

  With :math:`a_0` = ``initial_accumulator_value`` and :math:`\eta` the
  learning rate:

  .. math::
    a &\leftarrow a + g^2 \\
    u &= \eta\, g / \sqrt{a + \epsilon}

  ``epsilon`` sits inside the square root, as in Keras (optax's
  ``adagrad`` puts it outside). The output points up the gradient: negate it
  (``optax.scale(-1.0)``). Low-precision leaves are computed in float32 and
  cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    initial_accumulator_value: starting value of the accumulator, >= 0.
    epsilon: added under the square root, >= 0.
    slot_dtype: dtype of the accumulator; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_adagrad(0.1, epsilon=0.0),
    ...                  optax.scale(-1.0))
    >>> params = {'w': jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([0.3, -0.3])}, state)
    >>> optax.apply_updates(params, updates)['w']  # 1 - 0.1 * 0.3 / sqrt(0.19)
    Array([ 0.9311753, -1.9311752], dtype=float32)
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_non_negative(
      "initial_accumulator_value", initial_accumulator_value)
  _checks.check_non_negative("epsilon", epsilon)

  def init_fn(params):
    return ScaleByAdagradState(
        jnp.zeros([], jnp.int32),
        _trees.tree_map(
            lambda p: _filled(p, initial_accumulator_value, slot_dtype),
            params),
    )

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)

    def leaf(a, g):
      if a is None:
        return _numerics.zero_update(g), None
      dt = _numerics.compute_dtype(g.dtype)
      g32 = g.astype(dt)
      a32 = a.astype(dt) + jnp.square(g32)
      u = (lr.astype(dt) * g32) / jnp.sqrt(a32 + epsilon)
      return u.astype(g.dtype), a32.astype(a.dtype)

    u, accumulator = _trees.tree_map_n(leaf, 2, state.accumulator, updates)
    return u, ScaleByAdagradState(
        optax.safe_increment(state.count), accumulator)

  return optax.GradientTransformation(init_fn, update_fn)
