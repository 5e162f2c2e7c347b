"""Keras-style gradient accumulation that does no update work on micro-steps."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


class AccumulationState(NamedTuple):
  """State of :func:`accumulate_gradients`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = ox.accumulate_gradients(optax.sgd(1.0), 2)
    >>> _, state = tx.update(jnp.array([1.0, 2.0]), tx.init(jnp.zeros(2)))
    >>> state.count, state.accumulated
    (Array(1, dtype=int32), Array([1., 2.], dtype=float32))
  """
  count: chex.Array  # int32 [], calls so far (Keras `_iterations`).
  accumulated: optax.Updates  # like params (acc dtype), sum since last update.
  inner_state: optax.OptState  # state of the wrapped transformation.


def accumulate_gradients(
    inner: optax.GradientTransformation,
    gradient_accumulation_steps: int,
    *,
    acc_dtype: Optional[Any] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Runs ``inner`` once every ``gradient_accumulation_steps`` calls.

  On a micro-step (``(count + 1) % k != 0``) the gradient is added to the
  accumulator and the update is zero (``-0.0``, which leaves every bit of
  the parameters as it was); ``inner`` and its state are not touched. On
  the ``k``-th call ``inner`` receives

  .. math:: \bar g = (g + \textstyle\sum_{\text{micro-steps}} g) / k

  and the accumulator is reset. The branch is a ``jax.lax.cond``, so a
  micro-step costs an addition, not an optimizer update (optax's
  ``MultiSteps`` and Keras's JAX backend compute the update every call). The
  step count of ``inner`` counts update steps only, as Keras's
  ``iterations`` does.

  Args:
    inner: the transformation to run on the mean gradient.
    gradient_accumulation_steps: ``k``, an integer >= 2.
    acc_dtype: dtype of the accumulator; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = ox.accumulate_gradients(optax.sgd(1.0), 2)
    >>> state = tx.init(jnp.zeros(1))
    >>> u1, state = tx.update(jnp.array([1.0]), state)
    >>> u2, state = tx.update(jnp.array([3.0]), state)
    >>> u1, u2
    (Array([-0.], dtype=float32), Array([-2.], dtype=float32))
  """
  _checks.check_int_at_least(
      "gradient_accumulation_steps", gradient_accumulation_steps, 2)
  inner = optax.with_extra_args_support(inner)
  k = gradient_accumulation_steps

  def init_fn(params):
    return AccumulationState(
        jnp.zeros([], jnp.int32),
        _trees.slots(params, acc_dtype),
        inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    is_update = (state.count + 1) % k == 0

    def update_branch(operands):
      grads, acc, inner_state, params = operands
      new_updates, inner_state = inner.update(
          mean_gradient(acc, grads, k), inner_state, params, **extra_args)
      return new_updates, inner_state, jnp.ones([], jnp.bool_)

    def micro_branch(operands):
      grads, acc, inner_state, params = operands
      zero = _trees.tree_map(
          lambda a, g: _numerics.identity_update(g), acc, grads)
      return zero, inner_state, jnp.zeros([], jnp.bool_)

    new_updates, inner_state, reset = jax.lax.cond(
        is_update, update_branch, micro_branch,
        (updates, state.accumulated, state.inner_state, params))
    acc = next_accumulator(state.accumulated, updates, reset)
    return new_updates, AccumulationState(
        optax.safe_increment(state.count), acc, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def next_accumulator(accumulated: Any, grads: Any, reset: chex.Array) -> Any:
  """The accumulator after a call: zeros if ``reset``, else ``acc + g``.

  Formed after the ``cond`` that returns ``reset``, in one elementwise pass
  that writes the accumulator in place; returned from the ``cond`` it would
  be copied into its (donated) output buffer on every call. Taking the flag
  from the ``cond`` orders the pass after it, so the old accumulator needs
  no defensive copy either. The fused step (``optax_suite.apply``) uses it
  too.
  """
  def leaf(acc, g):
    if acc is None:
      return None
    return jnp.where(reset, jnp.zeros_like(acc), (acc + g).astype(acc.dtype))
  return _trees.tree_map(leaf, accumulated, grads)


def mean_gradient(accumulated: Any, grads: Any, k: int) -> Any:
  """``(grads + accumulated) / k``, leaf by leaf, as the update call sees it.

  Keras's mean is the output of a ``cond``, so XLA cannot fold its
  ``* (1 / k)`` into the rule's arithmetic (it would, e.g. reassociating
  Nadam's ``c * g`` products, moving the last bit); the barrier keeps it so
  here, and in the fused step, which uses this too.
  """
  mean = _trees.tree_map(
      lambda a, g: g if a is None else (g + a) / k, accumulated, grads)
  return jax.lax.optimization_barrier(mean)
