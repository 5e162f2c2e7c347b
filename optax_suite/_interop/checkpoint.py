"""Carrying a checkpointed optimizer state over to a changed optimizer."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def migrate_state(
    old_state: optax.OptState,
    new_opt: optax.GradientTransformation,
    params: optax.Params,
) -> optax.OptState:
  """Builds ``new_opt``'s state, keeping every part of ``old_state`` that fits.

  Turning on an option (``use_ema``, ``gradient_accumulation_steps``, a
  clipping or weight-decay option, ...) changes the structure of the state,
  so a checkpoint of the old state no longer restores into the new one.
  Restore the checkpoint with the *old* optimizer's structure (e.g. a target
  from ``jax.eval_shape(old_opt.init, params)``), then call this: it starts
  from ``new_opt.init(params)`` and walks both states together, matching
  sub-states by their own types and fields, never by position or length:

  - Two states of the same type are matched field by field, by name. A
    field holding a wrapped state (``inner``, ``inner_state``,
    ``inner_states``, ``inner_opt_state``) is matched as a state; any other
    field (counts, moments, EMA, accumulator: trees like the parameters) is
    copied when its tree structure, shapes and dtypes are unchanged.
  - In a chain (a plain tuple of states) each new state takes the first
    unused old state of its own type, so inserting or removing a
    transformation (clipping, weight decay) moves nothing to the wrong slot.
  - When the new state wraps the old one (``AccumulationState`` around the
    optimizer's chain after accumulation is turned on), the old state goes
    into its wrapper field; when the old state wrapped the new one, the
    inner part is kept.
  - Anything with no counterpart keeps its fresh value from
    ``new_opt.init(params)``: a new EMA starts from ``params`` (its first
    call uses momentum 0), a new accumulator starts empty, a new rule (after
    switching Adam to RMSprop) starts with fresh slots.

  What cannot be carried raises a ``ValueError`` naming it instead of
  being dropped: a field whose parameters-shaped tree changed (other
  parameter shapes, dtypes or structure; a renamed, added or removed
  parameter is named), a half-filled accumulator (micro-steps taken since
  the last update) when accumulation is turned off, and an ``old_state``
  of which nothing fits (``None``, another library's state such as
  ``optax.adam``'s, a dict whose keys are not those of ``new_opt``'s
  state).

  A plain dict (``flax.serialization.to_state_dict`` of a state, or an
  orbax restore without a target, which gives lists for tuples and ``None``
  for empty states) is read as ``new_opt``'s state when its keys are that
  state's fields; a dict of
  another configuration's state must first be restored into that
  configuration's state (``from_state_dict(jax.eval_shape(old_opt.init,
  params), d)``).

  Gradient accumulation: an empty accumulator (right after an update step)
  starts a new cycle of the new optimizer's ``gradient_accumulation_steps``
  (which may differ from the old one's): the next call is its first
  micro-step. A half-filled accumulator keeps its cycle position, which is
  only right for the same number of steps: change
  ``gradient_accumulation_steps`` right after an update step. An
  accumulator that is all zeros because every gradient since the last
  update was exactly zero cannot be told from an empty one: it too starts
  a new cycle, which moves the next update call. Checkpoint (and migrate)
  right after an update step to be safe from this.

  Args:
    old_state: the restored state of the old optimizer.
    new_opt: the new optimizer.
    params: the current (restored) parameters.

  Returns:
    A state of ``new_opt``, ready for its ``update``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> params = jnp.array([1.0, 2.0])
    >>> old = ox.adam(0.1)
    >>> state = old.init(params)
    >>> _, state = old.update(jnp.array([1.0, -1.0]), state, params)
    >>> new = ox.adam(0.1, use_ema=True)
    >>> migrated = ox.migrate_state(state, new, params)
    >>> int(migrated.count), migrated.inner[1].mu
    (1, Array([ 0.1, -0.1], dtype=float32))
    >>> migrated.ema.ema  # a new EMA starts from the parameters
    Array([1., 2.], dtype=float32)
  """
  new = new_opt.init(params)
  if old_state is None or not jax.tree.leaves(old_state):
    raise ValueError(
        "migrate_state needs the restored state of the old optimizer. "
        f"Received: old_state={old_state!r}")
  if isinstance(old_state, dict) and not isinstance(new, dict):
    old_state = _from_state_dict(new, old_state, "old_state")
  carried: list = []
  merged = _merge_state(new, old_state, "state", carried)
  if not carried:
    raise ValueError(
        "migrate_state found nothing of `old_state` in the new optimizer's "
        "state: it is not a state of an optimizer of this package (or of "
        f"the same wrappers). old_state: {type(old_state).__name__} "
        f"{jax.tree.structure(old_state)}\n  new state: "
        f"{jax.tree.structure(new)}")
  return merged


def _from_state_dict(template: Any, d: Any, path: str) -> Any:
  """``d`` (``flax.serialization.to_state_dict`` of a state like
  ``template``) as that state; a ``ValueError`` names the first key that
  does not match."""
  if not jax.tree.leaves(template) and not jax.tree.leaves(d):
    return template  # EmptyState and the like (orbax restores it as None).
  if (_is_chain(template) and isinstance(d, (tuple, list))
      and len(d) == len(template)):  # A chain as orbax restores it: a list.
    return type(template)(
        _from_state_dict(c, x, f"{path}[{i}]")
        for i, (c, x) in enumerate(zip(template, d)))
  if _is_state(template) or isinstance(template, (tuple, list, dict)):
    if _is_state(template):
      keys = list(template._fields)
      children = list(template)
    elif isinstance(template, dict):
      keys, children = list(template), list(template.values())
    else:
      keys, children = [str(i) for i in range(len(template))], list(template)
    if not isinstance(d, dict) or set(map(str, keys)) != set(map(str, d)):
      got = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
      raise ValueError(
          f"migrate_state cannot read `{path}` as the new optimizer's state: "
          f"expected the keys {sorted(map(str, keys))}, received {got}. A "
          "state dict of another optimizer configuration must first be "
          "restored into that configuration's state: "
          "flax.serialization.from_state_dict(jax.eval_shape(old_opt.init, "
          "params), state_dict).")
    values = [_from_state_dict(c, d[str(k)], f"{path}[{str(k)!r}]")
              for k, c in zip(keys, children)]
    if _is_state(template):
      return type(template)(*values)
    if isinstance(template, dict):
      return type(template)(zip(keys, values))
    return type(template)(values)
  if template is None and d is not None and jax.tree.leaves(d):
    raise ValueError(
        f"migrate_state cannot read `{path}`: the new optimizer's state has "
        "no value there.")
  return d


# Fields that hold a wrapped optimizer state (ours and optax's wrappers).
_WRAPPER_FIELDS = ("inner", "inner_state", "inner_states", "inner_opt_state")


def _layout(tree: Any) -> Any:
  """Tree structure with the shape and dtype of every leaf."""
  leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: x is None)
  return treedef, [None if x is None else (
      getattr(x, "shape", None), getattr(x, "dtype", type(x)))
                   for x in leaves]


def _is_state(node: Any) -> bool:
  return hasattr(node, "_fields")  # A NamedTuple (optax states are).


def _is_chain(node: Any) -> bool:
  return isinstance(node, (tuple, list)) and not _is_state(node)


def _compatible(new: Any, old: Any) -> bool:
  """Same state type, or both chains (tuples of states)."""
  if _is_chain(new) and _is_chain(old):
    return True
  return type(new) is type(old) and (_is_state(new) or isinstance(new, dict))


# Dict fields keyed by hyperparameter names (optax.inject_hyperparams): a
# hyperparameter made injectable keeps its fresh value.
_NAMED_FIELDS = ("hyperparams", "hyperparams_states")


def _merge_data(new: Any, old: Any, path: str, carried: list,
                named: bool = False) -> Any:
  """A parameters-shaped field (or a count): the old value if it fits."""
  if _layout(new) == _layout(old):
    if jax.tree.leaves(old):
      carried.append(path)
    return old
  if isinstance(new, dict) and isinstance(old, dict):
    if not named and set(new) != set(old) and jax.tree.leaves(
        old) and jax.tree.leaves(new):
      added = sorted(map(str, set(new) - set(old)))
      removed = sorted(map(str, set(old) - set(new)))
      raise ValueError(
          f"migrate_state cannot carry `{path}`: its parameters differ "
          f"(were they renamed?): only in the new parameters: {added}; only "
          f"in the old state: {removed}.")
    return type(new)(
        (k, _merge_data(v, old[k], f"{path}[{k!r}]", carried, named)
         if k in old else v)
        for k, v in new.items())
  if not jax.tree.leaves(new) or not jax.tree.leaves(old):
    return new  # A slot turned on (or off), e.g. RMSprop's momentum.
  raise ValueError(
      f"migrate_state cannot carry `{path}`: its tree, shapes or dtypes "
      "changed (were the parameters changed?).\n"
      f"  old: {jax.tree.structure(old)}\n  new: {jax.tree.structure(new)}")


def _merge_state(new: Any, old: Any, path: str, carried: list) -> Any:
  """An optimizer state: ``new`` with every part of ``old`` that fits."""
  if _is_state(new) and type(new) is type(old):
    merged = type(new)(*[
        _merge_state(n, o, f"{path}.{name}", carried)
        if name in _WRAPPER_FIELDS else
        _merge_data(n, o, f"{path}.{name}", carried, name in _NAMED_FIELDS)
        for name, n, o in zip(new._fields, new, old)])
    return _restart_cycle(merged)
  if _is_chain(new) and _is_chain(old):
    used, merged = set(), []
    for i, n in enumerate(new):
      j = next((j for j, o in enumerate(old)
                if j not in used and _compatible(n, o)), None)
      if j is None:
        merged.append(n)
      else:
        used.add(j)
        merged.append(_merge_state(n, old[j], f"{path}[{i}]", carried))
    return type(new)(merged)
  if isinstance(new, dict) and isinstance(old, dict):  # PartitionState parts.
    return type(new)(
        (k, _merge_state(v, old[k], f"{path}[{k!r}]", carried)
         if k in old else v)
        for k, v in new.items())
  # The new state wraps the old one.
  for name in _WRAPPER_FIELDS if _is_state(new) else ():
    child = getattr(new, name, None)
    if child is not None and _compatible(child, old):
      return new._replace(**{name: _merge_state(child, old,
                                                f"{path}.{name}", carried)})
  # The old state wrapped the new one: keep its inner part.
  for name in _WRAPPER_FIELDS if _is_state(old) else ():
    child = getattr(old, name, None)
    if child is not None and _compatible(new, child):
      _check_nothing_pending(old, path)
      return _merge_state(new, child, path, carried)
  return new


def _pending(state: Any) -> bool:
  return any(bool(np.any(np.asarray(a) != 0))
             for a in jax.tree.leaves(state.accumulated))


def _restart_cycle(state: Any) -> Any:
  """An accumulation state with an empty accumulator starts a new cycle.

  Its ``count`` is the cycle position (``(count + 1) % k == 0`` is the
  update call); kept from an optimizer with another ``k``, the first call
  could be an update of one gradient. Right after an update step nothing is
  pending, so a new cycle loses nothing.
  """
  fields = getattr(state, "_fields", ())
  if not ("accumulated" in fields and "count" in fields
          and "inner_state" in fields):
    return state
  if _pending(state):
    return state
  return state._replace(count=jnp.zeros_like(state.count))


def _check_nothing_pending(old: Any, path: str) -> None:
  """A dropped accumulator must be empty: its micro-steps would be lost."""
  accumulated = getattr(old, "accumulated", None)
  if accumulated is None:
    return
  if _pending(old):
    raise ValueError(
        f"migrate_state cannot carry `{path}.accumulated`: it holds the "
        "gradients of the micro-steps taken since the last update (call "
        f"{int(old.count)}), and the new optimizer does not accumulate. "
        "Migrate right after an update step, when it is empty.")
