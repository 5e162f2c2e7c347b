"""The hyperparameters in force, for logging (as Keras shows them)."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from optax_suite import _numerics


def _numeric(value: Any) -> bool:
  return (isinstance(value, (numbers.Real, jax.Array))
          and not isinstance(value, bool))


def _of(opt: Any, state: Any, out: dict, prefix: str) -> None:
  hyper = getattr(state, "hyperparams", None)
  if isinstance(hyper, dict):  # inject_hyperparams: the values in the state.
    for key, value in hyper.items():
      if _numeric(value):
        out[prefix + key] = jnp.asarray(value, jnp.float32)
    config = getattr(opt, "config", {})
    lr = config.get("learning_rate")
    if "learning_rate" not in hyper and lr is not None:
      out[prefix + "learning_rate"] = _numerics.learning_rate_at(
          lr, jnp.zeros([], jnp.int32))
    return
  config = getattr(opt, "config", None)
  if config is None:
    raise ValueError(
        f"hyperparameters: opt must be one of the package's optimizers (a "
        f"KerasOptimizer); got {type(opt).__name__}.")
  if "inner" in config and hasattr(state, "scale"):  # loss_scale_optimizer
    out[prefix + "dynamic_scale"] = jnp.asarray(state.scale, jnp.float32)
    out[prefix + "initial_scale"] = jnp.asarray(config["initial_scale"],
                                                jnp.float32)
    out[prefix + "dynamic_growth_steps"] = jnp.asarray(
        config["dynamic_growth_steps"], jnp.float32)
    _of(config["inner"], state.inner_state, out, prefix)
    return
  if "optimizer_map" in config:  # multi_optimizer
    states = state.inner.inner_states
    for label, inner_state in sorted(states.items()):
      inner_state = getattr(inner_state, "inner_state", inner_state)
      inner = _label_optimizer(config, label)
      if inner is not None:
        _of(inner, inner_state, out, f"{prefix}{label}/")
    return
  for key, value in config.items():
    if key == "learning_rate":
      out[prefix + key] = _numerics.learning_rate_at(value, state.count)
    elif _numeric(value) and value is not None:
      out[prefix + key] = jnp.asarray(value, jnp.float32)


def _label_optimizer(config: dict, label: str) -> Any:
  """The inner optimizer numbered ``label`` (an OptimizerMap's values, then
  its default, in Keras's order), or None if it cannot be named."""
  optimizer_map = config["optimizer_map"]
  known: list[Any] = []
  if hasattr(optimizer_map, "default_optimizer"):  # an OptimizerMap
    for opt in list(optimizer_map.values()) + [
        optimizer_map.default_optimizer]:
      if not any(opt is k for k in known):
        known.append(opt)
  if not label.isdigit() or int(label) >= len(known):
    return None
  return known[int(label)]


def hyperparameters(opt: Any, state: Any) -> dict[str, jax.Array]:
  r"""The hyperparameters in force after the calls that made ``state``.

  ``learning_rate`` is what Keras's ``optimizer.learning_rate`` shows after
  the same number of ``apply`` calls: the schedule evaluated at the call
  count :math:`t` (every call counts, gradient-accumulation micro-steps
  too, as Keras's ``iterations``), :math:`\eta_t = \mathrm{lr}(t)`. Every
  other numeric argument of the optimizer and its base options follows, as
  a float32 scalar. Through :func:`optax_suite.loss_scale_optimizer` the
  current ``dynamic_scale`` is added; through
  :func:`optax_suite.inject_hyperparams` the values are the injected ones
  in ``state.hyperparams`` (after any change by the user); through
  :func:`optax_suite.multi_optimizer` each inner optimizer's keys are
  prefixed with its label, ``"0/learning_rate"``, ``"1/learning_rate"``, ...
  (the OptimizerMap's values in order, then its default). Jittable.

  Args:
    opt: an optimizer of this package.
    state: its state.

  Returns:
    ``{name: float32 scalar}``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> opt = ox.sgd(ox.schedules.exponential_decay(0.1, 1, 0.5))
    >>> state = opt.init(jnp.zeros(2))
    >>> _, state = opt.update(jnp.ones(2), state, jnp.zeros(2))
    >>> ox.hyperparameters(opt, state)['learning_rate']
    Array(0.05, dtype=float32)
  """
  out: dict[str, jax.Array] = {}
  _of(opt, state, out, "")
  return out
