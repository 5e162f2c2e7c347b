"""Carrying a checkpointed optimizer state over to a changed optimizer."""

from __future__ import annotations

from typing import Any

import jax
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
  parameter shapes, dtypes or structure), and a half-filled accumulator
  (micro-steps taken since the last update) when accumulation is turned
  off: migrate after an update step.

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
  return _merge_state(new_opt.init(params), old_state, "state")


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


def _merge_data(new: Any, old: Any, path: str) -> Any:
  """A parameters-shaped field (or a count): the old value if it fits."""
  if _layout(new) == _layout(old):
    return old
  if isinstance(new, dict) and isinstance(old, dict):  # e.g. hyperparams.
    return type(new)(
        (k, _merge_data(v, old[k], f"{path}[{k!r}]") if k in old else v)
        for k, v in new.items())
  if not jax.tree.leaves(new) or not jax.tree.leaves(old):
    return new  # A slot turned on (or off), e.g. RMSprop's momentum.
  raise ValueError(
      f"migrate_state cannot carry `{path}`: its tree, shapes or dtypes "
      "changed (were the parameters changed?).\n"
      f"  old: {jax.tree.structure(old)}\n  new: {jax.tree.structure(new)}")


def _merge_state(new: Any, old: Any, path: str) -> Any:
  """An optimizer state: ``new`` with every part of ``old`` that fits."""
  if _is_state(new) and type(new) is type(old):
    return type(new)(*[
        (_merge_state if name in _WRAPPER_FIELDS else _merge_data)(
            n, o, f"{path}.{name}")
        for name, n, o in zip(new._fields, new, old)])
  if _is_chain(new) and _is_chain(old):
    used, merged = set(), []
    for i, n in enumerate(new):
      j = next((j for j, o in enumerate(old)
                if j not in used and _compatible(n, o)), None)
      if j is None:
        merged.append(n)
      else:
        used.add(j)
        merged.append(_merge_state(n, old[j], f"{path}[{i}]"))
    return type(new)(merged)
  if isinstance(new, dict) and isinstance(old, dict):  # PartitionState parts.
    return type(new)(
        (k, _merge_state(v, old[k], f"{path}[{k!r}]") if k in old else v)
        for k, v in new.items())
  # The new state wraps the old one.
  for name in _WRAPPER_FIELDS if _is_state(new) else ():
    child = getattr(new, name, None)
    if child is not None and _compatible(child, old):
      return new._replace(**{name: _merge_state(child, old,
                                                f"{path}.{name}")})
  # The old state wrapped the new one: keep its inner part.
  for name in _WRAPPER_FIELDS if _is_state(old) else ():
    child = getattr(old, name, None)
    if child is not None and _compatible(new, child):
      _check_nothing_pending(old, path)
      return _merge_state(new, child, path)
  return new


def _check_nothing_pending(old: Any, path: str) -> None:
  """A dropped accumulator must be empty: its micro-steps would be lost."""
  accumulated = getattr(old, "accumulated", None)
  if accumulated is None:
    return
  pending = any(bool(np.any(np.asarray(a) != 0))
                for a in jax.tree.leaves(accumulated))
  if pending:
    raise ValueError(
        f"migrate_state cannot carry `{path}.accumulated`: it holds the "
        "gradients of the micro-steps taken since the last update (call "
        f"{int(old.count)}), and the new optimizer does not accumulate. "
        "Migrate right after an update step, when it is empty.")
