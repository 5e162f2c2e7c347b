"""Carrying a checkpointed optimizer state over to a changed optimizer."""

from __future__ import annotations

from typing import Any

import jax
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
  from ``new_opt.init(params)`` and walks both states together.

  - A sub-state with the same tree structure, shapes and dtypes in both is
    copied from ``old_state`` (counts, moments, EMA, accumulators).
  - Two states of the same type (or tuples of the same length, as in
    ``optax.chain``) are matched field by field.
  - When the new state wraps the old one (``AccumulationState`` around the
    optimizer's chain after accumulation is turned on), the old state goes
    inside; when the old state wrapped the new one, the inner part is kept.
  - Anything else keeps its fresh value from ``new_opt.init(params)``: a new
    EMA starts from ``params`` (its first call uses momentum 0) and a new
    accumulator starts empty, with its micro-step count at 0.

  Nothing is dropped silently in the common cases above; a state that matches
  nowhere (e.g. after switching Adam to RMSprop) simply comes back fresh.

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
  return _merge(new_opt.init(params), old_state)


def _same_layout(a: Any, b: Any) -> bool:
  """Same tree structure and the same shape and dtype at every leaf."""
  is_none = lambda x: x is None
  tree_a: Any  # jax's PyTreeDef stub declares no __eq__.
  leaves_a, tree_a = jax.tree.flatten(a, is_leaf=is_none)
  leaves_b, tree_b = jax.tree.flatten(b, is_leaf=is_none)
  if tree_a != tree_b:
    return False
  for x, y in zip(leaves_a, leaves_b):
    if (x is None) != (y is None):
      return False
    if x is not None and (
        getattr(x, "shape", None) != getattr(y, "shape", None)
        or getattr(x, "dtype", None) != getattr(y, "dtype", None)):
      return False
  return True


def _children(node: Any):
  """The fields of a NamedTuple or the items of a tuple/list, else None."""
  if isinstance(node, (tuple, list)):
    return list(node)
  return None


def _rebuild(node: Any, children: list) -> Any:
  if hasattr(node, "_fields"):  # NamedTuple
    return type(node)(*children)
  return type(node)(children)


def _merge(new: Any, old: Any) -> Any:
  if _same_layout(new, old):
    return old
  new_children, old_children = _children(new), _children(old)
  if new_children is None:
    return new
  # Same kind of node: match part by part.
  if _same_kind(new, old):
    return _rebuild(new, [_merge(n, o) for n, o in zip(new_children,
                                                       old_children)])
  if old_children is None:
    return new
  # The new state wraps the old one.
  for i, child in enumerate(new_children):
    if _same_kind(child, old):
      new_children[i] = _merge(child, old)
      return _rebuild(new, new_children)
  # The old state wrapped the new one.
  for child in old_children:
    if _same_kind(new, child):
      return _merge(new, child)
  return new


def _same_kind(a: Any, b: Any) -> bool:
  """Both are NamedTuples/tuples of the same type and length."""
  ca, cb = _children(a), _children(b)
  return (ca is not None and cb is not None and type(a) is type(b)
          and len(ca) == len(cb))
