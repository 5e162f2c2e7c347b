"""The ``rmsprop`` factory: Keras's signature over
:func:`~optax_suite.scale_by_rmsprop`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import rmsprop as _rule


@_base_options.with_base_doc
def rmsprop(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    centered: bool = False,
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
  """Keras 3's ``RMSprop``: the update rule of :func:`scale_by_rmsprop`.

  Args:
    learning_rate: the learning rate (see below); it sits inside the momentum
      buffer, as in Keras.
    rho: decay rate of the running averages, in [0, 1).
    momentum: heavy-ball momentum in [0, 1); a number 0 keeps no momentum
      slot (Keras); an injected one always has it, so it can be changed.
    epsilon: added under the square root.
    centered: divide by the estimated variance instead of the raw second
      moment.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.rmsprop(learning_rate=0.1)
    >>> params = jnp.array(10.0)
    >>> updates, _ = opt.update(params, opt.init(params))  # d(w**2/2)/dw = w
    >>> optax.apply_updates(params, updates)
    Array(9.683772, dtype=float32)
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
  own = dict(rho=rho, momentum=momentum, epsilon=epsilon, centered=centered)
  rule = lambda lr: _rule.scale_by_rmsprop(
      lr, rho, momentum, epsilon, centered)
  return _optimizer.build(KERAS, rule, options, own, name=name)


def _keras_slots(keras_optimizer):
  groups = [[("velocity", "velocity")]]
  if keras_optimizer.momentum > 0:
    groups.append([("momentum", "momentum")])
  if keras_optimizer.centered:
    groups.append([("average_gradient", "average_gradient")])
  return groups


KERAS = _optimizer.KerasSpec(
    default_name="rmsprop",
    class_name="RMSprop", factory=rmsprop,
    own_keys=("rho", "momentum", "epsilon", "centered"),
    state_class=_rule.ScaleByRmspropState, slot_groups=_keras_slots,
    optional_slots=("momentum",))
