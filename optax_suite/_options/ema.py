"""Keras's parameter EMA with periodic overwrite, as an optax transformation."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


class EmaState(NamedTuple):
  """State of :func:`ema`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> ox.ema(0.9).init(jnp.array([1.0, 2.0]))
    EmaState(count=Array(0, dtype=int32), ema=Array([1., 2.], dtype=float32),
             overwritten=Array(False, dtype=bool))
  """
  count: chex.Array  # int32 [], calls so far (Keras `_iterations`).
  ema: optax.Params  # like params (param dtype), the moving average.
  overwritten: chex.Array  # bool [], the last call overwrote the params.


def ema(
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: Optional[int] = None,
    *,
    gradient_accumulation_steps: Optional[int] = None,
) -> optax.GradientTransformation:
  r"""Keeps Keras's moving average of the parameters, and can swap it in.

  Put it last in a chain: it sees the final updates, forms the new parameters
  :math:`w' = w + u` and, on every call,

  .. math::
    \bar w \leftarrow m \bar w + (1 - m) w', \qquad
    m = \begin{cases} 0 & \text{iterations} = 0 \\
                      \text{ema\_momentum} & \text{otherwise} \end{cases}

  where ``iterations = calls // gradient_accumulation_steps`` counts update
  steps, as Keras's does. With ``ema_overwrite_frequency = f`` the update is
  replaced by :math:`\bar w - w` (so the parameters become the average)
  whenever ``(iterations + 1) % f == 0``; under accumulation that check runs
  on every call, as in Keras. The difference is formed in float32 at least
  and rounded once, so ``optax.apply_updates`` lands on the average bit for
  bit whenever an update of the gradients' dtype can (always when parameter
  and average are within a factor 2 of each other, in every dtype); where
  none can (a sign change or a ratio far from 1, e.g. ``w = 1``,
  :math:`\bar w = 10^{-8}` in float32), :func:`optax_suite.apply_updates`
  with the state lands exactly. A non-finite average never leaks into
  parameters it is not overwriting. Use :func:`finalize_variable_values` to
  read the average at the end.

  Args:
    ema_momentum: in [0, 1].
    ema_overwrite_frequency: integer >= 1, or None for no overwrite.
    gradient_accumulation_steps: the accumulation of the optimizer it follows.

  Returns:
    An ``optax.GradientTransformation`` that needs ``params`` in ``update``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(optax.sgd(0.5), ox.ema(0.5))
    >>> params = jnp.array(4.0)
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(jnp.array(2.0), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params, ox.finalize_variable_values(params, state)
    (Array(2., dtype=float32), Array(2.5, dtype=float32))
  """
  _checks.check_unit_interval("ema_momentum", ema_momentum, closed_right=True)
  if ema_overwrite_frequency is not None:
    _checks.check_int_at_least(
        "ema_overwrite_frequency", ema_overwrite_frequency, 1)
  if gradient_accumulation_steps is not None:
    _checks.check_int_at_least(
        "gradient_accumulation_steps", gradient_accumulation_steps, 1)
  steps = 1 if gradient_accumulation_steps is None else (
      gradient_accumulation_steps)

  def init_fn(params):
    _trees.check_not_complex(params)
    average = _trees.tree_map(_trees.copy_of, params)
    return EmaState(jnp.zeros([], jnp.int32), average,
                    jnp.zeros([], jnp.bool_))

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "EMA (`use_ema=True`)")
    iterations = state.count // steps
    momentum = jnp.where(iterations != 0, ema_momentum, 0.0)
    overwrite = None
    if ema_overwrite_frequency is not None:
      overwrite = (iterations + 1) % ema_overwrite_frequency == 0
    overwritten = jnp.zeros([], jnp.bool_) if overwrite is None else (
        overwrite.astype(jnp.bool_))  # Not weakly typed, as at `init`.

    def leaf(avg, p, u):
      if avg is None:
        return u, None
      dt = _numerics.compute_dtype(avg.dtype)
      mom = momentum.astype(dt)
      new_p = _numerics.rounded_to((p + u).astype(p.dtype).astype(dt), p.dtype)
      avg = (mom * avg.astype(dt) + (1 - mom) * new_p).astype(avg.dtype)
      if overwrite is not None:
        u = jnp.where(overwrite, _numerics.update_to(p, avg, u.dtype), u)
      return u, avg

    updates, average = _trees.tree_map_n(leaf, 2, state.ema, params, updates)
    return updates, EmaState(
        optax.safe_increment(state.count), average, overwritten)

  return optax.GradientTransformation(init_fn, update_fn)


def _averages(params: Any, state: Any) -> tuple[list, list, Any]:
  """Each leaf's average and overwrite flag from every EMA in ``state``.

  Every :class:`EmaState` in ``state`` (one per optimizer; several under
  ``optax.multi_transform``/``optax.partition``, masked ones under
  ``optax.masked``) covers its own leaves; a leaf it does not average holds
  ``None`` or an ``optax.MaskedNode``. Returns the flat lists (in the order
  of ``params``' leaves, ``None`` where no EMA averages the leaf) and the
  tree definition of ``params``.
  """
  # Any: jax's PyTreeDef stub lacks num_leaves and flatten_up_to.
  treedef: Any = jax.tree.structure(params, is_leaf=_trees.is_none)
  averages = [None] * treedef.num_leaves
  flags = [None] * treedef.num_leaves
  for node in _trees.find_nodes(state, EmaState):
    try:
      leaves = treedef.flatten_up_to(node.ema)
    except (ValueError, TypeError) as e:
      raise ValueError(
          "A parameter EMA in `state` does not have the structure of "
          f"`params`.\n  params: {treedef}\n  EMA: "
          f"{jax.tree.structure(node.ema, is_leaf=_trees.is_none)}") from e
    for i, avg in enumerate(leaves):
      if avg is None or isinstance(avg, optax.MaskedNode):
        continue
      if averages[i] is not None:
        path = jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(
            params, is_leaf=_trees.is_none)[0][i][0])
        raise ValueError(
            f"The parameter {path} is averaged by two EMAs in `state`; each "
            "parameter may have one (one `use_ema` optimizer per part).")
      averages[i], flags[i] = avg, node.overwritten
  return averages, flags, treedef


def finalize_variable_values(params: optax.Params, state: Any) -> optax.Params:
  """Returns the parameters to keep at the end of training.

  The counterpart of Keras's ``optimizer.finalize_variable_values``: where
  ``state`` (of any optimizer or chain from this package) holds a parameter
  EMA, the averages replace the trainable leaves; otherwise ``params`` come
  back unchanged. Integer leaves are always kept. Under
  ``optax.multi_transform``, ``optax.partition`` or ``optax.masked`` each
  part's EMA replaces its own leaves; a leaf no EMA averages is kept, and a
  leaf averaged by two EMAs is a ``ValueError``.

  With Flax NNX, pass plain arrays and write the result back::

    final = ox.finalize_variable_values(
        nnx.as_pure(nnx.state(model, nnx.Param)),
        nnx.as_pure(optimizer.opt_state))
    nnx.update(model, final)

  Args:
    params: the current parameters.
    state: the optimizer state.

  Returns:
    A tree like ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.adam(use_ema=True)
    >>> params = {'w': jnp.ones(3)}
    >>> ox.finalize_variable_values(params, opt.init(params))['w']
    Array([1., 1., 1.], dtype=float32)
    >>> both = optax.multi_transform(
    ...     {'a': ox.adam(0.5, use_ema=True),
    ...      'b': ox.adamax(0.5, use_ema=True)}, {'w': 'a', 'v': 'b'})
    >>> params = {'w': jnp.ones(2), 'v': jnp.zeros(1)}
    >>> state = both.init(params)
    >>> updates, state = both.update(params, state, params)
    >>> ox.finalize_variable_values(params, state)
    {'v': Array([0.], dtype=float32),
     'w': Array([0.50000495, 0.50000495], dtype=float32)}
  """
  averages, _, treedef = _averages(params, state)
  if all(avg is None for avg in averages):
    return params
  leaves = treedef.flatten_up_to(params)
  return treedef.unflatten([
      p if avg is None else avg.astype(p.dtype)
      for avg, p in zip(averages, leaves)])


def land_on_overwritten_averages(params: Any, new_params: Any,
                                 state: Any) -> Any:
  """``new_params`` with the leaves an EMA in ``state`` just overwrote set to
  that average exactly (see :func:`optax_suite.apply_updates`)."""
  if state is None:
    return new_params
  averages, flags, treedef = _averages(params, state)
  if all(avg is None for avg in averages):
    return new_params
  leaves = treedef.flatten_up_to(new_params)
  return treedef.unflatten([
      p if avg is None else jnp.where(flag, avg.astype(p.dtype), p)
      for avg, flag, p in zip(averages, flags, leaves)])
