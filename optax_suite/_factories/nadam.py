"""The ``nadam`` factory: Keras's signature over
:func:`~optax_suite.scale_by_nadam`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import nadam as _rule


@_base_options.with_base_doc
def nadam(
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
  """Keras 3's ``Nadam``: the update rule of :func:`scale_by_nadam`.

  Args:
    learning_rate: the learning rate (see below).
    beta_1: decay rate of the first moment, in [0, 1); the momentum
      schedule is ``beta_1 * (1 - 0.5 * 0.96**t)``.
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: added after the square root, as in Keras.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.nadam(learning_rate=0.1, weight_decay=0.5)
    >>> params = {'w': jnp.array([1.0, -1.0])}
    >>> state = opt.init(params)
    >>> updates, state = jax.jit(opt.update)({'w': jnp.array([2.0, 0.0])},
    ...                                      state, params)
    >>> optax.apply_updates(params, updates)['w']  # decay by 5%, then a step
    Array([ 0.8437212, -0.95     ], dtype=float32)
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
  rule = lambda lr: _rule.scale_by_nadam(lr, beta_1, beta_2, epsilon)
  return _optimizer.build(KERAS, rule, options, own, name=name)


KERAS = _optimizer.KerasSpec(
    default_name="nadam",
    class_name="Nadam", factory=nadam,
    own_keys=("beta_1", "beta_2", "epsilon"),
    state_class=_rule.ScaleByNadamState,
    slot_groups=lambda keras_optimizer: [[("momentum", "mu"),
                                          ("velocity", "nu")]],
    # Keras's build adds `_u_product` last, as an unnamed "variable".
    scalars=(("variable", "u_product"),))
