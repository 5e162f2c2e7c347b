"""The ``sgd`` factory: Keras's signature over
:func:`~optax_suite.scale_by_sgd`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import sgd as _rule


@_base_options.with_base_doc
def sgd(
    learning_rate: _numerics.ScalarOrSchedule = 0.01,
    momentum: float = 0.0,
    nesterov: bool = False,
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
  """Keras 3's ``SGD``: the update rule of :func:`scale_by_sgd`.

  Args:
    learning_rate: the learning rate (see below); it sits inside the
      velocity, as in Keras.
    momentum: momentum in [0, 1]; a number 0 keeps no velocity slot, as
      Keras (under ``optax.inject_hyperparams`` the slot is always kept).
    nesterov: use Nesterov momentum.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.sgd(learning_rate=0.1, momentum=0.9, nesterov=True)
    >>> params = jnp.array([1.0, -1.0])
    >>> updates, _ = opt.update(jnp.array([1.0, 0.5]), opt.init(params))
    >>> optax.apply_updates(params, updates)  # w - (1 + 0.9) * 0.1 * g
    Array([ 0.81 , -1.095], dtype=float32)
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
  own = dict(momentum=momentum, nesterov=nesterov)
  rule = lambda lr: _rule.scale_by_sgd(lr, momentum, nesterov)
  return _optimizer.build(KERAS, rule, options, own, name=name)


def _keras_slots(keras_optimizer):
  return [[("momentum", "momentum")]] if keras_optimizer.momentum != 0 else []


KERAS = _optimizer.KerasSpec(
    default_name="sgd",
    class_name="SGD", factory=sgd, own_keys=("momentum", "nesterov"),
    state_class=_rule.ScaleBySgdState, slot_groups=_keras_slots,
    optional_slots=("momentum",))
