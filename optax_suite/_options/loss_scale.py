"""Keras's dynamic loss scaling (``LossScaleOptimizer``) as an optax wrapper."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional
import warnings

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _common
from optax_suite import _optimizer


def all_finite(tree: Any) -> jax.Array:
  """True (a bool array) when every floating-point leaf of ``tree`` is finite.

  Integer, boolean and ``None`` leaves count as finite; an empty tree is
  finite.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> ox.all_finite({'a': jnp.ones(2), 'b': jnp.array([1.0, jnp.inf])})
    Array(False, dtype=bool)
  """
  checks = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(tree)
            if _common.is_trainable(g)]
  if not checks:
    return jnp.asarray(True)
  return jnp.all(jnp.stack(checks))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
  r"""An immutable dynamic loss scale (a pytree), in Keras's convention.

  ``adjust(finite)`` returns the next scale: after a non-finite gradient the
  scale halves and the counter resets; after a finite one the counter grows,
  and the ``period``-th finite step in a row doubles the scale instead:

  .. math::
    (s, c) \mapsto \begin{cases}
      (s / 2, 0) & \text{non-finite} \\
      (2 s, 0) & \text{finite},\ c = \text{period} - 1 \\
      (s, c + 1) & \text{finite, otherwise.} \end{cases}

  Attributes:
    loss_scale: float32 [], the current scale.
    counter: int32 [], finite steps in a row since the last change.
    period: static int, Keras's ``dynamic_growth_steps``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> ls = ox.DynamicLossScale(jnp.float32(8.0), jnp.int32(0), period=2)
    >>> ls.unscale(ls.scale(jnp.float32(3.0)))
    Array(3., dtype=float32)
    >>> ls = ls.adjust(True).adjust(True)
    >>> ls.loss_scale, ls.adjust(False).loss_scale
    (Array(16., dtype=float32), Array(8., dtype=float32))
  """
  loss_scale: chex.Array
  counter: chex.Array
  period: int = dataclasses.field(default=2000, metadata=dict(static=True))

  def scale(self, tree: Any) -> Any:
    """Multiplies every floating leaf by the scale (``jnp`` promotion)."""
    return jax.tree.map(
        lambda x: x * self.loss_scale if _common.is_trainable(x) else x, tree)

  def unscale(self, tree: Any) -> Any:
    """Divides every floating leaf by the scale, in float32 at least.

    A float16 or bfloat16 gradient is returned in float32, as Keras's
    division by its float32 scale variable does, so that small unscaled
    gradients do not underflow.
    """
    def leaf(g):
      if not _common.is_trainable(g):
        return g
      dt = _common.compute_dtype(g.dtype)
      return g.astype(dt) / self.loss_scale.astype(dt)
    return jax.tree.map(leaf, tree)

  def adjust(self, grads_finite: Any) -> "DynamicLossScale":
    """The scale after a step whose gradients were (not) all finite."""
    grow = self.counter == self.period - 1
    finite_scale = jnp.where(grow, self.loss_scale * 2.0, self.loss_scale)
    finite_counter = jnp.where(grow, 0, self.counter + 1)
    return DynamicLossScale(
        jnp.where(grads_finite, finite_scale, self.loss_scale * 0.5).astype(
            jnp.float32),
        jnp.where(grads_finite, finite_counter, 0).astype(jnp.int32),
        self.period)


class LossScaleState(NamedTuple):
  """State of :func:`loss_scale_optimizer`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> opt = ox.loss_scale_optimizer(ox.adam(), initial_scale=1024.0)
    >>> state = opt.init(jnp.zeros(2))
    >>> state.scale, state.step_counter
    (Array(1024., dtype=float32), Array(0, dtype=int32))
  """
  scale: chex.Array  # float32 [], the dynamic loss scale (Keras dynamic_scale).
  step_counter: chex.Array  # int32 [], finite steps in a row since a change.
  inner_state: optax.OptState  # state of the wrapped optimizer.


def _reset_static_scale(inner_state: Any) -> Any:
  """Sets every static ``loss_scale_factor`` inside ``inner_state`` to 1."""
  is_node = lambda x: isinstance(x, _optimizer.KerasOptimizerState)
  return jax.tree.map(
      lambda s: s._replace(loss_scale_factor=jnp.ones([], jnp.float32))
      if is_node(s) else s, inner_state, is_leaf=is_node)


def _skip_update(shape: Any) -> Any:
  # -0.0 is the exact identity of IEEE addition (-0.0 + x == x bitwise, even
  # for x = -0.0), so `apply_updates` leaves skipped parameters bitwise as
  # they were; +0.0 would turn a -0.0 parameter into +0.0.
  fill = lambda s: jnp.full(
      s.shape, -0.0 if jnp.issubdtype(s.dtype, jnp.floating) else 0, s.dtype)
  return jax.tree.map(fill, shape)


def loss_scale_optimizer(
    inner: optax.GradientTransformation,
    initial_scale: float = 2.0**15,
    dynamic_growth_steps: int = 2000,
    name: Optional[str] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Keras's ``LossScaleOptimizer``: dynamic loss scaling around ``inner``.

  The gradients ``update`` receives are those of the scaled loss (see
  :func:`scale_loss`). With :math:`s` the current scale:

  * if every gradient is finite, ``inner`` runs on :math:`g / s` (computed
    in float32 at least) and the scale is adjusted as in
    :class:`DynamicLossScale`: the ``dynamic_growth_steps``-th finite step in
    a row doubles it, after the gradients were unscaled;
  * otherwise the step is skipped: the updates are zero, ``inner``'s state
    (slots, step counts, accumulator, EMA, schedule position) is returned
    untouched, and the scale halves.

  The branch is a ``jax.lax.cond``, so it works under ``jax.jit``. As Keras
  does, the inner optimizer's own static ``loss_scale_factor`` is switched
  off (set to 1 in its state), with a warning.

  Args:
    inner: the optimizer to wrap, e.g. :func:`optax_suite.adam`.
    initial_scale: the first loss scale, a finite number > 0.
    dynamic_growth_steps: finite steps in a row before the scale doubles, an
      integer >= 1.
    name: kept in the config (as Keras's); no effect on the numbers.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with :class:`LossScaleState`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.loss_scale_optimizer(ox.adam(0.1), initial_scale=4.0)
    >>> params = jnp.array([1.0])
    >>> state = opt.init(params)
    >>> grads = jax.grad(lambda p: ox.scale_loss(jnp.sum(p ** 2), state))(
    ...     params)
    >>> updates, state = opt.update(grads, state, params)
    >>> optax.apply_updates(params, updates), state.scale
    (Array([0.9000008], dtype=float32), Array(4., dtype=float32))
    >>> updates, state = opt.update(jnp.array([jnp.nan]), state, params)
    >>> updates, state.scale
    (Array([-0.], dtype=float32), Array(2., dtype=float32))
  """
  _common.check_number("initial_scale", initial_scale)
  if not (math.isfinite(float(initial_scale)) and float(initial_scale) > 0):
    raise ValueError("`initial_scale` must be a finite number > 0. "
                     f"Received: initial_scale={initial_scale!r}")
  _common.check_int_at_least("dynamic_growth_steps", dynamic_growth_steps, 1)
  config = getattr(inner, "config", None)
  warned = False
  if isinstance(config, dict) and config.get("loss_scale_factor") is not None:
    warnings.warn(
        "The inner optimizer's `loss_scale_factor="
        f"{config['loss_scale_factor']!r}` is ignored under "
        "`loss_scale_optimizer`, which scales the loss dynamically (Keras "
        "sets it to None).", UserWarning, stacklevel=2)
    warned = True
  period = int(dynamic_growth_steps)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    inner_state = inner.init(params)
    if not warned:
      for node in jax.tree.leaves(
          inner_state,
          is_leaf=lambda x: isinstance(x, _optimizer.KerasOptimizerState)):
        factor = getattr(node, "loss_scale_factor", None)
        if isinstance(node, _optimizer.KerasOptimizerState) and (
            _common.is_concrete(factor) and float(factor) != 1.0):
          warnings.warn(
              f"An inner `loss_scale_factor={float(factor)!r}` is ignored "
              "under `loss_scale_optimizer`.", UserWarning, stacklevel=2)
    return LossScaleState(
        scale=jnp.asarray(initial_scale, jnp.float32),
        step_counter=jnp.zeros([], jnp.int32),
        inner_state=_reset_static_scale(inner_state))

  def update_fn(updates, state, params=None, **extra_args):
    loss_scale = DynamicLossScale(state.scale, state.step_counter, period)
    finite = all_finite(updates)

    def apply(operands):
      grads, inner_state, params = operands
      return inner.update(
          loss_scale.unscale(grads), inner_state, params, **extra_args)

    operands = (updates, state.inner_state, params)
    out_shape = jax.eval_shape(apply, operands)[0]
    skip = lambda operands: (_skip_update(out_shape), operands[1])
    new_updates, inner_state = jax.lax.cond(finite, apply, skip, operands)
    loss_scale = loss_scale.adjust(finite)
    return new_updates, LossScaleState(
        loss_scale.loss_scale, loss_scale.counter, inner_state)

  opt = _optimizer.KerasOptimizer(init_fn, update_fn)  # For get_config.
  opt.config = dict(inner=inner, initial_scale=initial_scale,
                    dynamic_growth_steps=dynamic_growth_steps, name=name)
  opt.factory = loss_scale_optimizer
  return opt


def scale_loss(loss: Any, state: Any) -> jax.Array:
  """Multiplies ``loss`` by the loss scale that ``state`` holds.

  The scale is the dynamic one of a :func:`loss_scale_optimizer` state, else
  the static ``loss_scale_factor`` of a package optimizer's state, else 1.
  The product follows ``jnp`` promotion with the float32 scale, as Keras's
  ``optimizer.scale_loss`` does.

  Args:
    loss: a scalar (or any array).
    state: the optimizer state (of any optimizer or chain of this package).

  Returns:
    ``loss * scale``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> params = jnp.zeros(2)
    >>> ox.scale_loss(3.0, ox.adam(loss_scale_factor=8.0).init(params))
    Array(24., dtype=float32)
    >>> ox.scale_loss(3.0, ox.adam().init(params))
    Array(3., dtype=float32)
  """
  for cls, field in ((LossScaleState, "scale"),
                     (_optimizer.KerasOptimizerState, "loss_scale_factor")):
    found = _common.find_nodes(state, cls)
    if found:
      return jnp.asarray(loss) * getattr(found[0], field)
  return jnp.asarray(loss) * jnp.ones([], jnp.float32)
