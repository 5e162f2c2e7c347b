"""Keras's dynamic loss scaling (``LossScaleOptimizer``) as an optax wrapper."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, NamedTuple, Optional
import warnings

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite import _trees
from optax_suite._options import sparse as _sparse


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
            if _trees.is_trainable(g)]
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
        lambda x: x * self.loss_scale if _trees.is_trainable(x) else x, tree)

  def unscale(self, tree: Any) -> Any:
    """Divides every floating leaf by the scale, in float32 at least.

    A float16 or bfloat16 gradient is returned in float32, as Keras's
    division by its float32 scale variable does, so that small unscaled
    gradients do not underflow.
    """
    def leaf(g):
      if not _trees.is_trainable(g):
        return g
      dt = _numerics.compute_dtype(g.dtype)
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
  """Switches off every static ``loss_scale_factor`` inside ``inner_state``.

  A package optimizer divides by its own factor unless its state's copy is
  0, which only this wrapper writes (0 is no valid factor).
  """
  is_node = lambda x: isinstance(x, _optimizer.KerasOptimizerState)
  return jax.tree.map(
      lambda s: s._replace(loss_scale_factor=jnp.zeros([], jnp.float32))
      if is_node(s) else s, inner_state, is_leaf=is_node)


def _skip_update(shape: Any) -> Any:
  # -0.0 is the exact identity of IEEE addition (-0.0 + x == x bitwise, even
  # for x = -0.0), so `apply_updates` leaves skipped parameters bitwise as
  # they were; +0.0 would turn a -0.0 parameter into +0.0. `full_like` of
  # the abstract update keeps its sharding, which an explicitly sharded mesh
  # makes part of the type both `cond` branches must agree on.
  fill = lambda s: jnp.full_like(
      s, -0.0 if jnp.issubdtype(s.dtype, jnp.floating) else 0)
  return jax.tree.map(fill, shape)


def _in_dtype_of(updates: Any, grads: Any, params: Any) -> Any:
  """The inner updates (from float32 gradients) in the gradients' dtypes.

  With ``params``, a low-precision leaf gets the update of its gradient's
  dtype that leads to the parameter the float32 update leads to, bit for bit
  wherever one exists (see ``_numerics.update_to``): the parameters (and an
  EMA overwrite) come out as they would from the float32 update.
  """
  def leaf(u, g, p=None):
    if u is None or not hasattr(g, "dtype") or u.dtype == g.dtype:
      return u
    if p is None or not _trees.is_trainable(p):
      return u.astype(g.dtype)
    return _numerics.update_to(p, jnp.asarray(p + u).astype(p.dtype), g.dtype)

  # A row-sparse (BCOO) update of a lazy-rows optimizer is one leaf, kept
  # as it is (its rows are in the gradients' dtype already).
  def is_leaf(x):
    return x is None or _sparse.is_row_sparse(x)

  def maybe_sparse(u, g, p=None):
    return u if _sparse.is_row_sparse(u) else leaf(u, g, p)

  if params is None:
    return jax.tree.map(maybe_sparse, updates, grads, is_leaf=is_leaf)
  return jax.tree.map(maybe_sparse, updates, grads, params, is_leaf=is_leaf)


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
    a row doubles it, after the gradients were unscaled. The updates come
    back in the gradients' dtype (optax's contract): for bfloat16/float16
    gradients, the update of that dtype that takes each parameter where the
    float32 update takes it (bit for bit wherever one exists);
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
  if not (callable(getattr(inner, "init", None))
          and callable(getattr(inner, "update", None))):
    raise TypeError(
        "`inner` must be an optax GradientTransformation (e.g. "
        "`optax_suite.adam()`), not a name or a config. Received: "
        f"inner={inner!r}")
  _checks.check_number("initial_scale", initial_scale)
  if not (math.isfinite(float(initial_scale)) and float(initial_scale) > 0):
    raise ValueError("`initial_scale` must be a finite number > 0. "
                     f"Received: initial_scale={initial_scale!r}")
  _checks.check_int_at_least("dynamic_growth_steps", dynamic_growth_steps, 1)
  config = getattr(inner, "config", None)
  warned = False
  if (isinstance(config, Mapping)
      and config.get("loss_scale_factor") is not None):
    warnings.warn(
        "The inner optimizer's `loss_scale_factor="
        f"{config['loss_scale_factor']!r}` is ignored under "
        "`loss_scale_optimizer`, which scales the loss dynamically (Keras "
        "sets it to None).", UserWarning, stacklevel=2)
    warned = True
  period = int(dynamic_growth_steps)
  inner_step = _optimizer.step_of(inner)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    inner_state = inner.init(params)
    if not warned:
      for node in jax.tree.leaves(
          inner_state,
          is_leaf=lambda x: isinstance(x, _optimizer.KerasOptimizerState)):
        factor = getattr(node, "loss_scale_factor", None)
        if isinstance(node, _optimizer.KerasOptimizerState) and (
            _checks.is_concrete(factor) and float(factor) != 1.0):
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
      new_updates, inner_state = inner.update(
          loss_scale.unscale(grads), inner_state, params, **extra_args)
      return _in_dtype_of(new_updates, grads, params), inner_state

    operands = (updates, state.inner_state, params)
    out_shape = jax.eval_shape(apply, operands)[0]
    skip = lambda operands: (_skip_update(out_shape), operands[1])
    new_updates, inner_state = jax.lax.cond(finite, apply, skip, operands)
    loss_scale = loss_scale.adjust(finite)
    return new_updates, LossScaleState(
        loss_scale.loss_scale, loss_scale.counter, inner_state)

  def fused_step(grads, state, params):
    """``update`` then ``apply_updates``, the inner optimizer's fused step
    inside the ``cond``: a skipped step returns the parameters as they are."""
    loss_scale = DynamicLossScale(state.scale, state.step_counter, period)
    finite = all_finite(grads)

    def skip(operands):  # First (false): XLA aliases what it passes.
      _, inner_state, params = operands
      return params, inner_state

    def apply(operands):
      grads, inner_state, params = operands
      return inner_step(loss_scale.unscale(grads), inner_state, params)

    params, inner_state = jax.lax.cond(
        finite, apply, skip, (grads, state.inner_state, params))
    loss_scale = loss_scale.adjust(finite)
    return params, LossScaleState(
        loss_scale.loss_scale, loss_scale.counter, inner_state)

  return _optimizer.KerasOptimizer(
      init_fn, update_fn, config=dict(
          inner=inner, initial_scale=initial_scale,
          dynamic_growth_steps=dynamic_growth_steps, name=name),
      factory=loss_scale_optimizer, fused_step=fused_step)


_PARTS = (optax.MaskedState, optax.transforms.PartitionState)


_INJECTED = (optax.InjectHyperparamsState,
             optax.InjectStatefulHyperparamsState)


def _scale_holders(state: Any, partial: bool = False) -> list:
  """The loss scales in ``state``: ``(scale, dynamic, partial)`` triples.

  One per :class:`LossScaleState` (``dynamic``) and one per package
  optimizer state outside any (inside one, its static factor is switched
  off). ``partial`` says that the scale covers only some of the gradients:
  it sits inside an ``optax.masked`` state, or inside a part of
  ``optax.multi_transform``/``optax.partition`` while another part holds no
  scale.
  """
  found = []
  for node in _trees.find_nodes(
      state, (LossScaleState, _optimizer.KerasOptimizerState) + _INJECTED
      + _PARTS):
    if isinstance(node, LossScaleState):
      found.append((node.scale, True, partial))
    elif isinstance(node, _INJECTED):
      # An injected factor is the one the next `update` divides by.
      if "loss_scale_factor" in node.hyperparams:
        found.append((jnp.asarray(node.hyperparams["loss_scale_factor"],
                                  jnp.float32), False, partial))
      else:
        found += _scale_holders(node.inner_state, partial)
    elif isinstance(node, _optimizer.KerasOptimizerState):
      found.append((node.loss_scale_factor, False, partial))
    elif isinstance(node, optax.MaskedState):  # optax.masked on its own.
      found += _scale_holders(node.inner_state, True)
    else:
      parts = [_scale_holders(getattr(part, "inner_state", part), partial)
               for part in node.inner_states.values()]
      if any(not part for part in parts):
        parts = [[(s, d, True) for s, d, _ in part] for part in parts]
      found += [holder for part in parts for holder in part]
  return found


def scale_loss(loss: Any, state: Any) -> jax.Array:
  """Multiplies ``loss`` by the loss scale that ``state`` holds.

  The scale is the dynamic one of a :func:`loss_scale_optimizer` state, else
  the static ``loss_scale_factor``: its current value in
  ``state.hyperparams`` if injected, else the copy a package optimizer's
  state keeps (its constructor's value, refreshed by every ``update``), else
  1. The ``update`` that follows divides by the same number. (The one
  exception: a state restored from a checkpoint saved with another factor
  holds the old copy until its first ``update``, which divides by the new
  optimizer's factor; scale that first loss by the new factor.)
  The product follows ``jnp`` promotion with the float32 scale, as Keras's
  ``optimizer.scale_loss`` does.

  A loss carries one scale, and ``update`` divides each part's gradients by
  that part's own scale, so a ``ValueError`` is raised where the two cannot
  agree: two dynamic scales (they drift apart), a dynamic scale next to
  optimizers it does not wrap, or a dynamic scale inside ``optax.masked`` or
  in one part of ``optax.multi_transform``/``optax.partition`` (the other
  gradients would stay scaled). Static factors must all be equal, and 1
  where they cover only some of the gradients (inside ``optax.masked``, or
  next to a part with no scale); checked with a ``ValueError`` when the
  factors are concrete; under ``jax.jit``, where they are traced, a
  disagreement makes the scaled loss NaN instead.

  Args:
    loss: a scalar (or any array).
    state: the optimizer state (of any optimizer or chain of this package,
      or of a combination of them).

  Returns:
    ``loss * scale``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> params = {'w': jnp.zeros(2), 'b': jnp.zeros(1)}
    >>> ox.scale_loss(3.0, ox.adam(loss_scale_factor=8.0).init(params))
    Array(24., dtype=float32)
    >>> ox.scale_loss(3.0, ox.adam().init(params))
    Array(3., dtype=float32)
    >>> parts = optax.multi_transform(
    ...     {'a': ox.adam(loss_scale_factor=8.0), 'b': optax.sgd(0.1)},
    ...     {'w': 'a', 'b': 'b'})
    >>> try:
    ...   ox.scale_loss(3.0, parts.init(params))
    ... except ValueError as e:
    ...   print(str(e)[:60])
    `loss_scale_factor=8.0` covers only some of the gradients (i
  """
  loss = jnp.asarray(loss)
  holders = _scale_holders(state)
  dynamic = [(s, partial) for s, is_dynamic, partial in holders if is_dynamic]
  static = [(s, partial) for s, is_dynamic, partial in holders
            if not is_dynamic]
  if dynamic:
    if len(dynamic) > 1:
      raise ValueError(
          f"`state` holds {len(dynamic)} loss_scale_optimizer states; their "
          "dynamic scales drift apart, and a loss carries one scale. Wrap "
          "the whole optimizer (e.g. the multi_transform) in one "
          "loss_scale_optimizer.")
    if static:
      raise ValueError(
          "`state` holds a loss_scale_optimizer next to optimizers it does "
          "not wrap; their gradients would not be unscaled. Wrap the whole "
          "optimizer in one loss_scale_optimizer.")
    scale, partial = dynamic[0]
    if partial:
      raise ValueError(
          "The loss_scale_optimizer in `state` sits inside optax.masked or "
          "in one part of optax.multi_transform/optax.partition, so only "
          "its part of the gradients is unscaled. Wrap the whole optimizer "
          "in it.")
    return loss * scale
  if not static:
    return loss * jnp.ones([], jnp.float32)
  scale = static[0][0]
  checks = [(s, partial) for s, partial in static]
  concrete = all(_checks.is_concrete(s) for s, _ in checks)
  if concrete:
    values = sorted({float(s) for s, _ in checks})
    if len(values) > 1:
      raise ValueError(
          f"`state` holds different static loss scales {values}; a loss "
          "carries one scale. Give every part the same "
          "`loss_scale_factor`.")
    for s, partial in checks:
      if partial and float(s) != 1.0:
        raise ValueError(
            f"`loss_scale_factor={float(s)!r}` covers only some of the "
            "gradients (it sits inside optax.masked, or in one part of "
            "optax.multi_transform/optax.partition next to a part without "
            "it): the others would stay scaled. Scale the loss of every "
            "part alike.")
    return loss * scale
  ok = jnp.all(jnp.stack([
      (s == scale) & (~jnp.asarray(partial) | (s == 1.0))
      for s, partial in checks]))
  return jnp.where(ok, loss * scale, jnp.nan)
