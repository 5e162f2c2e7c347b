"""``optax.inject_hyperparams`` for the package's factories.

Which of a factory's arguments stay static (flags, structural integers,
names, weight-decay exclusions, a zero-argument learning rate) and which are
injected as arrays in ``state.hyperparams``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _optimizer

# Arguments that are never numbers to inject: flags, structural integers,
# names and weight-decay exclusions. `optax.inject_hyperparams` already keeps
# bools static; it would inject the integers as arrays (which the factories
# cope with) and call a callable mask as if it were a schedule.
_STATIC_ARGUMENTS = (
    "amsgrad", "centered", "use_ema", "gradient_accumulation_steps",
    "ema_overwrite_frequency", "name", "exclude_from_weight_decay",
    "weight_decay_mask", "lazy_rows",
    # ScheduleFreeAdamW: the warmup's length in steps, an integer.
    "warmup_steps",
    # Muon: the Newton-Schulz step count (a static loop) and its routing.
    "ns_steps", "nesterov", "exclude_layers", "exclude_embeddings",
)


def inject_hyperparams(
    factory: Callable[..., Any],
    static_args: Sequence[str] = (),
    hyperparam_dtype: Optional[Any] = jnp.float32,
) -> Callable[..., Any]:
  """``optax.inject_hyperparams`` for this package's factories.

  The same as ``optax.inject_hyperparams(factory, static_args, ...)``, with
  ``static_args`` completed for the user: flags (``amsgrad``, ``centered``,
  ``use_ema``), structural integers (``gradient_accumulation_steps``,
  ``ema_overwrite_frequency``, ScheduleFreeAdamW's ``warmup_steps``),
  ``name`` and the weight-decay exclusions are
  static, and so is a ``learning_rate`` given as a zero-argument callable
  (optax would call it with the step, as a schedule). What stays injected is
  every number: ``learning_rate`` (a schedule is evaluated at the step, as
  optax does), the betas, ``rho``, ``momentum``, ``epsilon``,
  ``weight_decay``, ``ema_momentum``, the clipping bounds and
  ``loss_scale_factor``; they can be changed in ``state.hyperparams``
  between steps without recompiling. They are float32 arrays whatever the
  parameters' dtype (``hyperparam_dtype``), as the factories compute in
  float32; set them with the same dtype, ``jnp.asarray(v, jnp.float32)``.

  Integer numbers (``learning_rate=1``, Muon's ``adam_lr_ratio=1``) are
  injected as floats too. Every argument is checked at construction, as the
  factory checks it (a ``ValueError`` naming it). A value set in
  ``state.hyperparams`` is checked
  at the next ``update`` (or :func:`optax_suite.apply`) outside
  ``jax.jit``, as the factory checks it: a NaN, out-of-range or non-scalar
  value raises a ``ValueError`` naming it. Under ``jax.jit`` the values are
  traced and are not checked (a NaN learning rate makes the parameters
  NaN): check them before the jitted step.

  With plain ``optax.inject_hyperparams`` the factories work too, but a
  callable ``weight_decay_mask`` or a zero-argument ``learning_rate`` must be
  listed in ``static_args`` by hand.

  Args:
    factory: one of the package's factories (:func:`optax_suite.adam`,
      ``sgd``, ``muon``, ...; or any factory taking some of the same
      arguments).
    static_args: more arguments to keep static.
    hyperparam_dtype: dtype of the injected floating-point numbers;
      float32 by default whatever the parameters' dtype. (Plain
      ``optax.inject_hyperparams`` defaults to the parameters' dtype, so with
      bfloat16 parameters ``beta_2=0.999`` becomes 1.0 and ``rho=0.95``
      0.9492; pass ``hyperparam_dtype=jnp.float32`` to it to avoid that.)

  Returns:
    A factory with ``factory``'s signature whose optimizers keep their
    hyperparameters in ``state.hyperparams``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> opt = ox.inject_hyperparams(ox.adam)(
    ...     learning_rate=0.1, gradient_accumulation_steps=2,
    ...     weight_decay=0.01, weight_decay_mask=lambda p: {'w': True})
    >>> state = opt.init({'w': jnp.ones(2, jnp.bfloat16)})
    >>> sorted(state.hyperparams)
    ['beta_1', 'beta_2', 'ema_momentum', 'epsilon', 'learning_rate',
     'weight_decay']
    >>> state.hyperparams['beta_2']  # float32, not bfloat16's 1.0
    Array(0.999, dtype=float32)
    >>> state.hyperparams['learning_rate'] = jnp.asarray(0.05, jnp.float32)
  """
  signature = inspect.signature(factory)
  static = set([static_args] if isinstance(static_args, str) else static_args)

  @functools.wraps(factory)
  def wrapped(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    names = static | (set(_STATIC_ARGUMENTS) & set(bound.arguments))
    lr = bound.arguments.get("learning_rate")
    if callable(lr) and _numerics.is_zero_arg_callable(lr):
      names.add("learning_rate")
    inject = functools.partial(
        optax.inject_hyperparams, static_args=tuple(sorted(names)),
        hyperparam_dtype=hyperparam_dtype)
    # An integer number (Muon's `adam_lr_ratio=1`, `momentum=0`) would be
    # injected as int32: every injected number is a float.
    arguments = {
        k: _as_float_number(v) if k not in names else v
        for k, v in bound.arguments.items()}
    call = inspect.BoundArguments(signature, arguments)
    # optax builds the factory at `init`: build it once now, so that a bad
    # argument is a ValueError at construction, as with the factory itself.
    factory(*call.args, **call.kwargs)
    tx = inject(factory)(*call.args, **call.kwargs)
    # The same injection over the factory's fused step: optax passes the
    # inner `update`'s output through, here the new parameters.
    stepping = inject(stepping_factory)(*call.args, **call.kwargs)
    check = functools.partial(_check_injected, factory, arguments)

    def update(updates, state, params=None, **extra_args):
      check(state)
      return tx.update(updates, state, params, **extra_args)

    def fused_step(grads, state, params):
      check(state)
      return stepping.update(grads, state, params)

    return _optimizer.KerasOptimizer(
        tx.init, update, config=dict(bound.arguments), factory=wrapped,
        fused_step=fused_step)

  @functools.wraps(factory)
  def stepping_factory(*args, **kwargs):
    return _optimizer.as_step_transform(factory(*args, **kwargs))

  return wrapped


def _as_float_number(value: Any) -> Any:
  """An integer number (not a bool) as a float; anything else unchanged."""
  if isinstance(value, (bool, np.bool_)):
    return value
  if isinstance(value, (int, np.integer)):
    return float(value)
  if isinstance(value, (np.ndarray, jax.Array)) and _checks.is_concrete(
      value) and jnp.issubdtype(value.dtype, jnp.integer):
    return jnp.asarray(value, jnp.float32)
  return value


def _check_injected(factory: Callable[..., Any], arguments: dict,
                    state: Any) -> None:
  """Refuses, outside ``jax.jit``, an injected value the factory refuses.

  Each value in ``state.hyperparams`` must be a scalar, and the factory
  built with the current values must accept them (its own checks: range,
  NaN, float32), so a value set between steps fails with the argument
  named, as at construction. Under ``jax.jit`` the values are traced and
  cannot be checked.
  """
  hyperparams = getattr(state, "hyperparams", None)
  if not isinstance(hyperparams, dict) or not all(
      _checks.is_concrete(v) for v in jax.tree.leaves(hyperparams)):
    return
  values = {}
  for name, value in hyperparams.items():
    shape = np.shape(value)
    if shape != ():
      raise ValueError(
          f"The injected hyperparameter `{name}` must be a scalar. "
          f"Received: state.hyperparams[{name!r}] of shape {shape}")
    values[name] = float(np.asarray(value))
  try:
    factory(**dict(arguments, **values))
  except ValueError as error:
    raise ValueError(
        f"An injected hyperparameter in `state.hyperparams` is refused: "
        f"{error}") from None
