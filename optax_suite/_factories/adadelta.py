"""The ``adadelta`` factory: Keras's signature over
:func:`~optax_suite.scale_by_adadelta`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import adadelta as _rule


@_base_options.with_base_doc
def adadelta(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
    rho: float = 0.95,
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
  """Keras 3's ``Adadelta``: the update rule of :func:`scale_by_adadelta`.

  Args:
    learning_rate: the learning rate (see below); 1.0 is the paper's form.
    rho: decay rate of both running averages, in [0, 1).
    epsilon: added under both square roots.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.adadelta(learning_rate=1.0)
    >>> params = jnp.zeros(2)
    >>> updates, _ = opt.update(jnp.array([1.0, -1.0]), opt.init(params))
    >>> updates
    Array([-0.00141421,  0.00141421], dtype=float32)
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
  own = dict(rho=rho, epsilon=epsilon)
  rule = lambda lr: _rule.scale_by_adadelta(lr, rho, epsilon)
  return _optimizer.build(KERAS, rule, options, own, name=name)


def _keras_slots(keras_optimizer):
  del keras_optimizer
  return [[("accumulated_grad", "accumulated_grad"),
           ("accumulated_delta_var", "accumulated_delta_var")]]


KERAS = _optimizer.KerasSpec(
    default_name="adadelta",
    class_name="Adadelta", factory=adadelta, own_keys=("rho", "epsilon"),
    state_class=_rule.ScaleByAdadeltaState, slot_groups=_keras_slots)
