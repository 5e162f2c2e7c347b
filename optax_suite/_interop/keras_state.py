"""Importing a Keras optimizer's state, to resume a Keras run in JAX.

A built Keras optimizer (``keras.optimizers.Adam`` and every class in the
registry) holds, in ``optimizer.variables`` and in this order: ``iteration``
(calls so far), ``learning_rate`` (unless it is a schedule or callable), the
parameter averages (with ``use_ema``), the gradient accumulators (with
``gradient_accumulation_steps``), the optimizer's slots, as its ``build``
adds them, and any scalar its ``build`` adds last (Nadam's ``u_product``).
:func:`state_from_keras` reads that list into the state of the equivalent
optax_suite optimizer, and :func:`from_keras` also builds that optimizer, so
training continues step for step. Where this package keeps
fewer slots than Keras (Adafactor's matrices keep ``r`` and ``c`` but not
Keras's full-size ``v``), the rule's spec says which Keras values are read.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_suite import _factories
from optax_suite import _optimizer
from optax_suite import _trees
from optax_suite._interop import config as _config
from optax_suite._options import accumulation as _accumulation
from optax_suite._options import ema as _ema
from optax_suite._wrappers import multi_optimizer as _multi


def _slot_groups(
    keras_optimizer: Any) -> tuple[type, list, tuple[str, ...]]:
  """The rule's state class and its slots as Keras's ``build`` adds them."""
  spec = _factories.REGISTRY.get(type(keras_optimizer).__name__)
  if spec is None:
    raise ValueError(
        "Unsupported Keras optimizer: the state of "
        f"{', '.join(sorted(_factories.REGISTRY))} can be imported. "
        f"Received: {type(keras_optimizer).__name__}")
  return spec.state_class, spec.slot_groups(keras_optimizer), (
      spec.optional_slots)


class _KerasVariables:
  """Keras's optimizer variables, split by role (see the module docstring)."""

  def __init__(self, keras_optimizer, n_vars, optimizer_variables):
    variables = list(keras_optimizer.variables)
    names = [v.name for v in variables]
    values = (list(optimizer_variables) if optimizer_variables is not None
              else [v.value for v in variables])
    if len(values) != len(names):
      raise ValueError(
          f"`optimizer_variables` has {len(values)} entries but the Keras "
          f"optimizer has {len(names)} variables.")
    self.state_class, groups, self.optional_slots = _slot_groups(
        keras_optimizer)
    spec = _factories.REGISTRY[type(keras_optimizer).__name__]
    scalars = spec.scalars
    partial = spec.partial_slots
    self.partial_slots = partial
    self.non_slots = spec.non_slots
    self.k = keras_optimizer.gradient_accumulation_steps
    # A partial slot is one Keras adds to some variables only (Muon's Adam
    # "velocity"): its groups are read by name, variable by variable, and
    # only their other slots count here.
    optional = any(f in partial for g in groups for _, f in g)
    per_var = sum(f not in partial for g in groups for _, f in g) + bool(
        keras_optimizer.use_ema) + bool(self.k)
    has_lr = len(values) - 1 - n_vars * per_var - len(scalars)
    if optional:
      has_lr = int(len(names) > 1 and names[1].endswith("learning_rate"))
    if has_lr not in (0, 1) or any(
        getattr(v, "overwrite_with_gradient", False)
        for v in getattr(keras_optimizer, "_trainable_variables", ())):
      raise ValueError(
          f"The Keras optimizer's {len(values)} variables do not match "
          f"{n_vars} trainable leaves of `params`: expected 1 + (0 or 1) + "
          f"{n_vars} * {per_var} + {len(scalars)}. Pass the params the "
          "Keras optimizer was built for, in the order of its variables.")
    pos = 0

    def take(count, suffix, numbered=False):
      nonlocal pos
      out = values[pos:pos + count]
      for name in names[pos:pos + count]:
        if numbered:  # Keras numbers unnamed variables: "variable_1", ...
          name = re.sub(r"_\d+$", "", name)
        if not name.endswith(suffix):
          raise ValueError(
              f"Keras optimizer variable {name!r} is not a {suffix!r} "
              "variable where Keras's build puts one.")
      pos += count
      return out

    self.calls = int(np.asarray(take(1, "iteration")[0]))
    self.learning_rate = (
        float(np.asarray(take(1, "learning_rate")[0])) if has_lr else None)
    self.average = take(n_vars, "average") if keras_optimizer.use_ema else None
    self.accumulated = (
        take(n_vars, "gradient_accumulator") if self.k else None)
    self.slots = {}
    for group in groups:
      if any(f in self.partial_slots for _, f in group):
        pos = self._read_by_name(group, n_vars, names, values, pos)
        continue
      block = values[pos:pos + n_vars * len(group)]
      block_names = names[pos:pos + n_vars * len(group)]
      for j, (keras_name, field) in enumerate(group):
        for name in block_names[j::len(group)]:
          if not name.endswith(keras_name):
            raise ValueError(
                f"Keras optimizer variable {name!r} is not a {keras_name!r} "
                "slot where Keras's build puts one.")
        self.slots[field] = block[j::len(group)]
      pos += n_vars * len(group)
    self.scalars = {field: take(1, keras_name, numbered=True)[0]
                    for keras_name, field in scalars}
    if spec.import_slots is not None:
      self.slots = spec.import_slots(self.slots)
    if pos != len(values):
      raise ValueError(
          f"The Keras optimizer has {len(values) - pos} variables left over "
          f"after the slots of {n_vars} trainable leaves of `params`: pass "
          "the params the Keras optimizer was built for.")

  def _read_by_name(self, group, n_vars, names, values, pos):
    """Reads a group variable by variable; partial slots may be absent."""
    for _, field in group:
      self.slots[field] = []
    for _ in range(n_vars):
      for keras_name, field in group:
        if pos < len(names) and names[pos].endswith(keras_name):
          self.slots[field].append(values[pos])
          pos += 1
        elif field not in self.partial_slots:
          raise ValueError(
              f"Keras optimizer variable {names[pos:pos + 1]} is not a "
              f"{keras_name!r} slot where Keras's build puts one.")
    return pos


def _n_trainable(params: Any) -> int:
  return sum(_trees.is_trainable(p) for p in jax.tree.leaves(params))


def _fill(reference: Any, values: Sequence[Any], what: str) -> Any:
  """``reference``'s tree, its non-None leaves replaced by ``values``."""
  leaves, treedef = jax.tree.flatten(reference, is_leaf=lambda x: x is None)
  if len(values) != sum(ref is not None for ref in leaves):
    raise ValueError(
        f"The Keras optimizer has {len(values)} {what} variables where the "
        f"optax_suite state has {sum(ref is not None for ref in leaves)}: "
        "build both with the same options (and, for Muon, the same routing "
        "of paths).")
  it = iter(values)
  out: list[Any] = []
  for ref in leaves:
    if ref is None:
      out.append(None)
      continue
    value = jnp.asarray(next(it), dtype=ref.dtype)
    if value.shape != ref.shape:
      raise ValueError(
          f"A Keras {what} variable has shape {value.shape} where the "
          f"matching leaf of `params` has shape {ref.shape}.")
    out.append(value)
  return jax.tree.unflatten(treedef, out)


def _with_count(node: Any, count: int) -> Any:
  return node._replace(count=jnp.asarray(count, node.count.dtype))


def _is_tuple(node: Any) -> bool:
  return isinstance(node, tuple)


def _chain_state(node: Any, kv: _KerasVariables, steps: int, found: list):
  """Sets the rule's slots and every ``count`` (to update steps) in a chain."""
  if isinstance(node, kv.state_class):
    fields = {}
    # Fields that are not Keras slots keep their `init` value (e.g. a
    # hyperparameter a state carries for a helper).
    not_slots = ("count",) + kv.non_slots
    for field in node._fields:
      if field in not_slots:
        continue
      ref = getattr(node, field)
      # No slot: None, or a tree of Nones (it keeps the params' structure).
      absent = ref is None or not jax.tree.leaves(ref)
      if field in kv.slots:
        if absent and kv.slots[field]:
          raise ValueError(
              f"The Keras optimizer has `{field}` slots that the optax_suite "
              "optimizer does not keep: build it with the same options.")
        fields[field] = _fill(ref, kv.slots[field], field)
      elif field in kv.scalars:
        fields[field] = jnp.asarray(kv.scalars[field], ref.dtype)
      elif not absent and field not in kv.optional_slots:
        raise ValueError(
            f"The optax_suite optimizer keeps `{field}` slots the Keras "
            "optimizer does not have: build it with the same options.")
    found.append(node)
    return _with_count(node, steps)._replace(**fields)
  if not _is_tuple(node):
    return node
  children = [_chain_state(c, kv, steps, found) for c in node]
  rebuilt = type(node)(*children) if hasattr(node, "_fields") else type(
      node)(children)
  if "count" in getattr(rebuilt, "_fields", ()):
    rebuilt = _with_count(rebuilt, steps)
  return rebuilt


def _optimizer_state(state: _optimizer.KerasOptimizerState,
                     kv: _KerasVariables) -> _optimizer.KerasOptimizerState:
  found: list[Any] = []
  inner = state.inner
  accumulating = isinstance(inner, _accumulation.AccumulationState)
  if accumulating != bool(kv.k):
    raise ValueError(
        "Gradient accumulation is on in only one of the two optimizers: "
        f"Keras gradient_accumulation_steps={kv.k}.")
  if accumulating:
    inner = _with_count(inner, kv.calls)._replace(
        accumulated=_fill(inner.accumulated, kv.accumulated,
                          "gradient_accumulator"),
        inner_state=_chain_state(inner.inner_state, kv, kv.calls // kv.k,
                                 found))
  else:
    inner = _chain_state(inner, kv, kv.calls, found)
  if len(found) != 1:
    raise ValueError(
        f"The optax_suite optimizer has no {kv.state_class.__name__}: it is "
        "not the same optimizer as the Keras one.")
  ema = state.ema
  if isinstance(ema, _ema.EmaState) != (kv.average is not None):
    raise ValueError("`use_ema` is on in only one of the two optimizers.")
  if kv.average is not None:
    ema = ema._replace(count=jnp.asarray(kv.calls, ema.count.dtype),
                       ema=_fill(ema.ema, kv.average, "average"))
  return state._replace(count=jnp.asarray(kv.calls, state.count.dtype),
                        inner=inner, ema=ema)


_UNKNOWN = object()


def _accumulation_steps(opt: Any) -> Any:
  """``gradient_accumulation_steps`` of ``opt`` (or of the optimizer a
  loss-scale wrapper holds); ``_UNKNOWN`` when its config does not say."""
  config = getattr(opt, "config", None) or {}
  if "gradient_accumulation_steps" in config:
    return config["gradient_accumulation_steps"]
  if "inner" in config:
    return _accumulation_steps(config["inner"])
  return _UNKNOWN


def _replace_optimizer_state(node: Any, kv: _KerasVariables, found: list):
  """Imports into the KerasOptimizerState; every count around it = calls."""
  if isinstance(node, _optimizer.KerasOptimizerState):
    found.append(node)
    return _optimizer_state(node, kv)
  if isinstance(node, dict):  # e.g. inject_hyperparams' schedule states.
    return type(node)(
        (k, _replace_optimizer_state(v, kv, found)) for k, v in node.items())
  if not _is_tuple(node):
    return node
  children = [_replace_optimizer_state(c, kv, found) for c in node]
  rebuilt = type(node)(*children) if hasattr(node, "_fields") else type(
      node)(children)
  if "count" in getattr(rebuilt, "_fields", ()):  # e.g. inject_hyperparams.
    rebuilt = _with_count(rebuilt, kv.calls)
  return rebuilt


def _check_keras_optimizer(keras_optimizer: Any) -> None:
  """A built Keras optimizer object, not a name or a config."""
  if isinstance(keras_optimizer, (str, bytes)) or not hasattr(
      keras_optimizer, "variables"):
    raise TypeError(
        "`keras_optimizer` must be a Keras optimizer object (e.g. "
        "`keras.optimizers.Adam(...)`, built by a step or `build`); for a "
        "name or a config use `optax_suite.from_config`. Received: "
        f"keras_optimizer={keras_optimizer!r}")


def state_from_keras(
    opt: Any,
    keras_optimizer: Any,
    params: Any,
    optimizer_variables: Optional[Sequence[Any]] = None,
) -> Any:
  """The state of ``opt`` holding a built Keras optimizer's state.

  ``params`` are the parameters the Keras optimizer was built for: its
  trainable variables, in order, are the floating-point leaves of ``params``
  in ``jax.tree.leaves`` order (non-float leaves have no Keras variable).
  The Keras optimizer's ``variables`` (or, for a stateless Keras loop, the
  list of their values ``optimizer_variables``, e.g. what
  ``stateless_apply`` returned) become, with Keras's step counting:

  * ``iteration`` (calls so far): the top-level ``count``, the accumulator's
    ``count``, the EMA's ``count`` and any ``count`` of a wrapper around the
    optimizer (``optax.inject_hyperparams`` and its schedules' states, so a
    schedule resumes where Keras's was);
  * the gradient accumulators, the averages, and the optimizer's slots;
  * ``iteration // gradient_accumulation_steps`` (update steps): the
    ``count`` of every state inside the accumulation (the rule's bias
    correction and the weight decay).

  ``opt`` must be the same optimizer (see :func:`from_keras` to build it); a
  mismatch in the slots, the EMA or the accumulation raises ``ValueError``.
  Keras's ``learning_rate`` variable is not read here.

  Args:
    opt: an optax_suite optimizer (possibly inside ``inject_hyperparams``).
    keras_optimizer: a built Keras optimizer of one of the 14 classes this
      package has (``keras.optimizers.Adam``, ``SGD``, ...) or a
      ``MultiOptimizer`` of them.
    params: the parameters, matching the Keras trainable variables.
    optimizer_variables: values of ``keras_optimizer.variables``, if they
      live outside it (a stateless loop).

  Returns:
    A state for ``opt.update``.

  Example:
    >>> import os; _ = os.environ.setdefault("KERAS_BACKEND", "jax")
    >>> import keras, numpy as np, optax_suite as ox
    >>> params = {'w': np.ones(2, np.float32)}
    >>> variables = [keras.Variable(params['w'], name='w')]
    >>> k_opt = keras.optimizers.Adam(0.1)
    >>> k_opt.apply([np.array([1.0, -1.0], np.float32)], variables)
    >>> state = ox.state_from_keras(ox.adam(0.1), k_opt, params)
    >>> int(state.count), state.inner[1].mu['w']
    (1, Array([ 0.1, -0.1], dtype=float32))
  """
  _check_keras_optimizer(keras_optimizer)
  if type(keras_optimizer).__name__ == "MultiOptimizer":
    return _multi_state_from_keras(opt, keras_optimizer, params,
                                   optimizer_variables)
  kv = _KerasVariables(keras_optimizer, _n_trainable(params),
                       optimizer_variables)
  ours = _accumulation_steps(opt)
  if ours is not _UNKNOWN and ours != kv.k:
    raise ValueError(
        "`gradient_accumulation_steps` differs: the optax_suite optimizer "
        f"has gradient_accumulation_steps={ours}, the Keras one "
        f"gradient_accumulation_steps={kv.k}.")
  found: list[Any] = []
  state = _replace_optimizer_state(opt.init(params), kv, found)
  if len(found) != 1:
    raise ValueError(
        "`opt` must be (or wrap exactly one) optimizer built by optax_suite's "
        f"factories; found {len(found)} in its state.")
  return state


def _multi_state_from_keras(opt, keras_multi, params, optimizer_variables):
  """A multi_optimizer's state from Keras's MultiOptimizer.

  Keras's variables are its own (``iteration``, ``learning_rate``), then each
  inner optimizer's. Each of our inner optimizers is paired with the Keras
  one that holds the same leaves (by position), and imported on its leaves.
  """
  if getattr(opt, "factory", None) is not _multi.multi_optimizer:
    raise ValueError(
        "A Keras MultiOptimizer's state goes into an optax_suite "
        f"multi_optimizer. Received: opt={opt!r}")
  values = (list(optimizer_variables) if optimizer_variables is not None
            else [v.value for v in keras_multi.variables])
  own = len(keras_multi._variables)  # pylint: disable=protected-access
  inner_keras = list(keras_multi.optimizers)
  slices, pos = [], own
  for k_opt in inner_keras:
    slices.append(values[pos:pos + len(k_opt.variables)])
    pos += len(k_opt.variables)
  if pos != len(values):
    raise ValueError(
        f"`optimizer_variables` has {len(values)} entries; the Keras "
        f"MultiOptimizer has {pos} variables.")
  labels, transforms = opt.assign(params)
  ours = [lab for lab, p in zip(jax.tree.leaves(labels),
                                jax.tree.leaves(params))
          if _trees.is_trainable(p)]
  k_vars = list(keras_multi._trainable_variables)  # pylint: disable=protected-access
  theirs = [keras_multi._var_to_optimizer_idx[keras_multi._var_key(v)]  # pylint: disable=protected-access
            for v in k_vars]
  pairs = dict(zip(ours, theirs))
  if len(ours) != len(theirs) or len(set(pairs.values())) != len(pairs) or (
      any(pairs[lab] != k for lab, k in zip(ours, theirs))):
    raise ValueError(
        "The multi_optimizer routes the leaves of `params` to optimizers "
        "differently from the Keras MultiOptimizer (compare the paths, "
        f"joined with '/', with Keras's variable paths). Ours: {ours}, "
        f"Keras's: {theirs}.")
  state = opt.init(params)
  inner_states = dict(state.inner.inner_states)
  for label, k in pairs.items():
    masked = jax.tree.map(
        lambda lab, p, label=label: p if lab == label else optax.MaskedNode(),
        labels, params)
    inner_states[label] = optax.MaskedState(inner_state=state_from_keras(
        transforms[label], inner_keras[k], masked, slices[k]))
  return state._replace(
      count=jnp.asarray(int(np.asarray(values[0])), state.count.dtype),
      inner=state.inner._replace(inner_states=inner_states))


def from_keras(
    keras_optimizer: Any,
    params: Any,
    optimizer_variables: Optional[Sequence[Any]] = None,
) -> tuple[Any, Any]:
  """The optax_suite optimizer equivalent to a built Keras one, and its state.

  The optimizer is rebuilt from ``keras.optimizers.serialize`` with
  :func:`optax_suite.from_config`, taking the learning rate from Keras's
  ``learning_rate`` variable (the value it holds now). Weight-decay
  exclusions set with ``keras_optimizer.exclude_from_weight_decay`` carry
  over: ``var_names`` patterns as ``exclude_from_weight_decay``, searched,
  as Keras searches ``variable.name``, in each leaf's own name (the last key
  of its path, so key the leaves by the Keras variables' names), and a
  ``var_list`` as a ``weight_decay_mask``. The state is
  :func:`state_from_keras`'s.

  Args:
    keras_optimizer: a built Keras optimizer of one of the 14 classes this
      package has (``keras.optimizers.Adam``, ``SGD``, ...) or a
      ``MultiOptimizer`` of them.
    params: the parameters, matching the Keras trainable variables.
    optimizer_variables: values of ``keras_optimizer.variables``, if they
      live outside it (a stateless loop).

  Returns:
    ``(opt, state)``.

  Example:
    >>> import os; _ = os.environ.setdefault("KERAS_BACKEND", "jax")
    >>> import keras, numpy as np, optax_suite as ox
    >>> params = np.ones(2, np.float32)
    >>> variables = [keras.Variable(params)]
    >>> k_opt = keras.optimizers.RMSprop(0.1, momentum=0.9, use_ema=True)
    >>> k_opt.apply([np.array([1.0, -1.0], np.float32)], variables)
    >>> opt, state = ox.from_keras(k_opt, params)
    >>> opt.config["momentum"], int(state.count)
    (0.9, 1)
  """
  import keras  # pylint: disable=g-import-not-at-top

  _check_keras_optimizer(keras_optimizer)
  if type(keras_optimizer).__name__ == "MultiOptimizer":
    # Rebuilt from its config (an OptimizerMap's keys are Keras's paths);
    # each inner optimizer's learning rate is its config's.
    opt = _config.from_config(keras.optimizers.serialize(keras_optimizer))
    return opt, state_from_keras(opt, keras_optimizer, params,
                                 optimizer_variables)
  kv = _KerasVariables(keras_optimizer, _n_trainable(params),
                       optimizer_variables)
  serialized = keras.optimizers.serialize(keras_optimizer)
  config = dict(serialized["config"])
  if kv.learning_rate is not None:
    config["learning_rate"] = kv.learning_rate
  decays = any(config.get(k) is not None
               for k in ("weight_decay", "adam_weight_decay"))  # Muon: 2.
  if decays:
    pattern = getattr(keras_optimizer, "_exclude_from_weight_decay_pattern",
                      None)
    if pattern is not None:
      config["exclude_from_weight_decay"] = [pattern.pattern]
  opt = _config.from_config(dict(serialized, config=config))
  excluded = getattr(keras_optimizer, "_exclude_from_weight_decay", None)
  if decays and excluded:
    keras_vars = list(keras_optimizer._trainable_variables)  # pylint: disable=protected-access
    flags = iter([id(v) not in excluded for v in keras_vars])
    mask = _trees.tree_map(
        lambda p: next(flags) if _trees.is_trainable(p) else False, params)
    opt = opt.factory(**dict(opt.config, weight_decay_mask=mask))
  return opt, state_from_keras(opt, keras_optimizer, params,
                               optimizer_variables)
