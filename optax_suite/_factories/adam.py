"""The ``adam`` factory: Keras's signature over
:func:`~optax_suite.scale_by_adam`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import adam as _rule


@_base_options.with_base_doc
def adam(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
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
  """Keras 3's ``Adam``: the update rule of :func:`scale_by_adam`.

  Args:
    learning_rate: the learning rate (see below).
    beta_1: decay rate of the first moment, in [0, 1).
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: Keras's epsilon hat, added to ``sqrt(v)``.
    amsgrad: use the AMSGrad maximum of the second moment.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.adam(learning_rate=0.1, global_clipnorm=1.0)
    >>> params = {'w': jnp.array([1.0, -1.0])}
    >>> state = opt.init(params)
    >>> updates, state = jax.jit(opt.update)({'w': jnp.array([2.0, 0.0])},
    ...                                      state, params)
    >>> optax.apply_updates(params, updates)['w']
    Array([ 0.900001, -1.      ], dtype=float32)
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
  own = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad)
  rule = lambda lr: _rule.scale_by_adam(lr, beta_1, beta_2, epsilon, amsgrad)
  return _optimizer.build(KERAS, rule, options, own, name=name)


def _keras_slots(keras_optimizer):
  groups = [[("momentum", "mu"), ("velocity", "nu")]]
  if keras_optimizer.amsgrad:
    groups.append([("velocity_hat", "nu_hat")])
  return groups


KERAS = _optimizer.KerasSpec(
    default_name="adam",
    class_name="Adam", factory=adam,
    own_keys=("beta_1", "beta_2", "epsilon", "amsgrad"),
    state_class=_rule.ScaleByAdamState, slot_groups=_keras_slots)
