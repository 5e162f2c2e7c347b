"""Keras's Adagrad as an optax transformation (epsilon inside the root)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import chex
import jax.numpy as jnp
import optax

from optax_suite import _common
from optax_suite import _optimizer


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
  zero = _common.zeros_like(p, dtype)
  if zero is None:
    return None
  return (zero.astype(_common.compute_dtype(zero.dtype)) + value).astype(
      zero.dtype)


def scale_by_adagrad(
    learning_rate: _common.ScalarOrSchedule = 1.0,
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
  _common.check_learning_rate(learning_rate)
  _common.check_non_negative(
      "initial_accumulator_value", initial_accumulator_value)
  _common.check_non_negative("epsilon", epsilon)

  def init_fn(params):
    return ScaleByAdagradState(
        jnp.zeros([], jnp.int32),
        _common.tree_map(
            lambda p: _filled(p, initial_accumulator_value, slot_dtype),
            params),
    )

  def update_fn(updates, state, params=None):
    del params
    lr = _common.learning_rate_at(learning_rate, state.count)

    def leaf(a, g):
      if a is None:
        return _common.zero_update(g), None
      dt = _common.compute_dtype(g.dtype)
      g32 = g.astype(dt)
      a32 = a.astype(dt) + jnp.square(g32)
      u = (lr.astype(dt) * g32) / jnp.sqrt(a32 + epsilon)
      return u.astype(g.dtype), a32.astype(a.dtype)

    u, accumulator = _common.tree_map_n(leaf, 2, state.accumulator, updates)
    return u, ScaleByAdagradState(
        optax.safe_increment(state.count), accumulator)

  return optax.GradientTransformation(init_fn, update_fn)


@_optimizer.with_base_doc
def adagrad(
    learning_rate: _common.ScalarOrSchedule = 0.001,
    initial_accumulator_value: float = 0.1,
    epsilon: float = 1e-7,
    weight_decay: Optional[float] = None,
    clipnorm: Optional[float] = None,
    clipvalue: Optional[float] = None,
    global_clipnorm: Optional[float] = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: Optional[int] = None,
    loss_scale_factor: Optional[float] = None,
    gradient_accumulation_steps: Optional[int] = None,
    name: Optional[str] = None,
    *,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
    weight_decay_mask: Any = None,
    lazy_rows: bool = False,
) -> _optimizer.KerasOptimizer:
  """Keras 3's ``Adagrad``: the update rule of :func:`scale_by_adagrad`.

  Args:
    learning_rate: the learning rate (see below).
    initial_accumulator_value: starting value of the sum of squared
      gradients, >= 0.
    epsilon: added under the square root, as in Keras.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.adagrad(learning_rate=0.1, initial_accumulator_value=0.0)
    >>> params = {'w': jnp.array([1.0, -1.0])}
    >>> state = opt.init(params)
    >>> updates, state = jax.jit(opt.update)({'w': jnp.array([2.0, 0.0])},
    ...                                      state, params)
    >>> optax.apply_updates(params, updates)['w']  # a step of lr * sign(g)
    Array([ 0.9, -1. ], dtype=float32)
  """
  arguments = dict(locals())
  rule = lambda lr: scale_by_adagrad(lr, initial_accumulator_value, epsilon)
  return _optimizer.build(KERAS, "adagrad", rule, arguments)


KERAS = _optimizer.KerasSpec(
    class_name="Adagrad", factory=adagrad,
    own_keys=("initial_accumulator_value", "epsilon"),
    state_class=ScaleByAdagradState,
    slot_groups=lambda keras_optimizer: [[("accumulator", "accumulator")]])
