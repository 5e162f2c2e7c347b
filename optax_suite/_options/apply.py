"""Applying updates, dense and row-sparse, and the fused optimizer step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_suite._options import ema as _ema
from optax_suite._options import sparse as _sparse


def _add_rows(p, u):
  ids = _sparse.row_ids(u)  # Out-of-range rows (padding) are dropped.
  if jnp.result_type(p.dtype, u.data.dtype) == p.dtype:
    # p[i] + u in p's dtype, as `optax.apply_updates` computes it.
    return p.at[ids].add(u.data.astype(p.dtype), mode="drop")
  rows = _sparse.unique_rows(u)  # Mixed dtypes: add, then round once.
  new = (_sparse.gather(p, rows.ids) + rows.data).astype(p.dtype)
  return _sparse.scatter(p, rows.ids, new)


def apply_updates(params: optax.Params, updates: optax.Updates,
                  state: Any = None) -> Any:
  r"""``optax.apply_updates``, for row-sparse updates and exact EMA overwrites.

  A dense update leaf is added as ``optax.apply_updates`` adds it. A
  row-sparse one (a ``BCOO``, as an optimizer built with ``lazy_rows=True``
  returns for a row-sparse gradient) is scatter-added into its rows: under
  ``jax.jit`` with ``params`` donated the table is written in place and
  every other row keeps its bits. ``optax.apply_updates`` also takes a
  ``BCOO`` update (through ``BCOO``'s own addition) and gives the same
  numbers, but eagerly it densifies the update (reading and writing the
  whole table, and making an untouched ``-0.0`` a ``+0.0``).

  Given ``state`` (the state ``update`` just returned), the leaves that an
  EMA in it overwrote on that call are the average bit for bit. The
  overwrite update :math:`\bar w - w` already lands exactly through
  ``optax.apply_updates`` whenever an update of the gradients' dtype can,
  which is always when :math:`w` and :math:`\bar w` lie within a factor 2 of
  each other; ``state`` covers the rest (a sign change, or a ratio far from
  1: ``w = 1``, :math:`\bar w = 10^{-8}` has no float32 ``u`` with ``w + u``
  equal to it). :func:`optax_suite.apply` passes it.

  Args:
    params: the parameters ``update`` was given.
    updates: the updates it returned; leaves may be ``BCOO``.
    state: the state it returned, or None.

  Returns:
    The new parameters, like ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> from jax.experimental import sparse
    >>> u = sparse.BCOO((jnp.ones((2, 2)), jnp.array([[0], [2]])),
    ...                 shape=(3, 2))
    >>> ox.apply_updates({'t': jnp.zeros((3, 2))}, {'t': u})['t'][:, 0]
    Array([1., 0., 1.], dtype=float32)
    >>> tx = optax.chain(optax.sgd(1.0), ox.ema(0.75, 2))  # overwrite at 2
    >>> params = jnp.array([1.3])
    >>> state = tx.init(params)
    >>> for g in (0.0, 6.0):  # the second step crosses zero
    ...   updates, state = tx.update(jnp.array([g]), state, params)
    ...   if g == 0.0:
    ...     params = optax.apply_updates(params, updates)
    >>> state[1].ema, optax.apply_updates(params, updates)
    (Array([-0.19999999], dtype=float32), Array([-0.20000005], dtype=float32))
    >>> ox.apply_updates(params, updates, state)
    Array([-0.19999999], dtype=float32)
  """
  def leaf(path, p, u):
    if p is None:
      return None
    if _sparse.is_row_sparse(u):
      if tuple(u.shape) != tuple(jnp.shape(p)):
        raise ValueError(
            f"The row-sparse update at `updates{jax.tree_util.keystr(path)}` "
            f"has shape {tuple(u.shape)} where its parameter has shape "
            f"{tuple(jnp.shape(p))}.")
      return _add_rows(p, u)
    return jnp.asarray(p + u).astype(jnp.asarray(p).dtype)
  new_params = jax.tree_util.tree_map_with_path(
      leaf, params, updates,
      is_leaf=lambda x: x is None or _sparse.is_row_sparse(x))
  return _ema.land_on_overwritten_averages(params, new_params, state)


_LEGACY = object()  # `params` not given: the (params, state) pair form.


def apply(opt: optax.GradientTransformation, grads: optax.Updates,
          params_and_state: Any, params: Any = _LEGACY) -> tuple:
  """One optimizer step: ``params, state = apply(opt, grads, (params, state))``.

  The numbers are those of ``opt.update`` followed by :func:`apply_updates`
  (bit for bit, except that with dense gradient accumulation XLA may round
  a fused update step's parameters 1 ulp differently, as measured for
  rmsprop); what changes is the work. For this package's optimizers:

  * on a gradient-accumulation micro-step only the accumulator (and the
    EMA, when on) is written: no zero update tree is made and the parameter
    buffers are returned as they are (unless an EMA overwrite falls on it);
  * with ``lazy_rows=True`` a row-sparse gradient reads and writes only its
    rows of the table and of each slot.

  The step takes and returns one ``(params, state)`` pair, so that jitting
  it with the pair donated updates every buffer in place:
  ``jax.jit(functools.partial(ox.apply, opt), donate_argnums=1)``. (JAX
  pairs each output with the first donated input of its shape and dtype;
  inputs in another order than the outputs pair parameters with slot
  buffers, and XLA copies them.) The earlier form ``apply(opt, grads,
  state, params)`` still works and returns ``(params, state)``; jit it with
  the arguments taken in that order (``step(params, state, grads)``). It
  will be removed in a later release. Any other ``GradientTransformation``
  runs as ``update`` then :func:`apply_updates`.

  Args:
    opt: the optimizer (e.g. ``ox.adam(...)``).
    grads: the gradients, like ``params`` (leaves may be row-sparse).
    params_and_state: ``(params, state)``: the parameters and ``opt``'s state.
      (In the earlier form, ``opt``'s state.)
    params: the earlier form's parameters; leave it out.

  Returns:
    ``(new_params, new_state)``.

  Example:
    >>> import functools, jax, jax.numpy as jnp, optax_suite as ox
    >>> opt = ox.adam(learning_rate=0.1, gradient_accumulation_steps=2)
    >>> step = jax.jit(functools.partial(ox.apply, opt), donate_argnums=1)
    >>> params = {'w': jnp.array([1.0, -1.0])}
    >>> state = opt.init(params)
    >>> for g in ([1.0, 0.0], [3.0, 0.0]):
    ...   params, state = step({'w': jnp.array(g)}, (params, state))
    >>> params['w']
    Array([ 0.9000008, -1.       ], dtype=float32)
  """
  if params is _LEGACY:
    if not (isinstance(params_and_state, tuple)
            and len(params_and_state) == 2):
      raise ValueError(
          "`params_and_state` must be the pair (params, state). Received: "
          f"params_and_state of type {type(params_and_state).__name__}")
    params, state = params_and_state
  else:
    state = params_and_state
  if params is None:  # A step needs something to step: never count a no-op.
    raise ValueError(
        "`params` must be the parameters to step, not None. Received: "
        "params=None")
  fused = getattr(opt, "fused_step", None)
  if fused is not None:
    return fused(grads, state, params)
  updates, state = opt.update(grads, state, params)
  return apply_updates(params, updates, state), state
