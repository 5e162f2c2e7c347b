"""The ``lion`` factory: Keras's signature over
:func:`~optax_suite.scale_by_lion`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import lion as _rule


@_base_options.with_base_doc
def lion(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
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
  """Keras 3's ``Lion``: the update rule of :func:`scale_by_lion`.

  Keras's Lion has no weight decay unless asked (``optax.lion`` defaults to
  1e-3); when given, it is the base decoupled decay ``w * weight_decay *
  lr``, applied before the sign step.

  Args:
    learning_rate: the learning rate (see below).
    beta_1: interpolation between momentum and gradient for the step, in
      (0, 1].
    beta_2: decay rate of the momentum, in [0, 1].
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.lion(learning_rate=0.01)
    >>> params = jnp.array([1.0, -1.0])
    >>> updates, _ = opt.update(jnp.array([0.3, -2.0]), opt.init(params))
    >>> optax.apply_updates(params, updates)
    Array([ 0.99, -0.99], dtype=float32)
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
  own = dict(beta_1=beta_1, beta_2=beta_2)
  rule = lambda lr: _rule.scale_by_lion(lr, beta_1, beta_2)
  return _optimizer.build(KERAS, rule, options, own, name=name)


KERAS = _optimizer.KerasSpec(
    default_name="lion",
    class_name="Lion", factory=lion, own_keys=("beta_1", "beta_2"),
    state_class=_rule.ScaleByLionState,
    slot_groups=lambda keras_optimizer: [[("momentum", "momentum")]])
