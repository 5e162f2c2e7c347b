"""Tree helpers: which leaves are trained, slots, maps, paths, tree checks.

Only real floating-point leaves are trained; integer and boolean leaves get
a zero update and no slot (their slot is ``None``); complex leaves are
refused at ``init`` with a ``ValueError`` naming them
(:func:`check_not_complex`).
"""

from __future__ import annotations

from typing import Any, Callable, Union

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp

from optax_suite import _checks


def is_trainable(x: Any) -> bool:
  return (
      x is not None
      and hasattr(x, "dtype")
      and jnp.issubdtype(x.dtype, jnp.floating)
  )


def is_none(x: Any) -> bool:
  """`is_leaf` that keeps `None` leaves (jax drops them by default)."""
  return x is None


_none_is_leaf = is_none


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
  """`jax.tree.map` over `tree`, handing its `None` leaves to `fn`."""
  return jax.tree.map(fn, tree, *rest, is_leaf=_none_is_leaf)


def zeros_like(p: Any, dtype: Any = None) -> Any:
  """A zero slot for a trainable leaf, `None` for any other leaf.

  The slot keeps `p`'s sharding, eagerly and under `jax.jit`. Eagerly (and
  on an explicitly sharded mesh) `jnp.zeros_like` does. Under `jax.jit` on an
  automatically sharded mesh a constant has no data dependence for the
  compiler to propagate `p`'s sharding along, so it would come out replicated
  (what optax's own `init`s do); the zeros are therefore computed from `p`
  (`|p * 0|`, with the NaN that gives for a non-finite `p` replaced by 0),
  which the compiler cannot fold into a constant.
  """
  if not is_trainable(p):
    return None
  dtype = dtype or p.dtype
  if _checks.is_concrete(p):
    return jnp.zeros_like(p, dtype=dtype)
  zero = jnp.abs(p * jnp.zeros([], p.dtype))
  zero = jnp.where(zero == 0, zero, jnp.zeros([], p.dtype))
  return zero.astype(dtype)


def copy_of(p: Any) -> Any:
  """A fresh copy of a trainable leaf (`None` for any other leaf).

  The copy owns its buffer, so a state holding it can be donated together
  with the parameters. An abstract leaf (`jax.ShapeDtypeStruct`, as optax's
  own contract tests pass to `init`) has no value to copy: it gets zeros of
  its shape, dtype and sharding.
  """
  if not is_trainable(p):
    return None
  if isinstance(p, jax.ShapeDtypeStruct):
    return zeros_like(p)
  return jnp.array(p, copy=True)


def check_not_complex(params: Any) -> None:
  """Refuses complex leaves, naming the first one's path.

  Keras's update rules are defined for real numbers only, and leaving a
  complex leaf untrained would be silent. A complex parameter can be trained
  as two real leaves (`jnp.real(z)`, `jnp.imag(z)`). A Python float leaf is
  refused too: it has no dtype, so it would be left untrained without a
  word (optax trains it; give it as `jnp.asarray(x)`).
  """
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    if isinstance(p, float):
      raise ValueError(
          "Parameters must be arrays: the parameter at "
          f"`params{jax.tree_util.keystr(path)}` is the Python float {p!r}, "
          "which would not be trained. Pass `jnp.asarray(value)`.")
    if hasattr(p, "dtype") and jnp.issubdtype(p.dtype, jnp.complexfloating):
      raise ValueError(
          "Complex parameters are not supported (Keras's optimizers are "
          "defined for real numbers): the parameter at "
          f"`params{jax.tree_util.keystr(path)}` is {p.dtype}. Train its "
          "real and imaginary parts as two real leaves.")


def slots(params: Any, dtype: Any = None) -> Any:
  """A zero slot per trainable leaf of `params` (`None` for the others).

  Every rule's `init` builds its slots here, so a complex leaf is refused
  here (see `check_not_complex`).
  """
  check_not_complex(params)
  return tree_map(lambda p: zeros_like(p, dtype), params)


def nones_like(tree: Any) -> Any:
  """A tree like `tree` with `None` at every leaf: an absent optional slot."""
  return jax.tree.map(lambda _: None, tree)



def check_params(params: Any, needed_for: str) -> None:
  if params is None:
    raise ValueError(
        f"`params` must be passed to `update` when {needed_for} is used: "
        "call `opt.update(grads, state, params)`."
    )


def _is_bcoo(x: Any) -> bool:
  return isinstance(x, jsparse.BCOO)


def check_same_structure(grads: Any, params: Any) -> None:
  """Grads and params must have the same tree structure."""
  if params is None:
    return
  # A None grad for an array param differs; a row-sparse BCOO is one leaf.
  # (Any: jax's PyTreeDef stub declares no __eq__.)
  gs: Any = jax.tree.structure(grads, is_leaf=_is_bcoo)
  ps: Any = jax.tree.structure(params)
  if gs != ps:
    raise ValueError(
        "The structure of the gradients does not match the structure of "
        f"`params`.\n  grads:  {gs}\n  params: {ps}"
    )
  check_leaves_fit(grads, params)


def check_leaves_fit(grads: Any, params: Any) -> None:
  """Each gradient has its parameter's shape, and a float parameter's
  gradient is a float (trace-time: shapes and dtypes only).

  A ``(1, 3)`` or scalar gradient for a ``(2, 3)`` parameter would be
  broadcast into the moments, and an integer gradient of a float
  parameter give an integer zero update: both are refused, naming the leaf.
  """
  g_leaves = jax.tree_util.tree_flatten_with_path(grads, is_leaf=_is_bcoo)[0]
  p_leaves = jax.tree.leaves(params)
  for (path, g), p in zip(g_leaves, p_leaves):
    if g is None or p is None or not hasattr(p, "shape") or _is_bcoo(g):
      continue  # A BCOO's layout and shape: `sparse.check_row_sparse`.
    name = f"grads{jax.tree_util.keystr(path)}"
    g_shape = tuple(jnp.shape(g))
    if g_shape != tuple(jnp.shape(p)):
      raise ValueError(
          f"The gradient at `{name}` has shape {g_shape} where its parameter "
          f"has shape {tuple(jnp.shape(p))}: gradients are not broadcast.")
    if is_trainable(p) and hasattr(g, "dtype") and not jnp.issubdtype(
        g.dtype, jnp.floating):
      raise ValueError(
          f"The gradient at `{name}` is {g.dtype} where its parameter is "
          f"{p.dtype}: a floating-point parameter needs a floating-point "
          "gradient (cast it, e.g. `g.astype(p.dtype)`).")


class _Pack:
  """An opaque leaf holding several per-leaf results (not a pytree node)."""
  __slots__ = ("values",)

  def __init__(self, values):
    self.values = values


def tree_map_n(fn: Callable[..., tuple], n: int, tree: Any, *rest: Any):
  """Maps `fn` (returning an `n`-tuple) over leaves; returns `n` trees."""
  packed = tree_map(lambda *a: _Pack(fn(*a)), tree, *rest)
  return tuple(
      jax.tree.map(lambda pk, i=i: pk.values[i], packed) for i in range(n)
  )


def find_nodes(tree: Any, cls: Union[type, tuple[type, ...]]) -> list:
  """Every node of type `cls` in `tree` (e.g. an `EmaState` in a chain's)."""
  return [
      node for node in jax.tree.leaves(
          tree, is_leaf=lambda x: isinstance(x, cls))
      if isinstance(node, cls)
  ]


def key_name(key: Any) -> str:
  """A path entry's own name: dict key, attribute or field name, or index."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_name(path: Any) -> str:
  """A key path joined with "/", as Keras joins layer paths.

  Dict keys, attribute and field names, and sequence indices (as decimal
  strings) are the parts: ``{'encoder': {'dense': {'kernel': w}}}`` gives
  ``"encoder/dense/kernel"`` for ``w``.
  """
  return "/".join(key_name(key) for key in path)
