"""Keras's three gradient-clipping options as optax transformations."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


def _static_zero(value: Any) -> bool:
  """Keras skips a clip whose bound is 0; decide statically when we can."""
  return _checks.is_concrete(value) and float(value) == 0.0


def _stateless(update_leaves) -> optax.GradientTransformation:
  def update_fn(updates, state, params=None):
    del params
    return update_leaves(updates), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def _floats(fn):
  """Applies `fn` to floating leaves (in float32 at least), others unchanged."""
  def leaf(g):
    if not _trees.is_trainable(g):
      return g
    return fn(g.astype(_numerics.compute_dtype(g.dtype))).astype(g.dtype)
  return lambda tree: jax.tree.map(leaf, tree)


def clip_by_norm(clipnorm: float) -> optax.GradientTransformation:
  r"""Clips each leaf to L2 norm at most ``clipnorm`` (Keras ``clipnorm``).

  .. math:: g \leftarrow g\, c / \max(\lVert g \rVert_2, c)

  A bound of 0 disables clipping, as in Keras.

  Args:
    clipnorm: the per-leaf bound, >= 0.

  Returns:
    A stateless ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.clip_by_norm(1.0)
    >>> tx.update({'a': jnp.array([3.0, 4.0])}, tx.init(None))[0]['a']
    Array([0.6, 0.8], dtype=float32)
  """
  _checks.check_non_negative("clipnorm", clipnorm)
  if _static_zero(clipnorm):
    return _stateless(lambda tree: tree)

  def clip(g):
    l2sum = jnp.sum(jnp.square(g), keepdims=True)
    positive = l2sum > 0
    l2norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, l2sum, 1)), l2sum)
    clipped = (g * clipnorm) / jnp.maximum(l2norm, clipnorm)
    return jnp.where(clipnorm > 0, clipped, g) if not _checks.is_concrete(
        clipnorm) else clipped

  return _stateless(_floats(clip))


def clip_by_value(clipvalue: float) -> optax.GradientTransformation:
  r"""Clips every element to ``[-clipvalue, clipvalue]`` (Keras ``clipvalue``).

  A bound of 0 disables clipping, as in Keras.

  Args:
    clipvalue: the element-wise bound, >= 0.

  Returns:
    A stateless ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.clip_by_value(0.5)
    >>> tx.update(jnp.array([-2.0, 0.1, 3.0]), tx.init(None))[0]
    Array([-0.5,  0.1,  0.5], dtype=float32)
  """
  _checks.check_non_negative("clipvalue", clipvalue)
  if _static_zero(clipvalue):
    return _stateless(lambda tree: tree)

  def clip(g):
    clipped = jnp.clip(g, -clipvalue, clipvalue)
    return jnp.where(clipvalue > 0, clipped, g) if not _checks.is_concrete(
        clipvalue) else clipped

  return _stateless(_floats(clip))


def global_norm(tree: Any) -> jax.Array:
  """The L2 norm over all floating leaves, summed leaf by leaf as Keras does.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> ox.global_norm({'a': jnp.array([3.0]), 'b': jnp.array([4.0]),
    ...                 'step': jnp.array(7)})  # integer leaves do not count
    Array(5., dtype=float32)
  """
  leaves = [
      jnp.sum(jnp.square(g.astype(_numerics.compute_dtype(g.dtype))))
      for g in jax.tree.leaves(tree) if _trees.is_trainable(g)
  ]
  if not leaves:
    return jnp.zeros([], jnp.float32)
  return jnp.sqrt(jnp.sum(jnp.stack(leaves)))


def clip_by_global_norm(global_clipnorm: float) -> optax.GradientTransformation:
  r"""Clips all leaves together to global norm ``global_clipnorm`` (Keras).

  .. math::
    s = c \min(1 / \lVert g \rVert, 1 / c)
      + (\lVert g \rVert - \lVert g \rVert), \qquad g \leftarrow s\, g

  The second term is 0 for a finite norm and NaN otherwise, so a non-finite
  global norm turns every gradient into NaN (Keras's choice; pair it with
  :func:`loss_scale_optimizer` to skip such steps instead). The scale is
  applied in the same pass as the next transformation under ``jax.jit``:
  no clipped copy of the gradients is kept. A bound of 0 disables clipping.

  Args:
    global_clipnorm: the bound on the global norm, >= 0.

  Returns:
    A stateless ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.clip_by_global_norm(1.0)
    >>> g = {'a': jnp.array([3.0]), 'b': jnp.array([4.0])}
    >>> out = tx.update(g, tx.init(None))[0]
    >>> float(out['a'][0]), float(out['b'][0])
    (0.6000000238418579, 0.800000011920929)
  """
  _checks.check_non_negative("global_clipnorm", global_clipnorm)
  if _static_zero(global_clipnorm):
    return _stateless(lambda tree: tree)

  def clip_tree(tree):
    norm = global_norm(tree)
    if _checks.is_concrete(global_clipnorm):
      c = float(global_clipnorm)  # 1 / c in double, as Keras computes it.
      scale = c * jnp.minimum(1.0 / norm, 1.0 / c) + (norm - norm)
    else:
      c = jnp.asarray(global_clipnorm, norm.dtype)
      scale = c * jnp.minimum(1.0 / norm, 1.0 / c) + (norm - norm)
      scale = jnp.where(c > 0, scale, 1.0)
    return _floats(lambda g: g * scale.astype(g.dtype))(tree)

  return _stateless(clip_tree)
