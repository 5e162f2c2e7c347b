"""The ``adamw`` factory: Keras's signature over
:func:`~optax_suite.scale_by_adam`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._factories import adam as _adam_factory
from optax_suite._rules import adam as _adam


@_base_options.with_base_doc
def adamw(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
    weight_decay: Optional[float] = 0.004,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
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
  r"""Keras 3's ``AdamW``: :func:`scale_by_adam` plus decoupled weight decay.

  Each step first shrinks the weights, :math:`w \leftarrow w - w \lambda
  \eta_t`, then takes Keras's Adam step (epsilon hat, optional AMSGrad), as
  Keras's ``AdamW`` (an ``Adam`` whose ``weight_decay`` defaults to 0.004,
  second in the signature) does. The decay is the base option every factory
  has; here it is on by default and ``weight_decay=None`` is refused, as in
  Keras. ``optax.adamw`` decays by the same ``lr * wd * w`` but puts epsilon
  elsewhere (and defaults to ``weight_decay=1e-4``).

  Args:
    learning_rate: the learning rate (see below).
    weight_decay: the decoupled decay rate (a number >= 0; not None).
    beta_1: decay rate of the first moment, in [0, 1).
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: Keras's epsilon hat, added to ``sqrt(v)``.
    amsgrad: use the AMSGrad maximum of the second moment.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.adamw(learning_rate=0.1, weight_decay=0.5)
    >>> params = jnp.array([2.0, -2.0])
    >>> updates, _ = opt.update(jnp.array([1.0, 0.0]), opt.init(params), params)
    >>> optax.apply_updates(params, updates)  # w - w * 0.5 * 0.1 - (~0.1 if g)
    Array([ 1.8000009, -1.9      ], dtype=float32)
  """
  if weight_decay is None:
    raise ValueError(
        "Argument `weight_decay` must be a float. Received: weight_decay=None")
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
  rule = lambda lr: _adam.scale_by_adam(lr, beta_1, beta_2, epsilon, amsgrad)
  return _optimizer.build(KERAS, rule, options, own, name=name)


KERAS = _optimizer.KerasSpec(
    default_name="adam_w",
    class_name="AdamW", factory=adamw,
    own_keys=("beta_1", "beta_2", "epsilon", "amsgrad"),
    state_class=_adam.ScaleByAdamState,
    slot_groups=_adam_factory.KERAS.slot_groups)
