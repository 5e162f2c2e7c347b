"""The ``ftrl`` factory: Keras's signature over
:func:`~optax_suite.scale_by_ftrl`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import ftrl as _rule


@_base_options.with_base_doc
def ftrl(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    l1_regularization_strength: float = 0.0,
    l2_regularization_strength: float = 0.0,
    l2_shrinkage_regularization_strength: float = 0.0,
    beta: float = 0.0,
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
  """Keras 3's ``Ftrl``: the update rule of :func:`scale_by_ftrl`.

  The rule reads the weights after Keras's decoupled weight decay, as Keras's
  ``update_step`` does, so ``update`` always needs ``params``.

  Args:
    learning_rate: the learning rate (see below).
    learning_rate_power: <= 0; the per-coordinate rate is
      ``lr / n ** -learning_rate_power`` (0: fixed).
    initial_accumulator_value: starting value of the squared-gradient sum.
    l1_regularization_strength: L1 strength, >= 0.
    l2_regularization_strength: L2 (stabilization) strength, >= 0.
    l2_shrinkage_regularization_strength: L2 magnitude penalty added to the
      gradient in the linear term only, >= 0.
    beta: the paper's beta, entering as ``l2 + beta / (2 * lr)``.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.ftrl(learning_rate=0.5, l1_regularization_strength=0.1)
    >>> params = {'w': jnp.array([1.0, -1.0])}
    >>> state = opt.init(params)
    >>> updates, state = jax.jit(opt.update)({'w': jnp.array([2.0, 0.05])},
    ...                                      state, params)
    >>> optax.apply_updates(params, updates)['w']  # |z| <= l1 gives 0
    Array([0.32526815, 0.        ], dtype=float32)
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
  own = dict(
      learning_rate_power=learning_rate_power,
      initial_accumulator_value=initial_accumulator_value,
      l1_regularization_strength=l1_regularization_strength,
      l2_regularization_strength=l2_regularization_strength,
      l2_shrinkage_regularization_strength=(
          l2_shrinkage_regularization_strength),
      beta=beta)

  def rule(lr):
    return _rule.scale_by_ftrl(
        lr, learning_rate_power, initial_accumulator_value,
        l1_regularization_strength, l2_regularization_strength,
        l2_shrinkage_regularization_strength, beta,
        weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
        exclude_from_weight_decay=exclude_from_weight_decay)

  return _optimizer.build(KERAS, rule, options, own, name=name)


KERAS = _optimizer.KerasSpec(
    default_name="ftrl",
    class_name="Ftrl", factory=ftrl,
    own_keys=("learning_rate_power", "initial_accumulator_value",
              "l1_regularization_strength", "l2_regularization_strength",
              "l2_shrinkage_regularization_strength", "beta"),
    state_class=_rule.ScaleByFtrlState,
    slot_groups=lambda keras_optimizer: [[("accumulator", "accumulator"),
                                          ("linear", "linear")]])
