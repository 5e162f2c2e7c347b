"""Keras-style decoupled weight decay, with exclusions by name or mask."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _patterns
from optax_suite import _trees

MaskOrFn = Optional[Union[Any, Callable[[optax.Params], Any]]]


class DecoupledWeightDecayState(NamedTuple):
  """State of :func:`add_decoupled_weight_decay`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> ox.add_decoupled_weight_decay(0.1).init({'w': jnp.ones(2)})
    DecoupledWeightDecayState(count=Array(0, dtype=int32))
  """
  count: chex.Array  # int32 [], calls so far (for a learning-rate schedule).


PATH_PREFIX = "path:"


def _leaf_name_and_path(path: Sequence[Any]) -> tuple[str, str]:
  """A leaf's own name (the last key of its path) and its "/"-joined path.

  The name plays Keras's ``variable.name`` (``"kernel"``), the path Keras's
  ``variable.path`` (``"encoder/dense/kernel"``).
  """
  return (_trees.key_name(path[-1]) if path else ""), _trees.path_name(path)


def check_exclusions(patterns: Any,
                     argument: str = "exclude_from_weight_decay") -> None:
  """A ValueError naming `argument` unless `patterns` is None or a list of
  strings, each a valid RE2 pattern (once its ``"path:"`` prefix is off)."""
  if patterns is not None and (
      isinstance(patterns, (str, bytes))
      or not isinstance(patterns, (list, tuple))
      or not all(isinstance(s, str) for s in patterns)):
    raise ValueError(
        f"`{argument}` must be a list of strings or None. "
        f"Received: {argument}={patterns!r}")
  for pattern in patterns or ():
    _patterns.compile_pattern(
        pattern.removeprefix(PATH_PREFIX), argument, patterns)


def _exclusion_test(patterns: Optional[Sequence[str]]):
  """`(name, path) -> excluded`, from Keras-style exclusion patterns.

  RE2 runs them (see ``_patterns``): a search takes time linear in the name.
  """
  check_exclusions(patterns)
  if not patterns:
    return None
  return _compiled_exclusions(tuple(patterns))


@functools.lru_cache(maxsize=64)
def _compiled_exclusions(patterns: tuple[str, ...]):
  """The test of `_exclusion_test`, compiled once per tuple of patterns."""
  by_name = [p for p in patterns if not p.startswith(PATH_PREFIX)]
  by_path = [p[len(PATH_PREFIX):] for p in patterns
             if p.startswith(PATH_PREFIX)]
  # One alternation per kind, as Keras joins its `var_names` with "|".
  def joined(ps):
    return _patterns.compile_pattern(
        "|".join(sorted(set(ps))), "exclude_from_weight_decay",
        list(patterns))
  name_re = joined(by_name) if by_name else None
  path_re = joined(by_path) if by_path else None
  return lambda name, path: bool(
      (name_re is not None and name_re.search(name))
      or (path_re is not None and path_re.search(path)))


def _is_flag(x: Any) -> bool:
  if x is None or isinstance(x, (bool, np.bool_)):
    return True
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.bool_)


def check_mask(mask: Any) -> None:
  """A weight-decay mask: None, a callable, or a tree of booleans (a bool,
  a NumPy bool or a boolean array, or None, at every leaf); a
  ``ValueError`` names the first leaf that is not."""
  if mask is None or callable(mask):
    return
  for path, x in jax.tree_util.tree_flatten_with_path(
      mask, is_leaf=_trees.is_none)[0]:
    if not _is_flag(x):
      raise ValueError(
          "`weight_decay_mask` must be a tree of booleans (True: decay) or "
          "a callable params -> tree. Received: weight_decay_mask"
          f"{jax.tree_util.keystr(path)}={x!r}")


def decay_mask(
    params: Any,
    weight_decay_mask: MaskOrFn = None,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
) -> Any:
  """The tree of booleans saying which leaves decay (True means decay).

  A leaf decays when it is a floating-point array, ``weight_decay_mask`` (a
  tree of booleans, or a callable ``params -> tree``) does not say False for
  it, and no ``exclude_from_weight_decay`` pattern matches it. As Keras runs
  ``re.search(pattern, variable.name)``, each pattern is searched in the
  leaf's own name: the last key of its path (dict key, attribute or field
  name, sequence index as a string), so ``"^bias$"`` excludes every leaf
  named ``bias`` wherever it sits. A pattern starting with ``"path:"`` is
  searched instead (without that prefix) in the leaf's whole path, its keys
  joined with ``"/"`` as Keras joins ``variable.path``, e.g.
  ``"encoder/dense/kernel"``: ``"path:^encoder/"`` excludes a whole
  sub-module. The patterns of each kind are joined into one regular
  expression with ``|``, as Keras's ``exclude_from_weight_decay(
  var_names=...)`` does.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> params = {'encoder': {'kernel': jnp.ones(2), 'bias': jnp.ones(2)},
    ...           'head': {'kernel': jnp.ones(2), 'bias': jnp.ones(2)}}
    >>> ox.decay_mask(params, exclude_from_weight_decay=['^bias$'])
    {'encoder': {'bias': False, 'kernel': True},
     'head': {'bias': False, 'kernel': True}}
    >>> ox.decay_mask(params, exclude_from_weight_decay=['path:^encoder/'])
    {'encoder': {'bias': False, 'kernel': False},
     'head': {'bias': True, 'kernel': True}}
  """
  mask = weight_decay_mask(params) if callable(weight_decay_mask) else (
      weight_decay_mask)
  if mask is None:
    mask = jax.tree.map(lambda _: True, params)
  check_mask(mask)
  ms: Any = jax.tree.structure(mask, is_leaf=_trees.is_none)
  ps: Any = jax.tree.structure(params, is_leaf=_trees.is_none)
  if ms != ps:
    raise ValueError(
        "`weight_decay_mask` must have the structure of the parameters "
        f"(a boolean per leaf).\n  mask:   {ms}\n  params: {ps}")
  excluded = _exclusion_test(exclude_from_weight_decay)

  def leaf(path, p, flag):
    if not _trees.is_trainable(p):
      return False
    if excluded is not None and excluded(*_leaf_name_and_path(path)):
      return False
    return True if flag is None else flag

  return jax.tree_util.tree_map_with_path(
      leaf, params, mask, is_leaf=lambda x: x is None)


def add_decoupled_weight_decay(
    weight_decay: float,
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    *,
    weight_decay_mask: MaskOrFn = None,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
) -> optax.GradientTransformation:
  r"""Adds Keras's decoupled weight decay ``w * weight_decay * lr``.

  Keras shrinks each variable before the optimizer's own step,
  :math:`w \leftarrow w - w \lambda \eta_t` with :math:`\eta_t` the learning
  rate of the current call. Expressed as an update that points up the
  gradient (like optax's ``add_decayed_weights``) this adds
  :math:`w \lambda \eta_t` to the incoming updates; negate the sum at the end
  of the chain, as the package's optimizers do.

  Args:
    weight_decay: the decay rate :math:`\lambda`, >= 0.
    learning_rate: number or schedule ``step -> lr`` (step = calls so far).
    weight_decay_mask: tree of booleans or callable ``params -> tree``; True
      means decay.
    exclude_from_weight_decay: regular expressions searched in each leaf's
      own name (the last key of its path), as Keras searches
      ``variable.name``; ``"path:"``-prefixed ones in its ``/``-joined path
      (see :func:`decay_mask`). A matching leaf does not decay.

  Returns:
    An ``optax.GradientTransformation`` that needs ``params`` in ``update``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.add_decoupled_weight_decay(0.5, 0.1),
    ...                  optax.scale(-1.0))
    >>> params = {'kernel': jnp.array([2.0]), 'bias': jnp.array([2.0])}
    >>> zero = {'kernel': jnp.zeros(1), 'bias': jnp.zeros(1)}
    >>> tx.update(zero, tx.init(params), params)[0]['kernel']
    Array([-0.1], dtype=float32)
  """
  _checks.check_non_negative("weight_decay", weight_decay)
  _checks.check_learning_rate(learning_rate)

  def leaf(p, u, flag, lr):
    if flag is False or u is None:
      return u
    dt = _numerics.compute_dtype(p.dtype)
    decay = (p.astype(dt) * weight_decay) * lr.astype(dt)
    if flag is not True:
      decay = jnp.where(flag, decay, 0)
    return (u.astype(dt) + decay).astype(u.dtype)

  return _per_leaf_with_decay_mask(
      leaf, learning_rate, weight_decay_mask, exclude_from_weight_decay)


def _per_leaf_with_decay_mask(leaf, learning_rate, weight_decay_mask,
                              exclude_from_weight_decay):
  """The transformation `u <- leaf(param, u, decays, lr)`, leaf by leaf.

  `decays` is the leaf's entry of :func:`decay_mask` and `lr` the learning
  rate at this call; the state counts calls for a schedule.
  """

  def init_fn(params):
    del params
    return DecoupledWeightDecayState(jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "weight decay")
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    mask = decay_mask(params, weight_decay_mask, exclude_from_weight_decay)
    updates = _trees.tree_map(
        lambda p, u, flag: leaf(p, u, flag, lr), params, updates, mask)
    return updates, DecoupledWeightDecayState(optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def _negate(d):
  # Integer and boolean leaves carry a zero update of their own dtype.
  return -d if _trees.is_trainable(d) else d


def descend_with_weight_decay(
    weight_decay: Optional[float],
    learning_rate: _numerics.ScalarOrSchedule,
    *,
    weight_decay_mask: MaskOrFn = None,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
) -> optax.GradientTransformation:
  r"""Turns a step ``d`` (up the gradient) into Keras's descent update.

  Keras computes :math:`w_1 = w - w \lambda \eta`, then :math:`w_2 = w_1 - d`.
  This returns :math:`u = w_2 - w` computed that way, so that ``w + u`` is
  Keras's :math:`w_2` to the last bit whenever :math:`w_2 - w` is exact (it
  is whenever the step is small next to the weight), rather than the
  differently rounded :math:`w - (d + w \lambda \eta)`. Without decay (or for
  an excluded leaf) the update is just :math:`-d`. The optimizers end their
  chain with it.

  Args:
    weight_decay: :math:`\lambda`, or None for no decay.
    learning_rate: number or schedule ``step -> lr`` (step = calls so far).
    weight_decay_mask: tree of booleans or callable; True means decay.
    exclude_from_weight_decay: regular expressions searched in each leaf's
      own name (``"path:"``-prefixed: in its path); see :func:`decay_mask`.

  Returns:
    An ``optax.GradientTransformation``; it needs ``params`` with decay.
  """
  if weight_decay is None:
    return optax.stateless(lambda u, params: _trees.tree_map(_negate, u))
  _checks.check_non_negative("weight_decay", weight_decay)

  def leaf(p, d, flag, lr):
    if d is None:
      return None
    if flag is False:
      return _negate(d)
    dt = _numerics.compute_dtype(p.dtype)
    w = p.astype(dt)
    w1 = decayed_weight(w, flag, weight_decay, lr.astype(dt))
    return ((w1 - d.astype(dt)) - w).astype(d.dtype)

  return _per_leaf_with_decay_mask(
      leaf, learning_rate, weight_decay_mask, exclude_from_weight_decay)


def decayed_weight(w: Any, flag: Any, weight_decay: float, lr: Any) -> Any:
  """Keras's decayed weight :math:`w - (w \\lambda) \\eta` where ``flag``.

  The one expression the descent and every rule that reads the decayed
  weight share, so that they round alike. ``w`` and ``lr`` are in the compute
  dtype; ``flag`` is True, False or a boolean array (a traced mask), and
  where it is off ``w`` comes back as it is.
  """
  if flag is False:
    return w
  w1 = w - (w * weight_decay) * lr
  return w1 if flag is True else jnp.where(flag, w1, w)


def decay_flags(params: Any, weight_decay: Optional[float],
                weight_decay_mask: MaskOrFn = None,
                exclude_from_weight_decay: Optional[Sequence[str]] = None
                ) -> Any:
  """:func:`decay_mask`, or False at every leaf without decay."""
  if weight_decay is None:
    return _trees.tree_map(lambda _: False, params)
  return decay_mask(params, weight_decay_mask, exclude_from_weight_decay)


def with_decayed_params(
    inner: optax.GradientTransformation,
    weight_decay: Optional[float],
    learning_rate: _numerics.ScalarOrSchedule,
    *,
    weight_decay_mask: MaskOrFn = None,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
) -> optax.GradientTransformation:
  r"""Hands ``inner`` the parameters as Keras's rule sees them: decayed.

  Keras decays a variable (:math:`w_1 = w - w \lambda \eta`) before its
  optimizer's ``update_step`` reads it, so a rule that reads the parameters
  (Ftrl's linear term, Adafactor's RMS of the weights) reads :math:`w_1`.
  This passes :math:`w_1` (computed as :func:`descend_with_weight_decay`
  does) to ``inner.update`` as ``params``; ``inner``'s state is its own,
  unwrapped. Without decay it returns ``inner`` itself. The rule's step is
  then taken from :math:`w_1`, which :func:`descend_with_weight_decay` also
  starts from.

  Args:
    inner: a rule that reads ``params``.
    weight_decay: :math:`\lambda`, or None for no decay.
    learning_rate: the learning rate of this call (a number or array).
    weight_decay_mask: tree of booleans or callable; True means decay.
    exclude_from_weight_decay: name patterns that do not decay.

  Returns:
    An ``optax.GradientTransformation`` with ``inner``'s state.
  """
  if weight_decay is None:
    return inner

  def decayed(p, flag):
    if flag is False or p is None:
      return p
    dt = _numerics.compute_dtype(p.dtype)
    # The barrier keeps XLA from merging this decayed weight with the one
    # `descend_with_weight_decay` forms: merged, it would have two consumers
    # and be written to a parameter-sized temporary on every step.
    w = jax.lax.optimization_barrier(p).astype(dt)
    # In float32 (or wider) for low-precision leaves.
    return decayed_weight(
        w, flag, weight_decay, jnp.asarray(learning_rate).astype(dt))

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "weight decay")
    mask = decay_mask(params, weight_decay_mask, exclude_from_weight_decay)
    return inner.update(updates, state,
                        _trees.tree_map(decayed, params, mask))

  return optax.GradientTransformation(inner.init, update_fn)
