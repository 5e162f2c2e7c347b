"""The ``adagrad`` factory: Keras's signature over
:func:`~optax_suite.scale_by_adagrad`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import adagrad as _rule


@_base_options.with_base_doc
def adagrad(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
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
  options = _base_options.BaseOptions(
      learning_rate=learning_rate, weight_decay=weight_decay,
      clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
      use_ema=use_ema, ema_momentum=ema_momentum,
      ema_overwrite_frequency=ema_overwrite_frequency,
      loss_scale_factor=loss_scale_factor,
      gradient_accumulation_steps=gradient_accumulation_steps,
      exclude_from_weight_decay=exclude_from_weight_decay,
      weight_decay_mask=weight_decay_mask, lazy_rows=lazy_rows)
  own = dict(initial_accumulator_value=initial_accumulator_value,
             epsilon=epsilon)
  rule = lambda lr: _rule.scale_by_adagrad(
      lr, initial_accumulator_value, epsilon)
  return _optimizer.build(KERAS, rule, options, own, name=name)


KERAS = _optimizer.KerasSpec(
    default_name="adagrad",
    class_name="Adagrad", factory=adagrad,
    own_keys=("initial_accumulator_value", "epsilon"),
    state_class=_rule.ScaleByAdagradState,
    slot_groups=lambda keras_optimizer: [[("accumulator", "accumulator")]])
