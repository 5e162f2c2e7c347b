"""The four Keras 3 optimizers, keyword for keyword.

Each factory takes Keras's arguments in Keras's order with Keras's defaults,
plus two keyword-only weight-decay exclusions, and returns the chain built by
:func:`optax_suite.keras_optimizer` around the optimizer's own rule.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

from optax_suite import _adadelta
from optax_suite import _adam
from optax_suite import _adamax
from optax_suite import _common
from optax_suite import _optimizer
from optax_suite import _rmsprop

_BASE_DOC = """
  Base arguments (Keras's, same names and defaults):
    weight_decay: decoupled decay ``w -= w * weight_decay * lr`` before the
      update, or None.
    clipnorm: clip each gradient leaf to this L2 norm, or None.
    clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
    global_clipnorm: clip all gradients to this global norm; a non-finite
      norm makes every gradient NaN, as in Keras. At most one of the three.
    use_ema: keep an exponential moving average of the parameters.
    ema_momentum: momentum of that average, in [0, 1].
    ema_overwrite_frequency: overwrite the parameters with the average every
      this many update steps, or None.
    loss_scale_factor: static loss scale; gradients are divided by it.
    gradient_accumulation_steps: update every this many calls with the mean
      gradient (an integer >= 2), or None.
    name: kept in the config; it has no effect on the numbers.
    exclude_from_weight_decay: keyword-only; name patterns searched in each
      parameter's key path, matching ones do not decay.
    weight_decay_mask: keyword-only; tree of booleans or callable
      ``params -> tree``, True means decay.

  ``learning_rate`` is a number, a schedule ``step -> lr`` (optax's, ours, or a
  Keras ``LearningRateSchedule``; it sees every call, as in Keras), or a
  zero-argument callable, which is called on each ``update`` and so, under
  ``jax.jit``, once at trace time. Every number may also be injected with
  ``optax.inject_hyperparams``. ``update`` needs ``params`` when weight decay
  or EMA is on.
"""


# keras_optimizer's keyword arguments: the base options every factory passes on.
_BASE_ARGUMENTS = tuple(
    p.name for p in inspect.signature(_optimizer.keras_optimizer).parameters
    .values() if p.kind is p.KEYWORD_ONLY)


def _build(factory, name, rule, arguments) -> _optimizer.KerasOptimizer:
  base = {k: arguments[k] for k in _BASE_ARGUMENTS}
  tx = _optimizer.keras_optimizer(rule, **base)
  opt = _optimizer.KerasOptimizer(tx.init, tx.update)
  opt.config = dict(arguments, name=arguments["name"] or name)
  opt.factory = factory
  return opt


def adam(
    learning_rate: _common.ScalarOrSchedule = 0.001,
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
    Array([ 0.9..., -1. ], dtype=float32)
  """
  arguments = dict(locals())
  rule = lambda lr: _adam.scale_by_adam(lr, beta_1, beta_2, epsilon, amsgrad)
  return _build(adam, "adam", rule, arguments)


def adamax(
    learning_rate: _common.ScalarOrSchedule = 0.001,
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
) -> _optimizer.KerasOptimizer:
  """Keras 3's ``Adamax``: the update rule of :func:`scale_by_adamax`.

  Args:
    learning_rate: the learning rate (see below).
    beta_1: decay rate of the first moment, in [0, 1).
    beta_2: decay rate of the infinity norm, in [0, 1).
    epsilon: added to the norm, inside the bias correction.
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.adamax(learning_rate=0.1, gradient_accumulation_steps=2)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = opt.init(params)
    >>> for g in ([1.0, 0.0], [3.0, 0.0]):
    ...   updates, state = opt.update(jnp.array(g), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params
    Array([ 0.9..., -1. ], dtype=float32)
  """
  arguments = dict(locals())
  rule = lambda lr: _adamax.scale_by_adamax(lr, beta_1, beta_2, epsilon)
  return _build(adamax, "adamax", rule, arguments)


def adadelta(
    learning_rate: _common.ScalarOrSchedule = 0.001,
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
    Array([-0.0014...,  0.0014...], dtype=float32)
  """
  arguments = dict(locals())
  rule = lambda lr: _adadelta.scale_by_adadelta(lr, rho, epsilon)
  return _build(adadelta, "adadelta", rule, arguments)


def rmsprop(
    learning_rate: _common.ScalarOrSchedule = 0.001,
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
) -> _optimizer.KerasOptimizer:
  """Keras 3's ``RMSprop``: the update rule of :func:`scale_by_rmsprop`.

  Args:
    learning_rate: the learning rate (see below); it sits inside the momentum
      buffer, as in Keras.
    rho: decay rate of the running averages, in [0, 1).
    momentum: heavy-ball momentum in [0, 1); 0 keeps no momentum slot.
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
  arguments = dict(locals())
  rule = lambda lr: _rmsprop.scale_by_rmsprop(
      lr, rho, momentum, epsilon, centered)
  return _build(rmsprop, "rmsprop", rule, arguments)


for _f in (adam, adamax, adadelta, rmsprop):
  _f.__doc__ = _f.__doc__.replace("  {base}", _BASE_DOC.rstrip("\n"))
del _f
