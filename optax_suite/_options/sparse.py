"""Row-sparse gradients (``BCOO``) and tf.keras's lazy row updates.

A gradient leaf may be a ``jax.experimental.sparse.BCOO`` with
``n_batch=0, n_sparse=1``: indices ``[nnz, 1]`` naming rows (along axis 0)
of a parameter of rank 2 or more, data ``[nnz, *shape[1:]]`` (so
``n_dense = ndim - 1``), rows possibly repeated (JAX's ``IndexedSlices``).
By default it is summed into the dense gradient, which is what Keras 3
does. :func:`lazy_rows` instead runs a transformation on the
touched rows only: it gathers those rows of the parameter and of every slot
laid out like the parameter, runs the transformation's own ``update`` on the
gathered rows (as on a variable made of just those rows), scatters the new
slot rows back and returns a row-sparse update.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


def is_row_sparse(x: Any) -> bool:
  """Whether ``x`` is a ``BCOO`` (a row-sparse gradient or update)."""
  return isinstance(x, jsparse.BCOO)


def _leaf(x: Any) -> bool:
  return x is None or is_row_sparse(x)


def has_row_sparse(tree: Any) -> bool:
  return any(is_row_sparse(x) for x in jax.tree.leaves(tree, is_leaf=_leaf))


def check_row_sparse(tree: Any, params: Any = None) -> None:
  """Raises a ``ValueError`` naming the leaf of any malformed ``BCOO``.

  A row-sparse leaf must have ``n_batch=0, n_sparse=1`` and ``n_dense =
  ndim - 1 >= 1`` (indices ``[nnz, 1]``, data ``[nnz, *shape[1:]]``: whole
  rows along axis 0; an element-sparse ``BCOO``, indices over more axes, is
  refused), the shape of its parameter, and, when
  its indices are concrete (outside ``jax.jit``), rows in ``[0, rows)``.
  Under ``jax.jit`` the indices cannot be checked: a row out of range is
  dropped (neither summed nor written), as JAX's scatter does.
  """
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_leaf)[0]
  by_path = {}
  if params is not None:
    by_path = {jax.tree_util.keystr(k): p for k, p in
               jax.tree_util.tree_flatten_with_path(params, is_leaf=_leaf)[0]}
  for path, g in flat:
    if not is_row_sparse(g):
      continue
    name = jax.tree_util.keystr(path) or "<root>"
    if g.n_batch != 0 or g.n_sparse != 1 or g.n_dense < 1:
      raise ValueError(
          f"Row-sparse gradient at {name}: a BCOO gradient must be sparse "
          "in whole rows along axis 0, n_batch=0, n_sparse=1, "
          "n_dense=ndim-1 >= 1 (indices [nnz, 1], data [nnz, *shape[1:]]). "
          f"Received: n_batch={g.n_batch}, n_sparse={g.n_sparse}, "
          f"n_dense={g.n_dense}, shape={g.shape}")
    p = by_path.get(jax.tree_util.keystr(path))
    if p is not None and tuple(jnp.shape(p)) != tuple(g.shape):
      raise ValueError(
          f"Row-sparse gradient at {name}: its shape {tuple(g.shape)} is not "
          f"the parameter's shape {tuple(jnp.shape(p))}")
    if _checks.is_concrete(g.indices) and g.indices.size:
      lo, hi = int(jnp.min(g.indices)), int(jnp.max(g.indices))
      if lo < 0 or hi >= g.shape[0]:
        raise ValueError(
            f"Row-sparse gradient at {name}: row indices must be in "
            f"[0, {g.shape[0]}). Received indices from {lo} to {hi}")


def row_ids(g) -> jax.Array:
  """The rows of ``g``, any out-of-range row mapped to ``rows`` (dropped)."""
  ids = g.indices[:, 0]
  rows = g.shape[0]
  return jnp.where((ids < 0) | (ids >= rows), rows, ids).astype(jnp.int32)


def densify(tree: Any) -> Any:
  """Every ``BCOO`` leaf as its dense sum (repeated rows added up)."""
  def leaf(g):
    if not is_row_sparse(g):
      return g
    return jnp.zeros(g.shape, g.dtype).at[row_ids(g)].add(
        g.data, mode="drop")
  return jax.tree.map(leaf, tree, is_leaf=_leaf)


class Rows(NamedTuple):
  """Unique touched rows of a row-sparse leaf (padded with ``rows``)."""
  ids: jax.Array  # int32 [nnz], sorted; padding (and bad rows) = n_rows.
  data: jax.Array  # [nnz, *row], the summed gradient rows (0 on padding).


def _per_row(mask: jax.Array, ndim: int) -> jax.Array:
  """A ``[nnz]`` mask shaped to broadcast over ``[nnz, *row]`` data."""
  return mask[(slice(None),) + (None,) * (ndim - 1)]  # [:, None] for 2-D.


def unique_rows(g) -> Rows:
  """Sums the repeated rows of a ``BCOO`` gradient: sorted unique ids.

  The result has the static size ``nnz`` (so it works under ``jax.jit``);
  unused places hold the out-of-range id ``rows`` and zero data. The ids
  are sorted alone and each id finds its place among the unique ones by
  binary search: on CPU this is a third of the time of ``jnp.unique``'s
  inverse, which sorts (id, position) pairs.
  """
  ids = row_ids(g)
  nnz, n = ids.shape[0], g.shape[0]
  if nnz == 0:
    return Rows(ids, g.data)
  ordered = jnp.sort(ids)
  first = jnp.concatenate([jnp.ones([1], jnp.bool_),
                           ordered[1:] != ordered[:-1]])
  place = jnp.where(first, jnp.cumsum(first) - 1, nnz)
  uniq = jnp.full([nnz], n, jnp.int32).at[place].set(
      ordered, mode="drop", unique_indices=True)
  inverse = jnp.searchsorted(uniq, ids)
  data = jax.ops.segment_sum(g.data, inverse, num_segments=nnz)
  data = jnp.where(_per_row(uniq < n, data.ndim), data, 0).astype(g.dtype)
  return Rows(uniq, data)


def to_bcoo(rows: Rows, shape) -> jsparse.BCOO:
  """A row-sparse update: sorted unique rows, padding out of range."""
  return jsparse.BCOO((rows.data, rows.ids[:, None]), shape=tuple(shape),
                      indices_sorted=True)


def gather(x: jax.Array, ids: jax.Array) -> jax.Array:
  """Rows ``ids`` of ``x``; an out-of-range id gives a zero row."""
  return x.at[ids].get(mode="fill", fill_value=0, indices_are_sorted=True)


def scatter(x: jax.Array, ids: jax.Array, rows: jax.Array) -> jax.Array:
  """``x`` with rows ``ids`` replaced; out-of-range ids are dropped."""
  return x.at[ids].set(rows.astype(x.dtype), mode="drop",
                       indices_are_sorted=True)


def slot_roles(state: Any, params_like: Any, shapes: dict) -> Any:
  """A tree like ``state``: at each slot of a row-sparse leaf its position.

  A slot is a leaf of a subtree of ``state`` that has the structure of the
  parameters (``None`` standing for an absent slot), at the position of a
  row-sparse leaf and of that leaf's shape. Every other leaf gets -1. This
  finds the slots of any per-leaf transformation (the rule's moments, the
  accumulator, the EMA) without knowing its state type. (optax's
  ``tree_map_params`` cannot: it calls ``init`` on one placeholder for the
  whole tree, and this package's ``init`` gives a non-array leaf no slot.)
  """
  pstruct = jax.tree.structure(params_like, is_leaf=_leaf)

  def walk(node):
    if node is None:
      return None
    if jax.tree.structure(node, is_leaf=_leaf) == pstruct:
      leaves = jax.tree.leaves(node, is_leaf=_leaf)
      roles = [
          None if x is None else
          (i if i in shapes and tuple(jnp.shape(x)) == shapes[i] else -1)
          for i, x in enumerate(leaves)]
      return jax.tree.unflatten(pstruct, roles)
    children, treedef = jax.tree.flatten(node, is_leaf=lambda x: x is not node)
    if treedef.num_leaves == 1 and treedef.num_nodes == 1:
      return -1  # An array leaf that is not a slot.
    return jax.tree.unflatten(treedef, [walk(c) for c in children])

  return walk(state)


def _map_roles(fn, roles, *trees):
  return jax.tree.map(lambda r, *xs: fn(r, *xs), roles, *trees)


def lazy_rows(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  r"""Runs ``inner`` on the touched rows of row-sparse gradients only.

  For each ``BCOO`` gradient leaf (repeated rows summed first), the touched
  rows :math:`R` of the parameter and of every slot laid out like it are
  gathered, ``inner.update`` runs on those rows as if they were the whole
  variable, and the new slot rows are written back:

  .. math::
    (u_R, s'_R) = \text{inner}(g_R, s_R, w_R), \qquad
    s'_{\bar R} = s_{\bar R}

  so every other row of every slot keeps its bits, and step counts (bias
  correction, schedules) are global. The update of such a leaf is a
  row-sparse ``BCOO`` (sorted unique rows): apply it with
  :func:`optax_suite.apply_updates` (a scatter-add of the rows) or
  ``optax.apply_updates`` (which densifies it). Dense leaves in the same tree
  go through ``inner`` as always. Only per-element (row-separable) rules give
  tf.keras's sparse semantics this way: a rule that mixes rows (a per-leaf
  trust ratio, factored moments) would see only the gathered rows.

  Args:
    inner: a per-leaf transformation, e.g. ``scale_by_adamax()``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with ``inner``'s state.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> from jax.experimental import sparse
    >>> tx = ox.lazy_rows(optax.chain(ox.scale_by_adamax(), optax.scale(-0.1)))
    >>> table = jnp.ones((4, 2))
    >>> g = sparse.BCOO((jnp.ones((3, 2)), jnp.array([[2], [0], [2]])),
    ...                 shape=(4, 2))
    >>> updates, state = tx.update(g, tx.init(table), table)
    >>> ox.apply_updates(table, updates)[:, 0]  # rows 1 and 3 untouched
    Array([0.90000004, 1.        , 0.90000004, 1.        ], dtype=float32)
    >>> state[0].m[:, 0]  # and so are their moments
    Array([0.1, 0. , 0.2, 0. ], dtype=float32)

    A table of rank 3 or more takes a ``BCOO`` of whole rows along axis 0
    too (indices ``[nnz, 1]``, data ``[nnz, 2, 3]`` here: ``n_dense=2``),
    in an optimizer's default mode (Keras's numbers: the dense sum) as with
    ``lazy_rows=True``; a ``BCOO`` sparse over more axes is refused:

    >>> cube = jnp.ones((4, 2, 3))
    >>> g3 = sparse.BCOO((jnp.ones((3, 2, 3)), jnp.array([[3], [1], [3]])),
    ...                  shape=(4, 2, 3))
    >>> for opt in (ox.adam(0.1), ox.adam(0.1, lazy_rows=True)):
    ...   updates, state = opt.update(g3, opt.init(cube), cube)
    ...   print(ox.apply_updates(cube, updates)[:, 0, 0])
    [1.        0.900001  1.        0.9000008]
    [1.        0.900001  1.        0.9000008]
    >>> try:
    ...   opt.update(sparse.BCOO.fromdense(cube, n_dense=1), state, cube)
    ... except ValueError as e:
    ...   print(str(e)[:70])
    Row-sparse gradient at <root>: a BCOO gradient must be sparse in whole
  """
  return _lazy_rows(inner, check=True)


def lazy_rows_of_checked(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  """:func:`lazy_rows` for updates already checked by the caller.

  The optimizers check the user's gradients once (``check_row_sparse``) and
  then chain several row-wise stages: a stage after the first receives a
  ``BCOO`` of the package's own making, whose padding rows (id ``rows``,
  out of range on purpose) must be dropped as they are under ``jax.jit``,
  not refused, so that eager and jitted steps agree.
  """
  return _lazy_rows(inner, check=False)


def _lazy_rows(inner, check):
  inner = optax.with_extra_args_support(inner)

  def update_fn(updates, state, params=None, **extra_args):
    if not has_row_sparse(updates):
      return inner.update(updates, state, params, **extra_args)
    if check:
      check_row_sparse(updates, params)
    leaves, treedef = jax.tree.flatten(updates, is_leaf=_leaf)
    rows = {i: unique_rows(g) for i, g in enumerate(leaves)
            if is_row_sparse(g)}
    shapes = {i: tuple(leaves[i].shape) for i in rows}
    small = [rows[i].data if i in rows else g for i, g in enumerate(leaves)]
    small_updates = jax.tree.unflatten(treedef, small)
    small_params = params
    if params is not None:
      p_leaves = treedef.flatten_up_to(params)
      small_params = jax.tree.unflatten(treedef, [
          gather(p, rows[i].ids) if i in rows else p
          for i, p in enumerate(p_leaves)])
    roles = slot_roles(state, updates, shapes)
    small_state = _map_roles(
        lambda r, x: x if r < 0 else gather(x, rows[r].ids), roles, state)
    out, new_small = inner.update(
        small_updates, small_state, small_params, **extra_args)
    new_state = _map_roles(
        lambda r, x, y: y if r < 0 else scatter(x, rows[r].ids, y),
        roles, state, new_small)
    out_leaves = treedef.flatten_up_to(out)
    for i, r in rows.items():
      data = jnp.where(_per_row(r.ids < shapes[i][0], len(shapes[i])),
                       out_leaves[i], 0)
      out_leaves[i] = to_bcoo(Rows(r.ids, data.astype(out_leaves[i].dtype)),
                              shapes[i])
    return jax.tree.unflatten(treedef, out_leaves), new_state

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


class RowAccumulationState(NamedTuple):
  """State of :func:`accumulate_rows`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = ox.accumulate_rows(optax.sgd(1.0), 2)
    >>> state = tx.init({'table': jnp.zeros((3, 2)), 'b': jnp.zeros(2)})
    >>> state.touched
    {'b': None, 'table': Array([False, False, False], dtype=bool)}
  """
  count: chex.Array  # int32 [], calls so far (Keras `_iterations`).
  accumulated: optax.Updates  # like params (acc dtype), sum since last update.
  touched: Any  # bool [rows] per float leaf of rank >= 2 (else None).
  inner_state: optax.OptState  # state of the wrapped transformation.


def _touched_slot(p):
  if not _trees.is_trainable(p) or jnp.ndim(p) < 2:
    return None
  first = (slice(None),) + (0,) * (jnp.ndim(p) - 1)
  return _trees.zeros_like(p[first]) != 0  # Keeps the rows' sharding.


def accumulate_rows(
    inner: optax.GradientTransformation,
    gradient_accumulation_steps: int,
) -> optax.GradientTransformationExtraArgs:
  r"""Gradient accumulation that keeps row-sparse gradients row-sparse.

  Dense leaves accumulate as in :func:`accumulate_gradients`. A row-sparse
  (``BCOO``) leaf is scatter-added into its dense accumulator, and the rows
  it touched are marked. On the ``k``-th call ``inner`` receives, as a
  row-sparse gradient, the mean :math:`\sum g / k` of every row touched in
  the cycle (and only of those), and those rows of the accumulator and of
  the marks are reset. On the other calls the update is ``-0.0`` on this
  call's rows (so a downstream row-wise EMA still sees them) and ``inner``
  does not run. A micro-step costs in proportion to the touched rows; the
  update call also scans the ``[rows]`` boolean marks to list the rows
  touched in the cycle. It lists at most ``k * nnz`` rows, ``nnz`` the
  number of ids of the update call's gradient: give a table gradients of the
  same ``nnz`` throughout a cycle (as a jitted step with a fixed batch does).

  Args:
    inner: the transformation to run on the mean gradient (row-wise, e.g.
      wrapped in :func:`lazy_rows`).
    gradient_accumulation_steps: ``k``, an integer >= 2.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> from jax.experimental import sparse
    >>> tx = ox.accumulate_rows(ox.lazy_rows(optax.sgd(1.0)), 2)
    >>> table = jnp.zeros((3, 1))
    >>> state = tx.init(table)
    >>> row = lambda i: sparse.BCOO((jnp.ones((1, 1)), jnp.array([[i]])),
    ...                             shape=(3, 1))
    >>> u1, state = tx.update(row(0), state)
    >>> u2, state = tx.update(row(2), state)
    >>> ox.apply_updates(table, u2)[:, 0]  # both rows, the mean gradient
    Array([-0.5,  0. , -0.5], dtype=float32)
  """
  _checks.check_int_at_least(
      "gradient_accumulation_steps", gradient_accumulation_steps, 2)
  inner = optax.with_extra_args_support(inner)
  k = gradient_accumulation_steps

  def init_fn(params):
    return RowAccumulationState(
        jnp.zeros([], jnp.int32), _trees.slots(params),
        _trees.tree_map(_touched_slot, params), inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    is_update = (state.count + 1) % k == 0
    leaves, treedef = jax.tree.flatten(updates, is_leaf=_leaf)
    acc = treedef.flatten_up_to(state.accumulated)
    marks = treedef.flatten_up_to(state.touched)
    sizes, rows = {}, {}
    for i, g in enumerate(leaves):
      if is_row_sparse(g):
        if marks[i] is None:
          path = jax.tree_util.tree_flatten_with_path(
              updates, is_leaf=_leaf)[0][i][0]
          raise ValueError(
              "accumulate_rows: the row-sparse gradient at "
              f"{jax.tree_util.keystr(path) or '<root>'} needs a float "
              "parameter of rank >= 2 (the rows it marks). Received a "
              f"BCOO of shape {g.shape}, dtype {g.dtype}.")
        rows[i] = unique_rows(g)
        nnz, n = g.indices.shape[0], g.shape[0]
        sizes[i] = max(nnz, min(n, k * nnz))
        # In place, before the `cond`: a micro-step costs O(touched rows).
        acc[i] = acc[i].at[rows[i].ids].add(
            rows[i].data.astype(acc[i].dtype), mode="drop")
        marks[i] = marks[i].at[rows[i].ids].set(True, mode="drop")

    def update_branch(operands):
      grads, acc, marks, inner_state, params = operands
      mean, unions = [], {}
      for i, (a, g) in enumerate(zip(acc, grads)):
        if i in rows:
          n = g.shape[0]
          union = jnp.nonzero(marks[i], size=sizes[i], fill_value=n)[0]
          unions[i] = union.astype(jnp.int32)
          mean.append(to_bcoo(Rows(unions[i], gather(a, unions[i]) / k),
                              g.shape))
        else:
          mean.append(g if a is None else (g + a) / k)
      out, inner_state = inner.update(
          jax.tree.unflatten(treedef, mean), inner_state, params,
          **extra_args)
      return out, inner_state, unions, jnp.ones([], jnp.bool_)

    def micro_branch(operands):
      grads, acc, marks, inner_state, params = operands
      zero, unions = [], {}
      for i, g in enumerate(grads):
        if i in rows:
          n, pad = g.shape[0], sizes[i] - rows[i].ids.shape[0]
          ids = jnp.concatenate([rows[i].ids, jnp.full([pad], n, jnp.int32)])
          unions[i] = jnp.full([sizes[i]], n, jnp.int32)
          zero.append(to_bcoo(Rows(ids, jnp.full(
              (sizes[i],) + g.shape[1:], -0.0, g.dtype)), g.shape))
        else:
          zero.append(_numerics.zero_update(g))
      return (jax.tree.unflatten(treedef, zero), inner_state, unions,
              jnp.zeros([], jnp.bool_))

    # `update` and `micro` must give the same update structure: the inner
    # transformation's output is what `eval_shape` of the update branch says.
    out, inner_state, unions, reset = jax.lax.cond(
        is_update, update_branch, micro_branch,
        (leaves, acc, marks, state.inner_state, params))
    for i, (a, g) in enumerate(zip(acc, leaves)):
      if i in rows:
        acc[i] = scatter(a, unions[i], jnp.zeros(
            (sizes[i],) + a.shape[1:], a.dtype))
        marks[i] = marks[i].at[unions[i]].set(False, mode="drop")
      elif a is not None:
        acc[i] = jnp.where(reset, jnp.zeros_like(a),
                           (a + g).astype(a.dtype))
    return out, RowAccumulationState(
        optax.safe_increment(state.count), jax.tree.unflatten(treedef, acc),
        jax.tree.unflatten(treedef, marks), inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
