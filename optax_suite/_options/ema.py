"""Keras's parameter EMA with periodic overwrite, as an optax transformation."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _common


class EmaState(NamedTuple):
  """State of :func:`ema`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> ox.ema(0.9).init(jnp.array([1.0, 2.0]))
    EmaState(count=Array(0, dtype=int32), ema=Array([1., 2.], dtype=float32))
  """
  count: chex.Array  # int32 [], calls so far (Keras `_iterations`).
  ema: optax.Params  # like params (param dtype), the moving average.


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
  on every call, as in Keras. A non-finite average never leaks into
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
  _common.check_unit_interval("ema_momentum", ema_momentum, closed_right=True)
  if ema_overwrite_frequency is not None:
    _common.check_int_at_least(
        "ema_overwrite_frequency", ema_overwrite_frequency, 1)
  if gradient_accumulation_steps is not None:
    _common.check_int_at_least(
        "gradient_accumulation_steps", gradient_accumulation_steps, 1)
  steps = 1 if gradient_accumulation_steps is None else (
      gradient_accumulation_steps)

  def init_fn(params):
    average = _common.tree_map(_common.copy_of, params)
    return EmaState(jnp.zeros([], jnp.int32), average)

  def update_fn(updates, state, params=None):
    _common.check_params(params, "EMA (`use_ema=True`)")
    iterations = state.count // steps
    momentum = jnp.where(iterations != 0, ema_momentum, 0.0)
    overwrite = None
    if ema_overwrite_frequency is not None:
      overwrite = (iterations + 1) % ema_overwrite_frequency == 0

    def leaf(avg, p, u):
      if avg is None:
        return u, None
      dt = _common.compute_dtype(avg.dtype)
      mom = momentum.astype(dt)
      new_p = (p + u).astype(p.dtype).astype(dt)
      avg = (mom * avg.astype(dt) + (1 - mom) * new_p).astype(avg.dtype)
      if overwrite is not None:
        u = jnp.where(overwrite, (avg - p).astype(u.dtype), u)
      return u, avg

    updates, average = _common.tree_map_n(leaf, 2, state.ema, params, updates)
    return updates, EmaState(optax.safe_increment(state.count), average)

  return optax.GradientTransformation(init_fn, update_fn)


def finalize_variable_values(params: optax.Params, state: Any) -> optax.Params:
  """Returns the parameters to keep at the end of training.

  The counterpart of Keras's ``optimizer.finalize_variable_values``: where
  ``state`` (of any optimizer or chain from this package) holds a parameter
  EMA, the averages replace the trainable leaves; otherwise ``params`` come
  back unchanged. Integer leaves are always kept.

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
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> opt = ox.adam(use_ema=True)
    >>> params = {'w': jnp.ones(3)}
    >>> ox.finalize_variable_values(params, opt.init(params))['w']
    Array([1., 1., 1.], dtype=float32)
  """
  found = _common.find_nodes(state, EmaState)
  if not found:
    return params
  if len(found) > 1:
    raise ValueError(
        f"`state` holds {len(found)} parameter EMAs; pass the state of one "
        "optimizer.")
  average = found[0].ema
  return _common.tree_map(
      lambda avg, p: p if avg is None else avg.astype(p.dtype), average, params)
