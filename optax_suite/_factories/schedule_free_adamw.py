"""The ``schedule_free_adamw`` factory: Keras's signature over
:func:`~optax_suite.scale_by_schedule_free_adamw`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import schedule_free_adamw as _rule


@_base_options.with_base_doc
def schedule_free_adamw(
    learning_rate: _numerics.ScalarOrSchedule = 0.0025,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    warmup_steps: int = 0,
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
  """Keras 3's ``ScheduleFreeAdamW``: :func:`scale_by_schedule_free_adamw`.

  The parameters are Keras's training point ``y``; evaluate the model at
  ``ox.schedule_free_eval_params(params, state)`` (Keras has no such
  helper). The decoupled weight decay shrinks ``y`` before the step, as in
  Keras, and the step starts from the decayed ``y``. ``warmup_steps`` counts
  update steps. ``optax.contrib.schedule_free_adamw`` is the same method with
  optax's conventions (its own warmup and weighting, weight decay at ``y``);
  it does not give Keras's numbers.

  Args:
    learning_rate: the learning rate (see below).
    beta_1: interpolation between ``z`` and the average ``x``, in (0, 1].
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: added to the bias-corrected root.
    warmup_steps: update steps of linear learning-rate warmup (0: none).
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.schedule_free_adamw(learning_rate=0.1, warmup_steps=2)
    >>> params = jnp.array([1.0])
    >>> updates, state = opt.update(jnp.array([1.0]), opt.init(params), params)
    >>> optax.apply_updates(params, updates)  # half the rate in warmup
    Array([0.95], dtype=float32)
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
  own = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
             warmup_steps=warmup_steps)
  rule = lambda lr: _rule.stepping_from_decayed_params(
      _rule.scale_by_schedule_free_adamw(
          lr, beta_1, beta_2, epsilon, warmup_steps),
      weight_decay, lr, weight_decay_mask, exclude_from_weight_decay)
  return _optimizer.build(KERAS, rule, options, own, name=name)


KERAS = _optimizer.KerasSpec(
    default_name="schedule_free_adam_w",
    class_name="ScheduleFreeAdamW", factory=schedule_free_adamw,
    own_keys=("beta_1", "beta_2", "epsilon", "warmup_steps"),
    state_class=_rule.ScaleByScheduleFreeAdamwState, non_slots=("beta_1",),
    slot_groups=lambda keras_optimizer: [
        [("momentum", "momentum"), ("velocity", "velocity")]])
