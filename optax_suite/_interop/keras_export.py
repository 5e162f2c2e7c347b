"""Exporting a state into a built Keras optimizer, to resume the run in Keras.

The inverse of :func:`optax_suite.state_from_keras`: :func:`state_to_keras`
writes the state of an optax_suite optimizer into the variables of the
equivalent built Keras optimizer, laid out as Keras's ``build`` lays them out
(``iteration``, ``learning_rate``, the averages, the gradient accumulators,
the slots, the rule's last scalars; see ``keras_state``), so that Keras's
next ``apply`` (or ``stateless_apply``) continues the run step for step.
Everything is checked before anything is written: a mismatch raises
``ValueError`` and leaves the Keras optimizer as it was.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_suite import _factories
from optax_suite import _optimizer
from optax_suite import _trees
from optax_suite._options import accumulation as _accumulation
from optax_suite._options import ema as _ema
from optax_suite._wrappers import loss_scale as _loss_scale
from optax_suite._wrappers import multi_optimizer as _multi

# A Keras variable this package has no value for: it keeps its own (the
# learning rate, which ``opt``'s config or schedule gives on Keras's side;
# Adafactor's int32 placeholders for unfactored variables; a
# LossScaleOptimizer's own ``iteration``, which Keras never advances).
_KEEP = object()


def _leaf_names(params: Any) -> list[str]:
  return [_trees.path_name(p) for p, leaf in
          jax.tree_util.tree_flatten_with_path(params)[0]
          if _trees.is_trainable(leaf)]


def _check_variables(keras_optimizer: Any, params: Any) -> None:
  """The Keras optimizer was built for the trainable leaves of ``params``."""
  keras_vars = list(getattr(keras_optimizer, "_trainable_variables", None)
                    or ())
  if not keras_optimizer.built:
    raise ValueError(
        "The Keras optimizer is not built: call "
        "`keras_optimizer.build(model.trainable_variables)` first.")
  leaves = [p for p in jax.tree.leaves(params) if _trees.is_trainable(p)]
  names = _leaf_names(params)
  if len(leaves) != len(keras_vars):
    raise ValueError(
        f"`params` has {len(leaves)} trainable leaves where the Keras "
        f"optimizer was built for {len(keras_vars)} variables: pass the "
        "params the Keras optimizer was built for, in the order of its "
        "variables.")
  for name, leaf, var in zip(names, leaves, keras_vars):
    if tuple(np.shape(leaf)) != tuple(var.shape):
      raise ValueError(
          f"The leaf {name!r} of `params` has shape {tuple(np.shape(leaf))} "
          f"where the matching Keras variable {var.path!r} has shape "
          f"{tuple(var.shape)}.")


def _find(node: Any, cls: type, found: list) -> None:
  """Every ``cls`` in a state (through tuples, named tuples and dicts)."""
  if isinstance(node, cls):
    found.append(node)
  elif isinstance(node, dict):
    for value in node.values():
      _find(value, cls, found)
  elif isinstance(node, tuple):
    for child in node:
      _find(child, cls, found)


def _the_one(state: Any, cls: type, what: str) -> Any:
  found: list[Any] = []
  _find(state, cls, found)
  if len(found) != 1:
    raise ValueError(
        f"`state` must hold exactly one {cls.__name__} ({what}); found "
        f"{len(found)}.")
  return found[0]


def _per_variable(tree: Any, params: Any) -> list:
  """A params-shaped tree's value for each trainable leaf (None: no slot)."""
  values = jax.tree.leaves(tree, is_leaf=lambda x: x is None)
  leaves = jax.tree.leaves(params)
  if len(values) != len(leaves):
    raise ValueError(
        f"A state field has {len(values)} leaves where `params` has "
        f"{len(leaves)}: pass the params the state was built for.")
  return [v for v, p in zip(values, leaves) if _trees.is_trainable(p)]


def _adafactor_slots(slots: dict, keras_optimizer: Any) -> dict:
  """This state's r, c (factored leaves) and v (others) -> Keras's r, c, v.

  Keras keeps ``r``, ``c`` for every variable (int32 placeholders below rank
  2) and a full-size ``v``, which for a factored variable it sets to
  ``r / mean(r) (outer) c`` at each step before using it: written so here
  (zeros before the first step, as Keras builds it).
  """
  del keras_optimizer
  out: dict = {"r": [], "c": [], "v": []}
  for r, c, v in zip(slots["r"], slots["c"], slots["v"]):
    if r is None:
      out["r"].append(_KEEP)
      out["c"].append(_KEEP)
      out["v"].append(v)
      continue
    mean = jnp.mean(r, axis=-1, keepdims=True)
    full = jnp.expand_dims(r / jnp.where(mean == 0, 1, mean), -1) * (
        jnp.expand_dims(c, -2))
    out["r"].append(r)
    out["c"].append(c)
    out["v"].append(jnp.where(jnp.expand_dims(mean, -1) == 0, 0, full))
  return out


# Rules whose state keeps slots for some leaves only (the inverse of their
# spec's ``import_slots``).
_EXPORT_SLOTS = {"Adafactor": _adafactor_slots}


def _factory(opt: Any) -> Any:
  """The package factory that built ``opt`` (through ``inject_hyperparams``'s
  ``functools.wraps``), or None."""
  factory = getattr(opt, "factory", None)
  return None if factory is None else inspect.unwrap(factory)


def _config(opt: Any) -> dict:
  return dict(getattr(opt, "config", None) or {})


def _single_values(opt: Any, state: Any, keras_optimizer: Any,
                   params: Any) -> list:
  """Values for the variables of one of the 14 Keras optimizer classes."""
  class_name = type(keras_optimizer).__name__
  spec = _factories.REGISTRY.get(class_name)
  if spec is None:
    raise ValueError(
        "Unsupported Keras optimizer: a state can be exported to "
        f"{', '.join(sorted(_factories.REGISTRY))}, a LossScaleOptimizer or a "
        f"MultiOptimizer of them. Received: {class_name}")
  factory = _factory(opt)
  if factory is not None and factory is not inspect.unwrap(spec.factory):
    raise ValueError(
        f"`opt` is {getattr(factory, '__name__', factory)!s} where the Keras "
        f"optimizer is {class_name}: build the same optimizer on both "
        "sides.")
  _check_variables(keras_optimizer, params)
  config = _config(opt)
  k = keras_optimizer.gradient_accumulation_steps
  if "gradient_accumulation_steps" in config and (
      (config["gradient_accumulation_steps"] or None) != (k or None)):
    raise ValueError(
        "`opt` has gradient_accumulation_steps="
        f"{config['gradient_accumulation_steps']} where the Keras optimizer "
        f"has gradient_accumulation_steps={k}.")
  if "use_ema" in config and bool(config["use_ema"]) != bool(
      keras_optimizer.use_ema):
    raise ValueError(
        f"`opt` has use_ema={config['use_ema']} where the Keras optimizer "
        f"has use_ema={keras_optimizer.use_ema}.")
  top = _the_one(state, _optimizer.KerasOptimizerState,
                 "a state of an optax_suite optimizer")
  inner = top.inner
  accumulating = isinstance(inner, _accumulation.AccumulationState)
  if accumulating != bool(k):
    raise ValueError(
        "Gradient accumulation is on in only one of the two optimizers: "
        f"Keras gradient_accumulation_steps={k}.")
  ema = top.ema
  if isinstance(ema, _ema.EmaState) != bool(keras_optimizer.use_ema):
    raise ValueError(
        "`use_ema` is on in only one of the two optimizers: Keras "
        f"use_ema={keras_optimizer.use_ema}.")
  rule = _the_one(inner.inner_state if accumulating else inner,
                  spec.state_class, f"the state of Keras's {class_name}")

  groups = spec.slot_groups(keras_optimizer)
  in_groups = {field for group in groups for _, field in group}
  scalar_fields = {field for _, field in spec.scalars}
  slots: dict = {}
  for field in rule._fields:
    if field in ("count",) + spec.non_slots or field in scalar_fields:
      continue
    tree = getattr(rule, field)
    absent = tree is None or not jax.tree.leaves(tree)
    if field in in_groups:
      if absent:
        raise ValueError(
            f"The Keras optimizer has `{field}` slots that the optax_suite "
            "state does not keep: build both with the same options.")
      slots[field] = _per_variable(tree, params)
    elif not absent and field not in spec.optional_slots:
      raise ValueError(
          f"The optax_suite state keeps `{field}` slots the Keras optimizer "
          "does not have: build both with the same options.")
  if class_name in _EXPORT_SLOTS:
    slots = _EXPORT_SLOTS[class_name](slots, keras_optimizer)

  n_vars = len(keras_optimizer._trainable_variables)  # pylint: disable=protected-access
  out: list[tuple[str, Any]] = [("iteration", top.count)]
  if any(v is keras_optimizer._learning_rate  # pylint: disable=protected-access
         for v in keras_optimizer.variables):
    out.append(("learning_rate", _KEEP))
  if keras_optimizer.use_ema:
    out += [("average", v) for v in _per_variable(ema.ema, params)]
  if k:
    out += [("gradient_accumulator", v)
            for v in _per_variable(inner.accumulated, params)]
  for group in groups:  # Interleaved variable by variable, as Keras builds.
    for i in range(n_vars):
      for keras_name, field in group:
        value = slots[field][i]
        if value is None:
          if field in spec.partial_slots:
            continue  # Keras has no such slot for this variable.
          raise ValueError(
              f"The optax_suite state has no `{field}` slot for the leaf "
              f"{_leaf_names(params)[i]!r}, where the Keras optimizer has "
              "one: build both with the same options.")
        out.append((keras_name, value))
  out += [("#" + keras_name, getattr(rule, field))
          for keras_name, field in spec.scalars]
  return _match(keras_optimizer, out)


def _match(keras_optimizer: Any, out: list) -> list:
  """The values in the order of ``keras_optimizer.variables``, checked."""
  variables = list(keras_optimizer.variables)
  if len(out) != len(variables):
    raise ValueError(
        f"The Keras optimizer has {len(variables)} variables where the "
        f"optax_suite state gives {len(out)}: build both with the same "
        "options (and, for Muon, the same routing of paths).")
  values: list[Any] = []
  for var, (suffix, value) in zip(variables, out):
    name = var.name
    if suffix.startswith("#"):  # Keras numbers unnamed variables.
      suffix, name = suffix[1:], re.sub(r"_\d+$", "", name)
    if not name.endswith(suffix):
      raise ValueError(
          f"Keras optimizer variable {var.path!r} is not a {suffix!r} "
          "variable where the optax_suite state has one.")
    if value is _KEEP:
      values.append(_KEEP)
      continue
    if tuple(np.shape(value)) != tuple(var.shape):
      raise ValueError(
          f"Keras optimizer variable {var.path!r} has shape "
          f"{tuple(var.shape)} where the optax_suite state has "
          f"{tuple(np.shape(value))}.")
    values.append(jnp.asarray(value, dtype=var.dtype))
  return values


def _loss_scale_values(opt: Any, state: Any, keras_optimizer: Any,
                       params: Any) -> list:
  if _factory(opt) is not _loss_scale.loss_scale_optimizer:
    raise ValueError(
        "A Keras LossScaleOptimizer's state comes from an optax_suite "
        f"loss_scale_optimizer. Received: opt={opt!r}")
  config = _config(opt)
  if int(config["dynamic_growth_steps"]) != int(
      keras_optimizer.dynamic_growth_steps):
    raise ValueError(
        f"`opt` has dynamic_growth_steps={config['dynamic_growth_steps']} "
        "where the Keras LossScaleOptimizer has dynamic_growth_steps="
        f"{keras_optimizer.dynamic_growth_steps}.")
  ls = _the_one(state, _loss_scale.LossScaleState, "loss_scale_optimizer's")
  own: list[Any] = []
  for var in keras_optimizer._variables:  # pylint: disable=protected-access
    if var is keras_optimizer.step_counter:
      own.append(jnp.asarray(ls.step_counter, var.dtype))
    elif var is keras_optimizer.dynamic_scale:
      own.append(jnp.asarray(ls.scale, var.dtype))
    else:
      own.append(_KEEP)
  return own + _values(config["inner"], ls.inner_state,
                       keras_optimizer.inner_optimizer, params)


def _multi_values(opt: Any, state: Any, keras_multi: Any,
                  params: Any) -> list:
  """Keras's own variables, then each inner optimizer's, by routing."""
  if _factory(opt) is not _multi.multi_optimizer:
    raise ValueError(
        "A Keras MultiOptimizer's state comes from an optax_suite "
        f"multi_optimizer. Received: opt={opt!r}")
  _check_variables(keras_multi, params)
  multi = _the_one(state, _multi.MultiOptimizerState, "multi_optimizer's")
  labels, transforms = opt.assign(params)
  ours = [lab for lab, p in zip(jax.tree.leaves(labels),
                                jax.tree.leaves(params))
          if _trees.is_trainable(p)]
  theirs = [keras_multi._var_to_optimizer_idx[keras_multi._var_key(v)]  # pylint: disable=protected-access
            for v in keras_multi._trainable_variables]  # pylint: disable=protected-access
  pairs = dict(zip(theirs, ours))
  if len(set(pairs.values())) != len(pairs) or any(
      pairs[k] != lab for lab, k in zip(ours, theirs)):
    raise ValueError(
        "The multi_optimizer routes the leaves of `params` to optimizers "
        "differently from the Keras MultiOptimizer (compare the paths, "
        f"joined with '/', with Keras's variable paths). Ours: {ours}, "
        f"Keras's: {theirs}.")
  values = [jnp.asarray(multi.count, var.dtype) if var.name == "iteration"
            else _KEEP for var in keras_multi._variables]  # pylint: disable=protected-access
  for k, k_opt in enumerate(keras_multi.optimizers):
    if k not in pairs:  # Keras built it on no variable.
      values += [_KEEP] * len(k_opt.variables)
      continue
    label = pairs[k]
    masked = jax.tree.map(
        lambda lab, p, label=label: p if lab == label else
        optax.MaskedNode(), labels, params)
    inner_state = multi.inner.inner_states[label].inner_state
    values += _values(transforms[label], inner_state, k_opt, masked)
  return values


def _values(opt: Any, state: Any, keras_optimizer: Any, params: Any) -> list:
  kind = type(keras_optimizer).__name__
  if kind == "LossScaleOptimizer":
    return _loss_scale_values(opt, state, keras_optimizer, params)
  if kind == "MultiOptimizer":
    return _multi_values(opt, state, keras_optimizer, params)
  return _single_values(opt, state, keras_optimizer, params)


def state_to_keras(opt: Any, state: Any, keras_optimizer: Any,
                   params: Any) -> list:
  """Writes ``state`` into a built Keras optimizer: the inverse of
  :func:`state_from_keras`.

  ``keras_optimizer`` is built (``keras_optimizer.build(variables)``) on the
  Keras variables of ``params``: its trainable variables, in order, are the
  floating-point leaves of ``params`` in ``jax.tree.leaves`` order, with the
  same shapes. ``state`` (of ``opt``, e.g. after ``k`` steps) becomes, in
  Keras's layout and step counting:

  * the top-level ``count`` (calls so far): Keras's ``iteration``;
  * the moving averages (``use_ema``), the gradient accumulators
    (``gradient_accumulation_steps``), the rule's slots, and the scalars its
    ``build`` adds last (Nadam's ``u_product``); Adafactor's full-size
    ``velocity`` of a factored variable is rebuilt from its ``r`` and ``c``,
    as Keras does at each step;
  * for a Keras ``LossScaleOptimizer`` (from :func:`loss_scale_optimizer`):
    ``dynamic_scale`` and ``step_counter``, then the inner optimizer's;
  * for a Keras ``MultiOptimizer`` (from :func:`multi_optimizer`, routing
    the leaves as Keras does): its ``iteration``, then each inner
    optimizer's variables from the state of ours on the same leaves.

  Keras's ``learning_rate`` variables keep their values: the learning rate
  is the Keras optimizer's own (build it with ``opt``'s config, e.g. with
  :func:`get_config`). Everything is checked before anything is written: a
  different optimizer class, a different ``gradient_accumulation_steps``,
  ``use_ema`` or ``dynamic_growth_steps``, another count of trainable
  variables, a shape or a slot that differs raises ``ValueError`` naming the
  first mismatch, and the Keras variables are left as they were.

  Args:
    opt: the optax_suite optimizer whose state it is (possibly inside
      ``inject_hyperparams``), the same optimizer as the Keras one.
    state: its state.
    keras_optimizer: a built Keras optimizer of one of the 14 classes this
      package has, a ``LossScaleOptimizer`` around one, or a
      ``MultiOptimizer`` of them.
    params: the parameters, matching the Keras trainable variables.

  Returns:
    The values now held by ``keras_optimizer.variables``, in their order
    (the ``optimizer_variables`` of a stateless Keras loop).

  Example:
    >>> import os; _ = os.environ.setdefault("KERAS_BACKEND", "jax")
    >>> import keras, numpy as np, optax, optax_suite as ox
    >>> params = {'w': np.ones(2, np.float32)}
    >>> opt = ox.adam(0.1)
    >>> state = opt.init(params)
    >>> updates, state = opt.update({'w': np.array([1.0, -1.0], np.float32)},
    ...                             state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> variables = [keras.Variable(params['w'], name='w')]
    >>> k_opt = keras.optimizers.Adam(0.1)
    >>> k_opt.build(variables)
    >>> _ = ox.state_to_keras(opt, state, k_opt, params)
    >>> int(k_opt.iterations), np.asarray(k_opt.variables[2])
    (1, array([ 0.1, -0.1], dtype=float32))
  """
  values = _values(opt, state, keras_optimizer, params)
  variables = list(keras_optimizer.variables)
  out = []
  for var, value in zip(variables, values):
    if value is _KEEP:
      out.append(var.value)
    else:
      var.assign(value)
      out.append(var.value)
  return out
