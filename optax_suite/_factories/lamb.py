"""The ``lamb`` factory: Keras's signature over
:func:`~optax_suite.scale_by_lamb`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import lamb as _rule


@_base_options.with_base_doc
def lamb(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
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
  """Keras 3's ``Lamb``: the update rule of :func:`scale_by_lamb`.

  ``update`` always needs ``params`` (the trust ratio reads the weights).
  ``weight_decay`` is Keras's base decoupled decay, applied to the weights
  before the step and outside the trust ratio (not optax's ``lamb`` decay,
  which goes inside it).

  Args:
    learning_rate: the learning rate (see below).
    beta_1: decay rate of the first moment, in [0, 1).
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: added after the square root (Keras's default 1e-7).
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.lamb(learning_rate=0.1)
    >>> params = {'w': jnp.array([3.0, -4.0])}
    >>> state = opt.init(params)
    >>> updates, state = jax.jit(opt.update)({'w': jnp.array([2.0, 0.0])},
    ...                                      state, params)
    >>> optax.apply_updates(params, updates)['w']  # a step of 0.1 * |w|
    Array([ 2.5, -4. ], dtype=float32)
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
  own = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
  rule = lambda lr: _rule.scale_by_lamb(
      lr, beta_1, beta_2, epsilon, weight_decay=weight_decay,
      weight_decay_mask=weight_decay_mask,
      exclude_from_weight_decay=exclude_from_weight_decay)
  return _optimizer.build(KERAS, rule, options, own, name=name)


KERAS = _optimizer.KerasSpec(
    default_name="lamb",
    class_name="Lamb", factory=lamb,
    own_keys=("beta_1", "beta_2", "epsilon"),
    state_class=_rule.ScaleByLambState,
    slot_groups=lambda keras_optimizer: [[("momentum", "mu"),
                                          ("velocity", "nu")]],
    row_separable=False)
