"""Keras configs of the schedules: :func:`serialize` and :func:`from_config`.

:func:`from_config` rebuilds a schedule through its factory, so a config is
checked exactly as the factory's arguments are.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional

from optax_suite._schedules import _factories

# The ``module`` entry of ``keras.optimizers.schedules.serialize``'s output,
# reproduced so that Keras can deserialize what :func:`serialize` writes.
_KERAS_MODULE = "keras.optimizers.schedules"
_SERIALIZED_KEYS = ("module", "class_name", "config", "registered_name")


def serialize(schedule: _factories.Schedule) -> dict[str, Any]:
  """Serialises a schedule as ``keras.optimizers.schedules.serialize`` does.

  Args:
    schedule: A schedule made by a factory of ``optax_suite.schedules``.

  Returns:
    A JSON-serialisable dict with ``module``, ``class_name``, ``config``
    and ``registered_name`` entries, which both :func:`from_config` and
    ``keras.optimizers.schedules.deserialize`` accept.

  Raises:
    ValueError: If ``schedule`` is not one of this module's schedules.

  Example:

  >>> from optax_suite.schedules import exponential_decay
  >>> serialize(exponential_decay(0.1, 10, 0.9))["class_name"]
  'ExponentialDecay'
  """
  if not isinstance(schedule, _factories.Schedule) or (
      schedule.keras_class_name not in _factories.FACTORIES):
    raise ValueError(
        "Argument `schedule` must be a schedule from this module. "
        f"Received: schedule={schedule!r}"
    )
  return {
      "module": _KERAS_MODULE,
      "class_name": schedule.keras_class_name,
      "config": schedule.get_config(),
      "registered_name": None,
  }


def from_config(
    config: Mapping[str, Any], class_name: Optional[str] = None
) -> _factories.Schedule:
  """Rebuilds a schedule from a Keras config or a serialised Keras schedule.

  Args:
    config: Either the dict returned by :func:`serialize` or
      ``keras.optimizers.schedules.serialize`` (with ``class_name`` and
      ``config`` entries, optionally ``module`` and
      ``registered_name``), or a plain ``get_config()`` dict, in which
      case ``class_name`` is required.
    class_name: Keras class name, e.g. ``"ExponentialDecay"``.  Needed for
      a plain config dict; for a serialised dict it must match the
      dict's own ``class_name`` if given.

  Returns:
    The schedule described by ``config``.

  Raises:
    ValueError: If the class name is missing or unknown, or the config
      has an unknown key, lacks a required key, or holds an invalid
      value.

  Example:

  >>> sched = from_config(
  ...     {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5},
  ...     class_name="ExponentialDecay")
  >>> sched(10).item()
  0.05000000074505806
  """
  if not isinstance(config, Mapping):
    raise ValueError(
        f"Argument `config` must be a dict. Received: config={config!r}"
    )
  if "class_name" in config:
    for key in config:
      if key not in _SERIALIZED_KEYS:
        raise ValueError(
            f"Unknown key {key!r} in serialized schedule. Expected "
            f"only {list(_SERIALIZED_KEYS)}. Received: "
            f"{key}={config[key]!r}"
        )
    if class_name is not None and class_name != config["class_name"]:
      raise ValueError(
          f"Argument `class_name` does not match the serialized "
          f"class_name. Received: class_name={class_name!r} and "
          f"config['class_name']={config['class_name']!r}"
      )
    class_name = config["class_name"]
    if "config" not in config:
      raise ValueError(
          "Serialized schedule has no 'config' entry. Received: "
          f"config={dict(config)!r}"
      )
    config = config["config"]
    if not isinstance(config, Mapping):
      raise ValueError(
          "Serialized schedule's 'config' entry must be a dict. "
          f"Received: config={config!r}"
      )
  if class_name is None:
    raise ValueError(
        "Argument `class_name` is required for a plain config dict "
        f"(one without a 'class_name' entry). Received: class_name=None "
        f"and config={dict(config)!r}"
    )
  if class_name not in _factories.FACTORIES:
    raise ValueError(
        "Unknown schedule class name. Expected one of "
        f"{sorted(_factories.FACTORIES)}. "
        f"Received: class_name={class_name!r}"
    )
  factory = _factories.FACTORIES[class_name]
  parameters = list(inspect.signature(factory).parameters.values())
  names = [p.name for p in parameters]
  for key, value in config.items():
    if key not in names:
      raise ValueError(
          f"Unknown config key {key!r} for {class_name}. Expected keys "
          f"from {names}. Received: {key}={value!r}"
      )
  for p in parameters:
    if p.name not in config and p.default is p.empty:
      raise ValueError(
          f"Missing required config key {p.name!r} for {class_name}. "
          f"Received: config={dict(config)!r}"
      )
  return factory(**config)
