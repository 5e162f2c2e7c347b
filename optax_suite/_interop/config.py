"""Optimizer configs: JSON round trips, and Keras optimizers carried over.

:func:`get_config` writes an optimizer built by this package's factories as
the dict ``keras.optimizers.serialize`` writes for the matching Keras
optimizer (``class_name``, ``config``, ``module``, ``registered_name``, with
Keras's key names and a schedule serialized as Keras serializes it).
:func:`from_config` reads that dict back, and reads the dicts Keras itself
writes, so a Keras user can carry an optimizer over as it is.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from optax_suite import _checks
from optax_suite import _factories
from optax_suite import _schedules
from optax_suite._wrappers import loss_scale as _loss_scale
from optax_suite._wrappers import multi_optimizer as _multi

# Keras class name -> (factory, the factory's own keys in Keras's order).
_OPTIMIZERS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    name: (spec.factory, spec.own_keys)
    for name, spec in _factories.REGISTRY.items()
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
_MULTI = "MultiOptimizer"
_MULTI_KEYS = ("optimizer_map", "loss_scale_factor", "name")
_MAP = "OptimizerMap"
_SERIALIZED_KEYS = ("module", "class_name", "config", "registered_name")
_KERAS_MODULE = "keras.optimizers"


def _plain(name: str, value: Any) -> Any:
  """A hyperparameter as a JSON value (Python scalar, list or None)."""
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, numbers.Number):
    return value.item() if hasattr(value, "item") else value
  if isinstance(value, (jax.Array, np.ndarray, np.generic)) and (
      _checks.is_concrete(value) and np.ndim(value) == 0):
    return np.asarray(value).item()
  if isinstance(value, (list, tuple)) and all(isinstance(v, str)
                                              for v in value):
    return list(value)
  raise ValueError(
      f"`{name}` has no JSON form, so the optimizer's config cannot be "
      f"written. Received: {name}={value!r}")


def _learning_rate_config(value: Any) -> Any:
  if isinstance(value, _schedules.Schedule):
    return _schedules.serialize(value)
  if callable(value):
    raise ValueError(
        "Only a number or a schedule from `optax_suite.schedules` can be "
        "written to a config; a learning rate given as another callable (an "
        "optax schedule, a zero-argument callable, a Keras schedule) cannot. "
        f"Received: learning_rate={value!r}")
  return _plain("learning_rate", value)


def get_config(opt: Any) -> dict[str, Any]:
  """A JSON-serialisable dict from which :func:`from_config` rebuilds ``opt``.

  The dict has the shape and key names of ``keras.optimizers.serialize``:
  ``{"module", "class_name", "config", "registered_name"}``, where ``config``
  holds Keras's ``get_config`` keys and a schedule learning rate is written
  as ``keras.optimizers.schedules.serialize`` writes it. So, unless
  ``exclude_from_weight_decay`` (this package's extra, written only when set)
  is used, Keras's own ``keras.optimizers.deserialize`` reads it too. An
  optimizer wrapped by :func:`optax_suite.loss_scale_optimizer` is written as
  Keras's ``LossScaleOptimizer``.

  Args:
    opt: an optimizer returned by one of the package's factories
      (:func:`optax_suite.adam`, :func:`~optax_suite.sgd`, ...),
      :func:`~optax_suite.multi_optimizer` or
      :func:`~optax_suite.loss_scale_optimizer`.

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
  config: Any = getattr(opt, "config", None)
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
  if factory is _multi.multi_optimizer:
    return _multi_config(config)
  if not isinstance(config, Mapping) or factory not in _CLASS_OF_FACTORY:
    raise ValueError(
        "`opt` must be an optimizer built by one of optax_suite's factories "
        f"({', '.join(sorted(f.__name__ for f in _CLASS_OF_FACTORY))}), "
        "multi_optimizer or loss_scale_optimizer (they carry their config); "
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


def _multi_config(config: dict[str, Any]) -> dict[str, Any]:
  """Keras's ``MultiOptimizer`` dict: its ``OptimizerMap``, each inner
  optimizer with the multi-optimizer's ``loss_scale_factor`` (Keras sets it
  on them)."""
  optimizer_map = config["optimizer_map"]
  if not isinstance(optimizer_map, _multi.OptimizerMap):
    raise ValueError(
        "A multi_optimizer built on a callable has no JSON form; build it on "
        f"an OptimizerMap. Received: optimizer_map={optimizer_map!r}")
  factor = _plain("loss_scale_factor", config["loss_scale_factor"])

  def inner(opt):
    d = get_config(opt)
    d["config"]["loss_scale_factor"] = factor
    return d

  serialized_map = {
      "module": _KERAS_MODULE, "class_name": _MAP,
      "config": {
          "default_optimizer": inner(optimizer_map.default_optimizer),
          "optimizer_map": {k: inner(v) for k, v in optimizer_map.items()},
      },
      "registered_name": None,
  }
  return {"module": _KERAS_MODULE, "class_name": _MULTI,
          "config": {"optimizer_map": serialized_map,
                     "loss_scale_factor": factor, "name": config["name"]},
          "registered_name": None}


def _multi_from_config(config: Mapping[str, Any]) -> Any:
  _check_keys(f"the config of {_MULTI}", config, _MULTI_KEYS)
  serialized_map = config.get("optimizer_map")
  if not isinstance(serialized_map, Mapping) or (
      serialized_map.get("class_name") != _MAP):
    raise ValueError(
        f"The config of {_MULTI} needs a serialized {_MAP} under "
        f"'optimizer_map'. Received: {serialized_map!r}")
  map_config = serialized_map.get("config")
  if not isinstance(map_config, Mapping):
    raise ValueError(
        f"The serialized {_MAP} needs a dict under 'config'. Received: "
        f"config={map_config!r}")
  _check_keys(f"the config of {_MAP}", map_config,
              ("default_optimizer", "optimizer_map"))
  if map_config.get("default_optimizer") is None:
    raise ValueError(
        f"The config of {_MAP} needs a serialized optimizer under "
        f"'default_optimizer'. Received: {dict(map_config)!r}")
  paths = map_config.get("optimizer_map")
  if paths is None:
    paths = {}
  if not isinstance(paths, Mapping):
    raise ValueError(
        f"'optimizer_map' in the config of {_MAP} must be a dict "
        "{path or pattern: serialized optimizer}. Received: "
        f"optimizer_map={paths!r}")
  optimizer_map = _multi.OptimizerMap(
      from_config(map_config["default_optimizer"]),
      {k: from_config(v) for k, v in paths.items()})
  return _multi.multi_optimizer(
      optimizer_map, loss_scale_factor=config.get("loss_scale_factor"),
      name=config.get("name"))


def _check_keys(where: str, got: Mapping[str, Any], allowed) -> None:
  unknown = [k for k in got if k not in allowed]
  if unknown:
    raise ValueError(
        f"Unknown key(s) {unknown} in {where}. Expected keys from "
        f"{list(allowed)}.")


def _class_name(name: Any) -> str:
  """Keras's class name, also from a lower-case alias ('adam', 'rmsprop')."""
  known = list(_OPTIMIZERS) + [_LOSS_SCALE, _MULTI]
  by_lower = {k.lower(): k for k in known}
  by_lower["loss_scale_optimizer"] = _LOSS_SCALE
  by_lower["multi_optimizer"] = _MULTI
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
  ``keras.optimizers.serialize(keras_optimizer)`` returns for any of the 14
  Keras optimizers this package has, a ``MultiOptimizer``, or a
  ``LossScaleOptimizer`` around one of them (a schedule learning rate
  inside it may be any of the six Keras schedules, serialized as Keras
  does), or a plain
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
  if class_name == _MULTI:
    return _multi_from_config(config)
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
