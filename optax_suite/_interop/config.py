"""Optimizer configs: JSON round trips, and Keras optimizers carried over.

:func:`get_config` writes an optimizer built by this package's factories as
the dict ``keras.optimizers.serialize`` writes for the matching Keras
optimizer (``class_name``, ``config``, ``module``, ``registered_name``, with
Keras's key names and a schedule serialized as Keras serializes it).
:func:`from_config` reads that dict back, and reads the dicts Keras itself
writes, so a Keras user can carry an optimizer over as it is.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
import optax

from optax_suite import _common
from optax_suite._options import loss_scale as _loss_scale
from optax_suite import _schedules
from optax_suite import _rules

# Keras class name -> (factory, the factory's own keys in Keras's order).
_OPTIMIZERS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    name: (spec.factory, spec.own_keys)
    for name, spec in _rules.REGISTRY.items()
}
_CLASS_OF_FACTORY = {f: name for name, (f, _) in _OPTIMIZERS.items()}
# Keras's base keys, in the order of `keras.Optimizer.get_config`.
_BASE_KEYS = (
    "name", "learning_rate", "weight_decay", "clipnorm", "global_clipnorm",
    "clipvalue", "use_ema", "ema_momentum", "ema_overwrite_frequency",
    "loss_scale_factor", "gradient_accumulation_steps",
)
# This package's keyword-only extra that has a JSON form (written if set).
_EXTRA_KEYS = ("exclude_from_weight_decay", "lazy_rows")
_LOSS_SCALE = "LossScaleOptimizer"
_LOSS_SCALE_KEYS = ("name", "inner_optimizer", "initial_scale",
                    "dynamic_growth_steps")
_SERIALIZED_KEYS = ("module", "class_name", "config", "registered_name")
_KERAS_MODULE = "keras.optimizers"


def _plain(name: str, value: Any) -> Any:
  """A hyperparameter as a JSON value (Python scalar, list or None)."""
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, numbers.Number):
    return value.item() if hasattr(value, "item") else value
  if isinstance(value, (jax.Array, np.ndarray, np.generic)) and (
      _common.is_concrete(value) and np.ndim(value) == 0):
    return np.asarray(value).item()
  if isinstance(value, (list, tuple)) and all(isinstance(v, str)
                                              for v in value):
    return list(value)
  raise ValueError(
      f"`{name}` has no JSON form, so the optimizer's config cannot be "
      f"written. Received: {name}={value!r}")


def _learning_rate_config(value: Any) -> Any:
  if isinstance(value, _schedules._Schedule):  # pylint: disable=protected-access
    return _schedules.serialize(value)
  if callable(value):
    raise ValueError(
        "Only a number or a schedule from `optax_suite.schedules` can be "
        "written to a config; a learning rate given as another callable (an "
        "optax schedule, a zero-argument callable, a Keras schedule) cannot. "
        f"Received: learning_rate={value!r}")
  return _plain("learning_rate", value)


def get_config(opt: Any) -> dict[str, Any]:
  """Returns a JSON-serialisable dict from which :func:`from_config` rebuilds ``opt``.

  The dict has the shape and key names of ``keras.optimizers.serialize``:
  ``{"module", "class_name", "config", "registered_name"}``, where ``config``
  holds Keras's ``get_config`` keys and a schedule learning rate is written
  as ``keras.optimizers.schedules.serialize`` writes it. So, unless
  ``exclude_from_weight_decay`` (this package's extra, written only when set)
  is used, Keras's own ``keras.optimizers.deserialize`` reads it too. An
  optimizer wrapped by :func:`optax_suite.loss_scale_optimizer` is written as
  Keras's ``LossScaleOptimizer``.

  Args:
    opt: an optimizer returned by :func:`optax_suite.adam`,
      :func:`~optax_suite.adamax`, :func:`~optax_suite.adadelta`,
      :func:`~optax_suite.rmsprop` or :func:`~optax_suite.loss_scale_optimizer`.

  Returns:
    A dict of JSON values.

  Raises:
    ValueError: for any other transformation, and for arguments with no JSON
      form: a ``weight_decay_mask``, a learning rate given as a callable that
      is not one of :mod:`optax_suite.schedules`.

  Example:
    >>> import json, optax_suite as ox
    >>> opt = ox.adam(ox.schedules.exponential_decay(0.1, 100, 0.5),
    ...               weight_decay=1e-4)
    >>> d = json.loads(json.dumps(ox.get_config(opt)))
    >>> d["class_name"], d["config"]["learning_rate"]["class_name"]
    ('Adam', 'ExponentialDecay')
    >>> ox.get_config(ox.from_config(d)) == d
    True
  """
  config = getattr(opt, "config", None)
  factory = getattr(opt, "factory", None)
  if factory is _loss_scale.loss_scale_optimizer:
    return {
        "module": _KERAS_MODULE,
        "class_name": _LOSS_SCALE,
        "config": {
            "name": config.get("name") or "loss_scale_optimizer",
            "inner_optimizer": get_config(config["inner"]),
            "initial_scale": _plain("initial_scale", config["initial_scale"]),
            "dynamic_growth_steps": _plain(
                "dynamic_growth_steps", config["dynamic_growth_steps"]),
        },
        "registered_name": None,
    }
  if not isinstance(config, dict) or factory not in _CLASS_OF_FACTORY:
    raise ValueError(
        "`opt` must be an optimizer built by optax_suite.adam, adamax, "
        "adadelta, rmsprop or loss_scale_optimizer (they carry their config); "
        f"Received: opt={opt!r}")
  class_name = _CLASS_OF_FACTORY[factory]
  if config.get("weight_decay_mask") is not None:
    raise ValueError(
        "`weight_decay_mask` has no JSON form, so the optimizer's config "
        "cannot be written; use `exclude_from_weight_decay` (name patterns) "
        "instead. Received: "
        f"weight_decay_mask={config['weight_decay_mask']!r}")
  out = {}
  for key in _BASE_KEYS + _OPTIMIZERS[class_name][1]:
    value = config[key]
    out[key] = (_learning_rate_config(value) if key == "learning_rate"
                else _plain(key, value))
  for key in _EXTRA_KEYS:
    if config.get(key) not in (None, False):
      out[key] = _plain(key, config[key])
  return {"module": _KERAS_MODULE, "class_name": class_name, "config": out,
          "registered_name": None}


def _check_keys(where: str, got: Mapping[str, Any], allowed) -> None:
  unknown = [k for k in got if k not in allowed]
  if unknown:
    raise ValueError(
        f"Unknown key(s) {unknown} in {where}. Expected keys from "
        f"{list(allowed)}.")


def _class_name(name: Any) -> str:
  """Keras's class name, also from a lower-case alias ('adam', 'rmsprop')."""
  known = list(_OPTIMIZERS) + [_LOSS_SCALE]
  by_lower = {k.lower(): k for k in known}
  by_lower["loss_scale_optimizer"] = _LOSS_SCALE
  if isinstance(name, str) and name in known:
    return name
  if isinstance(name, str) and name.lower() in by_lower:
    return by_lower[name.lower()]
  raise ValueError(
      f"Unsupported optimizer class {name!r}: optax_suite rebuilds {known}. "
      f"Received: class_name={name!r}")


def from_config(config: Mapping[str, Any],
                class_name: Optional[str] = None) -> Any:
  """Rebuilds an optimizer from :func:`get_config`'s dict or a Keras one.

  Accepts the dict of :func:`get_config`, the dict
  ``keras.optimizers.serialize(keras_optimizer)`` returns for ``Adam``,
  ``Adamax``, ``Adadelta``, ``RMSprop`` or a ``LossScaleOptimizer`` around
  one of them (a schedule learning rate inside it may be any of the six
  Keras schedules, serialized as Keras does), or a plain
  ``keras_optimizer.get_config()`` dict together with its ``class_name``.
  A number is rebuilt as it is written, so Keras's float32 learning rate
  (e.g. ``0.0010000000474974513``) gives the float32 learning rate Keras
  used.

  Args:
    config: the dict.
    class_name: Keras's class name (``"Adam"`` ...) for a plain config dict;
      if given with a serialized dict it must agree with it.

  Returns:
    The optimizer, as the factory returns it.

  Raises:
    ValueError: naming the key or class, for an unknown key, an unsupported
      optimizer or schedule class, or an invalid value.

  Example:
    >>> import optax_suite as ox
    >>> keras_dict = {
    ...     "module": "keras.optimizers", "class_name": "RMSprop",
    ...     "registered_name": None,
    ...     "config": {"name": "rmsprop", "learning_rate": 0.01, "rho": 0.9,
    ...                "momentum": 0.5, "epsilon": 1e-7, "centered": True}}
    >>> opt = ox.from_config(keras_dict)
    >>> opt.config["momentum"], opt.config["centered"]
    (0.5, True)
  """
  if not isinstance(config, Mapping):
    raise ValueError(
        f"`config` must be a dict. Received: config={config!r}")
  if "class_name" in config:
    _check_keys("the serialized optimizer", config, _SERIALIZED_KEYS)
    if config.get("registered_name") not in (None, config["class_name"]):
      raise ValueError(
          "Unsupported optimizer: a custom registered class "
          f"{config['registered_name']!r} cannot be rebuilt by optax_suite.")
    if class_name is not None and _class_name(class_name) != _class_name(
        config["class_name"]):
      raise ValueError(
          "`class_name` does not match the serialized class_name. Received: "
          f"class_name={class_name!r}, "
          f"config['class_name']={config['class_name']!r}")
    class_name = config["class_name"]
    if not isinstance(config.get("config"), Mapping):
      raise ValueError(
          "A serialized optimizer needs a dict under 'config'. Received: "
          f"config={dict(config)!r}")
    config = config["config"]
  if class_name is None:
    raise ValueError(
        "`class_name` is needed with a plain config dict (one without a "
        f"'class_name' key). Received: config={dict(config)!r}")
  class_name = _class_name(class_name)
  if class_name == _LOSS_SCALE:
    _check_keys(f"the config of {class_name}", config, _LOSS_SCALE_KEYS)
    if "inner_optimizer" not in config:
      raise ValueError(
          f"The config of {class_name} has no 'inner_optimizer'. Received: "
          f"config={dict(config)!r}")
    kwargs = {k: config[k] for k in ("initial_scale", "dynamic_growth_steps",
                                     "name") if k in config}
    return _loss_scale.loss_scale_optimizer(
        from_config(config["inner_optimizer"]), **kwargs)
  factory, own_keys = _OPTIMIZERS[class_name]
  _check_keys(f"the config of {class_name}", config,
              _BASE_KEYS + own_keys + _EXTRA_KEYS)
  kwargs = dict(config)
  learning_rate = kwargs.get("learning_rate")
  if isinstance(learning_rate, Mapping):
    try:
      kwargs["learning_rate"] = _schedules.from_config(learning_rate)
    except ValueError as e:
      raise ValueError(f"In `learning_rate`: {e}") from e
  return factory(**kwargs)


# Arguments that are never numbers to inject: flags, structural integers,
# names and weight-decay exclusions. `optax.inject_hyperparams` already keeps
# bools static; it would inject the integers as arrays (which the factories
# cope with) and call a callable mask as if it were a schedule.
_STATIC_ARGUMENTS = (
    "amsgrad", "centered", "use_ema", "gradient_accumulation_steps",
    "ema_overwrite_frequency", "name", "exclude_from_weight_decay",
    "weight_decay_mask", "lazy_rows",
)


def inject_hyperparams(
    factory: Callable[..., Any],
    static_args: Sequence[str] = (),
    hyperparam_dtype: Optional[Any] = None,
) -> Callable[..., Any]:
  """``optax.inject_hyperparams`` for this package's factories.

  The same as ``optax.inject_hyperparams(factory, static_args, ...)``, with
  ``static_args`` completed for the user: flags (``amsgrad``, ``centered``,
  ``use_ema``), structural integers (``gradient_accumulation_steps``,
  ``ema_overwrite_frequency``), ``name`` and the weight-decay exclusions are
  static, and so is a ``learning_rate`` given as a zero-argument callable
  (optax would call it with the step, as a schedule). What stays injected is
  every number: ``learning_rate`` (a schedule is evaluated at the step, as
  optax does), the betas, ``rho``, ``momentum``, ``epsilon``,
  ``weight_decay``, ``ema_momentum``, the clipping bounds and
  ``loss_scale_factor``; they can be changed in ``state.hyperparams``
  between steps without recompiling.

  With plain ``optax.inject_hyperparams`` the factories work too, but a
  callable ``weight_decay_mask`` or a zero-argument ``learning_rate`` must be
  listed in ``static_args`` by hand.

  Args:
    factory: :func:`optax_suite.adam`, ``adamax``, ``adadelta`` or
      ``rmsprop`` (or any factory taking some of the same arguments).
    static_args: more arguments to keep static.
    hyperparam_dtype: as in ``optax.inject_hyperparams``.

  Returns:
    A factory with ``factory``'s signature whose optimizers keep their
    hyperparameters in ``state.hyperparams``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> opt = ox.inject_hyperparams(ox.adam)(
    ...     learning_rate=0.1, gradient_accumulation_steps=2,
    ...     weight_decay=0.01, weight_decay_mask=lambda p: {'w': True})
    >>> state = opt.init({'w': jnp.ones(2)})
    >>> sorted(state.hyperparams)
    ['beta_1', 'beta_2', 'ema_momentum', 'epsilon', 'learning_rate', 'weight_decay']
    >>> state.hyperparams['learning_rate'] = jnp.asarray(0.05)
  """
  signature = inspect.signature(factory)
  static = set([static_args] if isinstance(static_args, str) else static_args)

  @functools.wraps(factory)
  def wrapped(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    names = static | (set(_STATIC_ARGUMENTS) & set(bound.arguments))
    lr = bound.arguments.get("learning_rate")
    if callable(lr) and _common.is_zero_arg_callable(lr):
      names.add("learning_rate")
    return optax.inject_hyperparams(
        factory, static_args=tuple(sorted(names)),
        hyperparam_dtype=hyperparam_dtype)(*args, **kwargs)

  return wrapped
